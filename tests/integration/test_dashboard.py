"""The dashboard in a real browser: Debian's chromium driven by selenium through chromium-driver
(both installed by the test setup, like Redis and Postgres). The browser logs in with the admin
key, sees a request in flight and then finished (Server-Sent Events), the fleet and the catalog,
and opens the request's page with its decision."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import RUN_DIR
from tests.integration.stack_support import ADMIN_KEY, Stack, running_stack
from tests.integration.test_gateway_fakes import catalog_model, snapshot
from turnout.common.circuits import CircuitPolicy, CircuitState, CircuitStore
from turnout.common.keys import Keys
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.devstack.infra import chromium_bins

pytestmark = pytest.mark.integration

GIB = 2**30
SCREENSHOTS = RUN_DIR / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = chromium_bins()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,2200",
    ):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
async def stack(redis_url: str, db: str, key_prefix: str, redis: Redis) -> AsyncIterator[Stack]:
    async with running_stack(redis_url, db, key_prefix, request_log={"enabled": True}) as s:
        host = HostStateV1(
            host="gpu-host-1",
            backend="alpha",
            backend_url=s.alpha.url,
            gpus=[
                GpuStateV1(
                    index=0, name="NVIDIA L4", memory_total_bytes=24 * GIB, memory_used_bytes=9 * GIB,
                    memory_free_bytes=15 * GIB, utilization_pct=37.0,
                )
            ],
            loaded_models=[LoadedModelV1(name="m-alpha", vram_bytes=5 * GIB)],
            ts=time.time(),
        )  # fmt: skip
        await redis.set(s.keys.fleet_host(host.host), host.model_dump_json(), px=60_000)
        await redis.zadd(s.keys.fleet_hosts, {host.host: host.ts})
        coder = catalog_model("m-alpha", "alpha", "m-alpha", 32.0, tools=True)
        coder.quality = {"code": 0.84, "general": 0.7}
        await redis.set(s.keys.catalog_snapshot, snapshot(coder, catalog_model("m-beta", "beta", "m-beta", 3.0)))
        yield s


async def trip_circuits(redis: Redis, keys: Keys) -> float:
    """Through the shared circuit code: gamma/m-gamma open (2 failures, 60 s cooldown), gamma's
    backend-wide circuit closed with 1 failure, delta/m-delta half-open (its probe under way).
    No catalog model runs on gamma or delta, so routing is unchanged. The open one's ``until``."""
    store = CircuitStore(redis, keys, CircuitPolicy(failure_threshold=2, base_cooldown_s=60, max_cooldown_s=600))
    now = time.time()
    await store.failure("gamma", "m-gamma", "BackendStatusError", now=now)
    state, until = await store.failure("gamma", "m-gamma", "BackendStatusError", now=now)
    assert (state, until) == (CircuitState.OPEN, now + 60)
    assert await store.failure("gamma", "", "BackendTimeout", now=now) == (CircuitState.CLOSED, 0.0)
    for _ in range(2):
        await store.failure("delta", "m-delta", "BrokenReply", now=now - 100)
    assert await store.probe("delta", "m-delta", now=now) is True
    return until


def wait(browser: WebDriver, seconds: float = 10.0) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, seconds, poll_frequency=0.1)


def text_of(browser: WebDriver, css: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, css).text


def open_dashboard(browser: WebDriver, url: str) -> None:
    browser.delete_all_cookies()
    browser.get(url + "/ui")
    wait(browser).until(ec.url_contains("/ui/login"))  # no key yet: sent to the login page
    browser.find_element(By.NAME, "key").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "login-error"), "The key was refused (HTTP 401)."))
    key = browser.find_element(By.NAME, "key")
    key.clear()
    key.send_keys(ADMIN_KEY)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))


def row_text(browser: WebDriver, tbody: str, request_id: str, seconds: float = 10.0) -> str:
    css = f"#{tbody} tr[data-request-id='{request_id}']"
    wait(browser, seconds).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))
    return text_of(browser, css)


def first_inflight(browser: WebDriver) -> tuple[str, str]:
    css = "#inflight tr[data-request-id]"
    row = wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))
    return str(row.get_attribute("data-request-id")), row.text


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser, left on a blank page afterwards (an open dashboard holds a live stream)."""
    try:
        yield browser
    finally:
        browser.get("about:blank")


async def test_live_requests_fleet_catalog_and_a_request_page(stack: Stack, page: WebDriver, redis: Redis):
    browser = page
    until = await trip_circuits(redis, stack.keys)
    await asyncio.to_thread(open_dashboard, browser, stack.url)
    row = await asyncio.to_thread(text_of, browser, "#circuits tr.tripped[data-circuit='gamma/m-gamma']")
    read_at = time.time()
    shown = re.fullmatch(r"gamma m-gamma open 2 1 (\d+\.\d) s BackendStatusError", row)
    assert shown, row
    # the countdown to ``until`` as of the page's last refresh: at most 60 s, and no less than what
    # is left now (a loaded box took 1.6 s to log in and open the page: CI read 58.4 s)
    assert until - read_at - 1.0 <= float(shown[1]) <= 60.0, (row, until - read_at)
    assert await asyncio.to_thread(text_of, browser, "#circuits tr[data-circuit='gamma/']") == (
        "gamma * (whole backend) closed 1 0 – BackendTimeout"
    )
    fleet = await asyncio.to_thread(text_of, browser, "#fleet")
    assert "gpu-host-1" in fleet and "NVIDIA L4" in fleet and "9.0 GiB / 24.0 GiB, 37% busy" in fleet
    assert "m-alpha 5.0 GiB" in fleet
    catalog = await asyncio.to_thread(text_of, browser, "#catalog tr[data-model='m-alpha']")
    assert catalog == "m-alpha 32.0 B alpha tools 84% 70% – – –"

    stack.beta.mode = "slow"  # the greeting goes to beta, which answers after 5 s: in flight meanwhile
    async with httpx.AsyncClient(base_url=stack.url, timeout=20) as http:
        body = {"model": "turnout/auto", "messages": [{"role": "user", "content": "Hello there!"}]}
        slow = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        live, inflight = await asyncio.to_thread(first_inflight, browser)
        assert inflight.split()[1:4] == ["m-beta", "beta", "no"]
        assert int(await asyncio.to_thread(text_of, browser, "#inflight-total")) == 1
        resp = await slow
        rid = resp.headers["x-request-id"]
        assert rid == live
        recent = await asyncio.to_thread(row_text, browser, "recent", rid)
        assert recent.split()[1:6] == [rid[:12], "general", "simple", "m-beta", "beta"]
        assert recent.endswith("best general quality 0.84; resident on gpu0")
    assert await asyncio.to_thread(text_of, browser, "#finished-count") == "1"

    await stack.store_events()
    await asyncio.to_thread(browser.find_element(By.CSS_SELECTOR, f"#recent a[href='/ui/requests/{rid}']").click)
    await asyncio.to_thread(wait(browser).until, ec.presence_of_element_located((By.ID, "decision")))
    assert await asyncio.to_thread(text_of, browser, "#served-by") == "m-beta on beta"
    decision = await asyncio.to_thread(text_of, browser, "#decision")
    assert "Category general, complexity 0.05 (simple); signals: greeting." in decision
    assert decision.split("\n")[2:] == [
        "# MODEL BACKEND SCORE REASONS TERMS",
        "1 m-beta ✓ beta 0.910",
        "best general quality 0.84",
        "resident on gpu0",
        "speed 0.40 quality 0.84",
        "2 m-alpha alpha 0.520",
        "lower quality 0.41",
        "speed 0.90 quality 0.41",
    ]
    attempts = await asyncio.to_thread(text_of, browser, "#attempts tbody")
    assert attempts.split()[:4] == ["1", "m-beta", "beta", "ok"]
    assert await asyncio.to_thread(text_of, browser, "#prompt") == "user: Hello there!"
    assert await asyncio.to_thread(text_of, browser, "#reply") == "Hello from the fake backend."
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(browser.save_screenshot, str(SCREENSHOTS / "request.png"))

    stack.beta.mode = "ok"
    async with httpx.AsyncClient(base_url=stack.url, timeout=20) as http:
        for text in ("Hi!", "write a rust parser", "Hello", "def f(): fix it"):
            body = {"model": "turnout/auto", "messages": [{"role": "user", "content": text}], "stream": True}
            assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    await _stored(stack, 5)
    await asyncio.to_thread(browser.get, stack.url + "/ui")
    await asyncio.to_thread(wait(browser).until, ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))
    points = await asyncio.to_thread(browser.find_elements, By.CSS_SELECTOR, "svg.scatter circle[data-model]")
    assert sorted(str(p.get_attribute("data-model")) for p in points) == ["m-alpha", "m-alpha", "m-beta", "m-beta"]
    await asyncio.to_thread(browser.save_screenshot, str(SCREENSHOTS / "dashboard.png"))


async def _stored(stack: Stack, n: int) -> None:
    """Store the events as the sync worker would, once all ``n`` have been published."""
    redis = Redis.from_url(stack.redis_url)
    try:
        for _ in range(100):
            if int(await redis.xlen(stack.keys.request_events)) >= n:
                break
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    await stack.store_events()


async def test_without_the_admin_key_the_dashboard_sends_to_login_and_admin_reads_are_refused(stack: Stack):
    async with httpx.AsyncClient(base_url=stack.url, timeout=10, follow_redirects=False) as http:
        first = await http.get("/ui")
        assert (first.status_code, first.headers["location"]) == (303, "/ui/login")
        assert (await http.get("/admin/live")).status_code == 401
        assert (await http.get("/ui/static/dashboard.js")).status_code == 200
    for cookie, status in (("wrong", 303), (ADMIN_KEY, 200)):
        async with httpx.AsyncClient(base_url=stack.url, timeout=10, cookies={"turnout_admin": cookie}) as http:
            got = await http.get("/ui")
            assert got.status_code == status
            if status == 200:
                assert "<h2>Live" in got.text
                # the cookie never authorises an action: only reads get it as a header
                assert (await http.post("/admin/reload", json={})).status_code == 401


def _cells(html: str, circuit: str) -> tuple[str, list[str]]:
    """The ``class`` attribute and the cells' text of one circuit's row of the fleet's table."""
    m = re.search(rf'<tr data-circuit="{re.escape(circuit)}"( class="(\w+)")?>(.*?)</tr>', html, re.S)
    assert m is not None, f"no row for {circuit}"
    return m.group(2) or "", [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", m.group(3), re.S)
    ]


async def test_the_fleet_lists_the_circuits_with_the_open_ones_highlighted(stack: Stack, redis: Redis):
    async with httpx.AsyncClient(base_url=stack.url, timeout=10, cookies={"turnout_admin": ADMIN_KEY}) as http:
        before = (await http.get("/ui")).text
        until = await trip_circuits(redis, stack.keys)
        page = await http.get("/ui")
        admin = (await http.get("/admin/circuits", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
    assert '<tr class="empty"><td colspan="7">Every circuit is closed.</td></tr>' in before
    fleet = page.text[page.text.index('<section class="card" id="fleet">') :]
    fleet = fleet[: fleet.index("</section>")]
    assert "open after 3 consecutive failures" in fleet  # the gateway's own policy, not the test's
    klass, cells = _cells(fleet, "gamma/m-gamma")
    assert klass == "tripped"
    assert cells[:5] == ["gamma", "m-gamma", "open", "2", "1"] and cells[6] == "BackendStatusError"
    left = float(cells[5].removesuffix(" s"))
    assert until - time.time() - 0.1 <= left <= 60.0
    assert _cells(fleet, "gamma/") == ("", ["gamma", "* (whole backend)", "closed", "1", "0", "–", "BackendTimeout"])
    assert _cells(fleet, "delta/m-delta") == (
        "tripped",
        ["delta", "m-delta", "half-open", "2", "1", "–", "BrokenReply"],
    )
    assert 'class="pill bad">open</span>' in fleet and 'class="pill warn">half-open</span>' in fleet
    # the same reading as /admin/circuits: same circuits, same order
    assert [(c["backend"], c["model"], c["state"]) for c in admin["circuits"]] == [
        ("delta", "m-delta", "half_open"),
        ("gamma", "", "closed"),
        ("gamma", "m-gamma", "open"),
    ]
    assert (
        fleet.index('data-circuit="delta/m-delta"')
        < fleet.index('data-circuit="gamma/"')
        < fleet.index('data-circuit="gamma/m-gamma"')
    )


def test_static_files_are_committed_and_small() -> None:
    static = Path(__file__).resolve().parents[2] / "services/gateway/src/turnout/gateway/ui/static"
    sizes = {p.name: p.stat().st_size for p in static.iterdir()}
    assert set(sizes) == {"dashboard.js", "dashboard.css"}
    assert all(size < 20_000 for size in sizes.values())


async def test_the_live_stream_checks_its_interval_and_sends_snapshot_events(stack: Stack) -> None:
    """``/admin/live`` (left out of the schemathesis run: a valid request streams for minutes)."""
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        # out of its bounds 400, not a number 422 (the gateway's rule, errors.py)
        for bad, status in (("0.1", 400), ("10.5", 400), ("abc", 422), ("nan", 400)):
            got = await http.get("/admin/live", params={"interval": bad}, headers=auth)
            assert got.status_code == status, (bad, got.text)
            assert (got.json()["error"]["type"], got.json()["error"]["param"]) == ("invalid_request_error", "interval")
        async with http.stream("GET", "/admin/live", params={"interval": 0.2}, headers=auth) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            lines: list[str] = []
            async for line in live.aiter_lines():
                lines.append(line)
                if sum(x.startswith("data: ") for x in lines) == 2:
                    break
    assert lines[0] == "retry: 2000", lines
    data = [orjson.loads(x.removeprefix("data: ")) for x in lines if x.startswith("data: ")]
    assert lines.count("event: snapshot") == 2, lines
    assert all({"inflight", "inflight_fleet", "finished"} <= set(d) for d in data), data
