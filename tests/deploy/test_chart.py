"""The Helm chart, checked as a platform engineer adopting it would: it renders with Helm v4 for
every value file in ``deploy/k8s/ci``, lints clean, every object passes ``kubernetes-validate
--strict`` on the lowest and highest Kubernetes versions we support, and helm-unittest-like
assertions hold on what matters (Pod Security "restricted", secrets, probes, resources, drain,
PDBs, NetworkPolicies, autoscaling, GPU nodes, the strict values schema)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from pydantic import BaseModel

from tests.deploy.conftest import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    RELEASE,
    REPO,
    find,
    one,
    pod_specs,
    render,
    render_file,
    values_of,
)
from turnout.common.ops import build_ops_app
from turnout.gateway.routes.ops import router as gateway_ops_router
from turnout.gateway.settings import GatewaySettings
from turnout.gpu_agent.settings import GpuAgentSettings
from turnout.profiler.settings import ProfilerSettings
from turnout.scorer.settings import ScorerSettings
from turnout.sync.settings import SyncSettings

KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")
"""The lowest and highest versions we support (Pod Security "restricted" is GA from 1.25)."""
CRD_KINDS = {"PodMonitor", "PrometheusRule", "ScaledObject", "HTTPRoute"}
"""Custom resources: no schema bundled with kubernetes-validate; asserted below instead."""
FILES = [p.name for p in CI_VALUES]
FULL = "full-values.yaml"
F = f"{RELEASE}-turnout"
SECRET_ENV = {"TURNOUT_DATABASE_URL", "TURNOUT_REDIS_URL", "TURNOUT_ADMIN_KEY", "TURNOUT_GATEWAY__API_KEYS"}
"""Settings that hold secrets: only ever from a secretKeyRef (TURNOUT_BACKENDS may be either:
plain in the ConfigMap without keys, or from the Secret with them)."""
SERVICES = {
    "gateway": GatewaySettings,
    "scorer": ScorerSettings,
    "profiler": ProfilerSettings,
    "sync": SyncSettings,
    "gpu-agent": GpuAgentSettings,
}


def test_value_files_cover_the_matrix() -> None:
    assert FILES == [
        "defaults-values.yaml",
        "external-secrets-values.yaml",
        "full-values.yaml",
        "gpu-cluster-values.yaml",
        "minimal-values.yaml",
    ]


@pytest.mark.parametrize("name", FILES)
def test_lint_is_clean(name: str) -> None:
    report = helm.lint(CHART, values_of(name), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_every_object_passes_strict_validation(name: str, version: str) -> None:
    failures = []
    for obj in render_file(name):
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert failures == []


@pytest.mark.parametrize("name", FILES)
def test_every_pod_meets_pod_security_restricted(name: str) -> None:
    """The checks of the "restricted" profile, plus a read-only root filesystem and the image's
    numeric user."""
    problems = []
    for where, spec in pod_specs(render_file(name)):
        pod_sc = spec.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{where}: {key}")
        for vol in spec.get("volumes", []):
            kinds = set(vol) - {"name"}
            if not kinds <= {"configMap", "emptyDir", "secret", "projected", "downwardAPI", "csi", "ephemeral"}:
                problems.append(f"{where}: volume {vol['name']} is {kinds}")
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            runs_as = sc.get("runAsUser", pod_sc.get("runAsUser"))
            checks = {
                "runAsNonRoot": sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True,
                "numeric non-root user 10001": runs_as == 10001,
                "seccomp RuntimeDefault": sc.get("seccompProfile", pod_sc.get("seccompProfile"))
                == {"type": "RuntimeDefault"},
                "no privilege escalation": sc.get("allowPrivilegeEscalation") is False,
                "drops ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
                "adds nothing": not sc.get("capabilities", {}).get("add"),
                "not privileged": not sc.get("privileged"),
                "read-only root": sc.get("readOnlyRootFilesystem") is True,
                "no host ports": all("hostPort" not in p for p in c.get("ports", [])),
                "/tmp writable": {"name": "tmp", "mountPath": "/tmp"} in c.get("volumeMounts", []),
            }
            problems += [f"{where}/{c['name']}: {check}" for check, ok in checks.items() if not ok]
    assert problems == []


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("name", FILES)
def test_no_secret_is_a_plain_value(name: str) -> None:
    objects = render_file(name)
    problems = []
    for where, spec in pod_specs(objects):
        for c in spec["containers"]:
            for env_name, e in _env(c).items():
                if env_name in SECRET_ENV and "secretKeyRef" not in e.get("valueFrom", {}):
                    problems.append(f"{where}: {env_name} is not from a Secret")
    for cm in find(objects, "ConfigMap"):
        problems += [f"ConfigMap: {k}" for k in cm["data"] if k in SECRET_ENV]
    assert problems == []


def test_secret_values_appear_only_in_secrets() -> None:
    """Every secret in full-values.yaml contains "s3cr3t": none may show outside a Secret."""
    leaks = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in render_file(FULL)
        if o["kind"] != "Secret" and "s3cr3t" in str(o)
    ]
    assert leaks == []
    secret = one(render_file(FULL), "Secret", F)
    assert sorted(secret["stringData"]) == ["ADMIN_KEY", "API_KEYS", "BACKENDS", "DATABASE_URL", "REDIS_URL"]


def test_existing_secrets_are_referenced_and_nothing_is_made() -> None:
    objects = render_file("external-secrets-values.yaml")
    assert find(objects, "Secret") == []
    gateway = one(objects, "Deployment", f"{F}-gateway")["spec"]["template"]["spec"]["containers"][0]
    refs = {k: e["valueFrom"]["secretKeyRef"] for k, e in _env(gateway).items() if "valueFrom" in e}
    assert refs == {
        "TURNOUT_DATABASE_URL": {"name": "turnout-pg-app", "key": "uri"},
        "TURNOUT_REDIS_URL": {"name": "turnout-secrets", "key": "REDIS_URL"},
        "TURNOUT_BACKENDS": {"name": "turnout-secrets", "key": "BACKENDS", "optional": True},
        "TURNOUT_ADMIN_KEY": {"name": "turnout-secrets", "key": "ADMIN_KEY", "optional": True},
        "TURNOUT_GATEWAY__API_KEYS": {"name": "turnout-secrets", "key": "API_KEYS", "optional": True},
        "TURNOUT_SYNC__ARTIFICIAL_ANALYSIS_API_KEY": {"name": "turnout-sources", "key": "aa-key"},
    }
    job = one(objects, "Job", f"{F}-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert _env(job)["TURNOUT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "turnout-pg-app", "key": "uri"}
    assert gateway["image"] == (
        "registry.example.com/platform/turnout@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
    )


def test_the_chart_secret_is_a_release_object_and_the_hook_copy_is_deleted_after_the_hooks() -> None:
    """`helm uninstall` removes release objects, never hooks: the Secret the services read is a
    release object; the migrate hook reads a copy deleted once the hooks succeeded."""
    objects = render_file("defaults-values.yaml")
    assert "helm.sh/hook" not in one(objects, "Secret", F)["metadata"].get("annotations", {})
    copy = one(objects, "Secret", f"{F}-migrate")
    assert copy["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "-10",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    assert sorted(copy["stringData"]) == ["DATABASE_URL"]
    job = one(objects, "Job", f"{F}-migrate")["spec"]["template"]["spec"]
    assert "serviceAccountName" not in job  # the chart's ServiceAccount does not exist yet at pre-install


def test_an_admin_key_is_generated_when_none_is_given() -> None:
    """prod refuses to start the gateway without an admin key; the chart-made Secret makes one."""
    key = one(render_file("defaults-values.yaml"), "Secret", F)["stringData"]["ADMIN_KEY"]
    assert re.fullmatch(r"[A-Za-z0-9]{40}", key)
    assert one(render_file("minimal-values.yaml"), "Secret", F)["stringData"]["ADMIN_KEY"] == "dev-admin-key"


def _probe_paths() -> dict[str, set[str]]:
    ops_app = build_ops_app("x", {})
    ops = {r.resource.canonical for r in ops_app.router.routes() if r.resource is not None}
    gateway = {getattr(r, "path", "") for r in gateway_ops_router.routes}
    return {"ops": ops, "http": gateway}


@pytest.mark.parametrize("name", FILES)
def test_probes_point_at_real_endpoints_and_every_workload_has_resources(name: str) -> None:
    served = _probe_paths()
    problems = []
    for where, spec in pod_specs(render_file(name)):
        for c in spec["containers"]:
            res = c.get("resources", {})
            if not (res.get("requests", {}).keys() >= {"cpu", "memory"} and "memory" in res.get("limits", {})):
                problems.append(f"{where}: resources {res}")
            if where.startswith("Job/"):
                continue
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            probes = {k: c.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe")}
            expected = {"livenessProbe": "/health", "readinessProbe": "/ready", "startupProbe": "/health"}
            for kind, probe in probes.items():
                if probe is None:
                    problems.append(f"{where}: no {kind}")
                    continue
                port, path = probe["httpGet"]["port"], probe["httpGet"]["path"]
                if port not in ports or path != expected[kind] or path not in served[port]:
                    problems.append(f"{where}: {kind} {path} on {port}")
            # the port the probe hits is the port the service is told to listen on
            env = _env(c)
            listen = next(
                (e["value"] for k, e in env.items() if k.endswith(("__OPS_PORT", "GATEWAY__PORT"))),
                None,
            )
            probed = ports[probes["readinessProbe"]["httpGet"]["port"]]
            if listen != str(probed):
                problems.append(f"{where}: listens on {listen}, probed on {probed}")
            host = next((e["value"] for k, e in env.items() if k.endswith(("__OPS_HOST", "GATEWAY__HOST"))), None)
            if host != "0.0.0.0":
                problems.append(f"{where}: listens on {host}, not reachable by the kubelet")
    assert problems == []


@pytest.mark.parametrize("name", FILES)
def test_every_pod_template_carries_config_checksums(name: str) -> None:
    for o in render_file(name):
        if o["kind"] in ("Deployment", "DaemonSet"):
            annotations = o["spec"]["template"]["metadata"]["annotations"]
            assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"]), o["metadata"]["name"]
            assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"]), o["metadata"]["name"]


def test_a_config_change_changes_the_checksum() -> None:
    def checksum(values: dict[str, Any]) -> str:
        ds = one(render(values), "DaemonSet", f"{F}-gpu-agent")
        return str(ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({"logLevel": "INFO"}) == checksum({"logLevel": "INFO"})
    assert checksum({"logLevel": "INFO"}) != checksum({"logLevel": "DEBUG"})


@pytest.mark.parametrize(
    ("name", "sleep", "delay", "drain"),
    [("defaults-values.yaml", 0, 5, 60), (FULL, 5, 10, 120), ("gpu-cluster-values.yaml", 0, 5, 300)],
)
def test_gateway_drain_pairs_with_the_termination_grace(name: str, sleep: int, delay: int, drain: int) -> None:
    spec = one(render_file(name), "Deployment", f"{F}-gateway")["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = {k: e.get("value") for k, e in _env(c).items()}
    assert (env["TURNOUT_GATEWAY__PRESTOP_DELAY_S"], env["TURNOUT_GATEWAY__DRAIN_GRACE_S"]) == (str(delay), str(drain))
    assert spec["terminationGracePeriodSeconds"] == sleep + delay + drain + 10
    if sleep:
        assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", str(sleep)]}}}
    else:
        assert "lifecycle" not in c


@pytest.mark.parametrize(
    ("name", "pdbs"),
    [
        ("defaults-values.yaml", ["gateway", "scorer"]),  # 2 replicas each; profiler/sync run 1
        ("minimal-values.yaml", []),  # one replica: a PDB would block every node drain
        (FULL, ["gateway", "scorer", "sync"]),  # sync: KEDA keeps 2
    ],
)
def test_pdbs_only_where_more_than_one_replica_runs(name: str, pdbs: list[str]) -> None:
    found = find(render_file(name), "PodDisruptionBudget")
    assert sorted(p["metadata"]["name"].removeprefix(f"{F}-") for p in found) == pdbs
    assert all(p["spec"] == {"maxUnavailable": 1, "selector": p["spec"]["selector"]} for p in found)


def test_scheduling_settings_reach_every_workload() -> None:
    objects = render_file(FULL)
    gateway = one(objects, "Deployment", f"{F}-gateway")["spec"]["template"]["spec"]
    scorer = one(objects, "Deployment", f"{F}-scorer")["spec"]["template"]["spec"]
    assert gateway["priorityClassName"] == "turnout-high"
    assert gateway["serviceAccountName"] == "turnout-runtime"
    assert gateway["automountServiceAccountToken"] is False
    assert gateway["imagePullSecrets"] == [{"name": "regcred"}]
    assert gateway["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    assert gateway["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    assert gateway["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "turnout",
                    "app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": "gateway",
                }
            },
        }
    ]
    assert scorer["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert scorer["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "scorer"
    )
    agent = one(objects, "DaemonSet", f"{F}-gpu-agent")["spec"]["template"]["spec"]
    assert agent["priorityClassName"] == "system-node-critical"


def test_one_image_for_every_component_the_command_picks_the_service() -> None:
    objects = render_file("defaults-values.yaml")
    commands = {}
    for _, spec in pod_specs(objects):
        for c in spec["containers"]:
            assert c["image"] == "ghcr.io/example/turnout:0.1.0"
            commands[c["name"]] = c["command"]
    assert commands == {
        "gateway": ["python", "-m", "turnout.gateway"],
        "scorer": ["python", "-m", "turnout.scorer"],
        "profiler": ["python", "-m", "turnout.profiler"],
        "sync": ["python", "-m", "turnout.sync"],
        "gpu-agent": ["python", "-m", "turnout.gpu_agent"],
        "migrate": ["python", "-m", "turnout.common.db.migrate", "upgrade"],
    }


def _container_env(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, str]:
    """A container's environment as the process sees it: ConfigMap, then env (secrets as stand-ins)."""
    spec = one(objects, kind, name)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    stand_ins = {
        "TURNOUT_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/turnout",
        "TURNOUT_REDIS_URL": "redis://redis:6379/0",
        "TURNOUT_ADMIN_KEY": "k" * 40,
        "TURNOUT_GATEWAY__API_KEYS": "sha256:" + "a" * 64,
        "TURNOUT_BACKENDS": "gpu-node-1:ollama=http://gpu-node-1.lan:11434",
    }
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"].replace("$(NODE_IP)", "10.0.10.7")
        elif "secretKeyRef" in e.get("valueFrom", {}):
            if e["name"] in stand_ins:
                env[e["name"]] = stand_ins[e["name"]]
        else:
            env[e["name"]] = "gpu-node-1"  # fieldRef: node name / host IP
    return env


def _unknown_options(settings_cls: type[BaseModel], env: dict[str, str]) -> list[str]:
    """TURNOUT_* names no field of the settings class takes (pydantic-settings ignores unknown
    flat names silently, so a misspelt one would never fail at start)."""
    unknown = []
    fields = settings_cls.model_fields
    for name in env:
        if not name.startswith("TURNOUT_"):
            continue
        top, _, nested = name.removeprefix("TURNOUT_").lower().partition("__")
        if top not in fields:
            unknown.append(name)
        elif nested:
            inner = fields[top].annotation
            assert isinstance(inner, type) and issubclass(inner, BaseModel)
            if nested.split("__")[0] not in inner.model_fields:
                unknown.append(name)
    return unknown


@pytest.mark.parametrize("component", sorted(SERVICES))
@pytest.mark.parametrize("name", ["gpu-cluster-values.yaml", FULL])
def test_every_variable_the_chart_sets_is_a_setting_the_service_accepts(
    name: str, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render_file(name)
    kind = "DaemonSet" if component == "gpu-agent" else "Deployment"
    env = _container_env(objects, kind, f"{F}-{component}")
    settings_cls = SERVICES[component]
    assert _unknown_options(settings_cls, env) == []
    for k in [k for k in os.environ if k.startswith("TURNOUT_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings_cls.load()  # type: ignore[attr-defined]  # values valid too: raises ConfigError otherwise


def test_gpu_agent_defaults_fit_nvidia_nodes() -> None:
    objects = render_file("gpu-cluster-values.yaml")
    spec = one(objects, "DaemonSet", f"{F}-gpu-agent")["spec"]["template"]["spec"]
    env = {k: e.get("value") for k, e in _env(spec["containers"][0]).items()}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["NVIDIA_DRIVER_CAPABILITIES"]) == ("all", "utility")
    assert env["TURNOUT_GPU_AGENT__EXPECT_GPUS"] == "1"
    assert env["TURNOUT_GPU_AGENT__READERS"] == '["auto"]'
    assert "nvidia.com/gpu" not in str(spec["containers"][0]["resources"])  # watches every GPU, claims none


@pytest.mark.parametrize(
    ("vendor", "selector", "reader"),
    [
        ("amd", {"feature.node.kubernetes.io/amd-gpu": "true"}, '["amd"]'),
        ("intel", {"intel.feature.node.kubernetes.io/gpu": "true"}, '["intel"]'),
    ],
)
def test_gpu_agent_vendor_presets(vendor: str, selector: dict[str, str], reader: str) -> None:
    spec = one(render({"gpuAgent": {"vendor": vendor}}), "DaemonSet", f"{F}-gpu-agent")["spec"]["template"]["spec"]
    env = {k: e.get("value") for k, e in _env(spec["containers"][0]).items()}
    assert spec["nodeSelector"] == selector
    assert "runtimeClassName" not in spec
    assert env["TURNOUT_GPU_AGENT__READERS"] == reader
    assert "NVIDIA_VISIBLE_DEVICES" not in env


def test_gpu_agent_own_node_selector_and_no_runtime_class() -> None:
    values = {"gpuAgent": {"nodeSelector": {"gpu": "yes"}, "runtimeClassName": "-", "expectGpus": 0}}
    spec = one(render(values), "DaemonSet", f"{F}-gpu-agent")["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"gpu": "yes"}
    assert "runtimeClassName" not in spec
    assert _env(spec["containers"][0])["TURNOUT_GPU_AGENT__EXPECT_GPUS"]["value"] == "0"


def _egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


def test_network_policies_default_deny_and_only_the_needed_flows() -> None:
    objects = render_file(FULL)
    deny = one(objects, "NetworkPolicy", f"{F}-default-deny")
    assert deny["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "turnout", "app.kubernetes.io/instance": RELEASE}},
        "policyTypes": ["Ingress", "Egress"],
    }
    ports = {
        p["metadata"]["name"].removeprefix(f"{F}-"): _egress_ports(p)
        for p in find(objects, "NetworkPolicy")
        if p is not deny
    }
    assert ports == {
        "gateway": {53, 6379, 5432, 11434, 8000},
        "scorer": {53, 6379, 5432},
        "profiler": {53, 6379, 5432, 11434, 8000},  # its sandbox: the backends, nothing else
        "sync": {53, 6379, 5432, 443},  # public benchmark sources
        "gpu-agent": {53, 6379, 11434, 8000},
        "migrate": {53, 5432},
    }
    profiler = one(objects, "NetworkPolicy", f"{F}-profiler")["spec"]
    assert profiler["egress"][3] == {
        "ports": [{"port": 11434, "protocol": "TCP"}, {"port": 8000, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}],
    }
    assert all("to" in rule for rule in profiler["egress"])  # no rule open to any destination
    gateway = one(objects, "NetworkPolicy", f"{F}-gateway")["spec"]["ingress"]
    assert gateway == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        },
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]},
    ]
    assert one(objects, "NetworkPolicy", f"{F}-migrate")["spec"]["ingress"] == []
    # without a separate metrics port, the scrapers still reach the gateway's /metrics
    gpu_cluster = one(render_file("gpu-cluster-values.yaml"), "NetworkPolicy", f"{F}-gateway")["spec"]["ingress"]
    assert gpu_cluster[1] == {"ports": [{"port": "http", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]}


def test_ingress_and_httproute_reach_the_gateway_service_with_streaming_timeouts() -> None:
    objects = render_file(FULL)
    ingress = one(objects, "Ingress", f"{F}-gateway")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"] == {"service": {"name": f"{F}-gateway", "port": {"name": "http"}}}
    route = one(objects, "HTTPRoute", f"{F}-gateway")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway-system"}]
    assert route["spec"]["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": f"{F}-gateway", "port": 80}],
            "timeouts": {"request": "0s", "backendRequest": "0s"},
        }
    ]


def test_monitors_carry_the_labels_prometheus_selects_and_scrape_the_metrics_ports() -> None:
    objects = render_file(FULL)
    monitors = {m["metadata"]["name"].removeprefix(f"{F}-"): m for m in find(objects, "PodMonitor")}
    assert sorted(monitors) == ["gateway", "gpu-agent", "profiler", "scorer", "sync"]
    for component, m in monitors.items():
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert m["spec"]["podMetricsEndpoints"] == [
            {
                "port": "metrics" if component == "gateway" else "ops",
                "path": "/metrics",
                "interval": "30s",
                "scrapeTimeout": "10s",
            }
        ]
    rule = one(objects, "PrometheusRule", F)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "TurnoutNoLiveScorer" in alerts and len(alerts) == 13


def test_autoscaling_hpa_for_gateway_and_scorer_keda_for_the_workers() -> None:
    objects = render_file(FULL)
    hpas = {h["metadata"]["name"]: h["spec"] for h in find(objects, "HorizontalPodAutoscaler")}
    assert sorted(hpas) == [f"{F}-gateway", f"{F}-scorer"]
    assert (hpas[f"{F}-gateway"]["minReplicas"], hpas[f"{F}-gateway"]["maxReplicas"]) == (3, 20)
    scaled = {s["metadata"]["name"]: s["spec"] for s in find(objects, "ScaledObject")}
    assert sorted(scaled) == [f"{F}-profiler", f"{F}-sync"]
    assert scaled[f"{F}-profiler"]["triggers"] == [
        {
            "type": "prometheus",
            "metadata": {
                "serverAddress": "http://kube-prometheus-stack-prometheus.monitoring.svc:9090",
                "query": f'max(turnout_profiler_queue_depth{{namespace="{NAMESPACE}"}})',
                "threshold": "5",
            },
        }
    ]
    # a scaled Deployment leaves `replicas` to its autoscaler (else every upgrade resets it)
    for component in ("gateway", "scorer", "profiler", "sync"):
        assert "replicas" not in one(objects, "Deployment", f"{F}-{component}")["spec"], component
    assert one(render_file("minimal-values.yaml"), "Deployment", f"{F}-profiler")["spec"]["replicas"] == 1
    assert find(render_file("defaults-values.yaml"), "ScaledObject") == []


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"gatway": {"replicas": 2}}, "gatway"),
        ({"gateway": {"nodeselector": {"a": "b"}}}, "nodeselector"),
        ({"gateway": {"autoscaling": {"maxReplicas": "ten"}}}, "maxReplicas"),
        ({"gpuAgent": {"vendor": "nvidai"}}, "vendor"),
        ({"secrets": {"refs": {"adminkey": {"name": "", "key": "K"}}}}, "adminkey"),
        ({"networkPolicy": {"redis": {"to": [], "ports": [6379], "from": []}}}, "from"),
        ({"monitoring": {"podMonitor": {"intervall": "15s"}}}, "intervall"),
        ({"gateway": {"resources": {"requests": {"cpu": "1", "memroy": "1Gi"}, "limits": {}}}}, "memroy"),
        ({"securityContext": {"readOnlyRootFilesytem": True}}, "readOnlyRootFilesytem"),
        ({"podSecurityContext": {"runAsUser": "10001"}}, "runAsUser"),
        ({"scheduling": {"tolerations": [{"key": "a", "efect": "NoSchedule"}]}}, "efect"),
        ({"gateway": {"affinity": {"podAntiAfinity": {}}}}, "podAntiAfinity"),
        ({"networkPolicy": {"backends": {"to": [{"ipblock": {"cidr": "10.0.0.0/8"}}], "ports": [80]}}}, "ipblock"),
        ({"httpRoute": {"parentRefs": [{"nam": "public"}]}}, "nam"),
    ],
)
def test_the_schema_rejects_typos(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)


def test_the_kubernetes_definitions_in_the_schema_are_current() -> None:
    """values.schema.json carries the strict Kubernetes definitions the values pass through
    (scripts/chart_schema_k8s.py copies them from kubernetes-validate)."""
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chart_schema_k8s.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_every_level_of_the_schema_is_closed() -> None:
    schema = helm.Chart.load(CHART).schema
    assert schema is not None
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            is_object = "object" in (node.get("type") or []) or node.get("type") == "object"
            if is_object and node.get("additionalProperties") is not False:
                # a map of free keys (labels, env) states what its values are; a structure is closed
                if "properties" in node or not isinstance(node.get("additionalProperties"), dict):
                    open_objects.append(path)
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == []


def test_scorers_can_be_rolled_to_a_new_tag_before_the_rest() -> None:
    """Upgrades roll scorers first (a scorer answers gateways of either version); the migrate hook
    runs the scorers' image, so the schema they need is there before they start."""
    objects = render({"image": {"tag": "1.0.0"}, "scorer": {"imageTag": "1.1.0"}})
    images = {c["name"]: c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]}
    assert images == {
        "gateway": "ghcr.io/example/turnout:1.0.0",
        "scorer": "ghcr.io/example/turnout:1.1.0",
        "profiler": "ghcr.io/example/turnout:1.0.0",
        "sync": "ghcr.io/example/turnout:1.0.0",
        "gpu-agent": "ghcr.io/example/turnout:1.0.0",
        "migrate": "ghcr.io/example/turnout:1.1.0",  # the schema the new scorers need
    }


def test_gpu_agent_env_overrides_the_preset_and_the_chart_keeps_its_ports() -> None:
    values = {
        "gpuAgent": {"env": {"TURNOUT_GPU_AGENT__READERS": '["nvidia-smi"]'}},
        "gateway": {"env": {"TURNOUT_GATEWAY__PORT": "9999", "TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "0.2"}},
    }
    objects = render(values)
    agent = one(objects, "DaemonSet", f"{F}-gpu-agent")["spec"]["template"]["spec"]["containers"][0]
    assert _env(agent)["TURNOUT_GPU_AGENT__READERS"]["value"] == '["nvidia-smi"]'
    gateway = one(objects, "Deployment", f"{F}-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert _env(gateway)["TURNOUT_GATEWAY__PORT"]["value"] == "8080"  # what the probes and Service use
    assert _env(gateway)["TURNOUT_GATEWAY__ROUTE_TIMEOUT_S"]["value"] == "0.2"


def test_the_chart_declares_the_lowest_version_it_is_validated_for() -> None:
    """Helm refuses to install on a cluster older than Chart.yaml's kubeVersion: the lowest version
    every object is validated against above."""
    assert helm.Chart.load(CHART).metadata["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}-0"


def test_without_a_chart_made_service_account_pods_use_the_named_or_default_one() -> None:
    def account(values: dict[str, Any]) -> str:
        spec = one(render(values), "Deployment", f"{F}-scorer")["spec"]["template"]["spec"]
        return str(spec["serviceAccountName"])

    assert account({}) == F
    assert account({"serviceAccount": {"create": False}}) == "default"
    assert account({"serviceAccount": {"create": False, "name": "platform-sa"}}) == "platform-sa"
    assert find(render({"serviceAccount": {"create": False}}), "ServiceAccount") == []


def test_network_policies_only_for_components_that_run() -> None:
    values = {"networkPolicy": {"enabled": True}, "gpuAgent": {"enabled": False}, "migrate": {"enabled": False}}
    names = sorted(p["metadata"]["name"].removeprefix(f"{F}-") for p in find(render(values), "NetworkPolicy"))
    assert names == ["default-deny", "gateway", "profiler", "scorer", "sync"]
