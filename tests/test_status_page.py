"""The technicians' status page: auth, probe, and a real click in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from edge.agent import Agent
from edge.cli import EX_UNAVAILABLE
from edge.config_loader import load_config
from edge.drivers.base import DeviceState, stats_dict
from edge.drivers.factory import Transports, build_driver
from edge.errors import DeviceError
from edge.ops.http_site import REJECTED
from edge.ops.status_page import LoginThrottle, serve_status_page
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.tilt import set_tilt_local
from tests.cdp import browser
from tests.cfg import tilt_device, write_config
from tests.helpers import wait_until
from tests.recording_sink import RecordingSink

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "var" / "test-artifacts"
PASSWORD = "cabinet-7f3a9c21d0"


def secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def with_page(path: Path, port: int, password_file: Path) -> None:
    path.write_text(path.read_text() + f"observability:\n  status_page_port: {port}\n"
                    f"  status_page_password_file: {password_file}\n")


async def test_status_page_probe_button_in_chromium(tmp_path: Path, plain_broker: Mosquitto,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    sim_port, page_port = free_port(), free_port()
    unit = tilt_unit(tilt_x_deg=3.5)
    sim = ModbusTcpSim({80: unit}, sim_port)
    await sim.start()
    loaded = write_config(
        tmp_path, broker_port=plain_broker.port, pki=None,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[tilt_device("manhole-12", "covers", 80)])
    with_page(loaded.path, page_port, secret(tmp_path / "page.pw", PASSWORD))
    agent = Agent(load_config(loaded.path), boot_delay_s=0)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="edge.ops.status_page")
    run = asyncio.create_task(agent.run(stop))
    url = f"http://127.0.0.1:{page_port}"
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert f"status page at {url}/" in caplog.text  # the URL is logged at start
        async with ClientSession() as http:
            async with http.get(url + "/") as resp:
                assert resp.status == 401  # no default password, no anonymous access
                assert "any user name" in await resp.text()  # how to log in
            auth = {"Authorization": "Basic " + base64.b64encode(
                f"tech:{PASSWORD}".encode()).decode()}
            async with http.get(url + "/", headers={"Authorization": "Basic dGVjaDp3cm9uZw=="}
                                ) as resp:
                assert resp.status == 401
            async with http.post(url + "/api/probe/manhole-12", headers=auth) as resp:
                assert resp.status == 403  # no X-Requested-With: a cross-site form post
        set_tilt_local(unit, 7.25)
        async with browser(tmp_path, basic_auth=("tech", PASSWORD)) as page:
            await page.call("Page.navigate", url=url + "/")
            await page.wait_for("!!document.querySelector('button[data-device=\"manhole-12\"]')")
            await page.wait_for("document.querySelector('#devices').innerText"
                                ".includes('7.25 °')")
            await page.evaluate("document.querySelector('button[data-device=\"manhole-12\"]')"
                                ".click()")
            probed = await page.wait_for(
                "(t => t.includes('tilt_x_deg') && t)(document.querySelector('#probe')"
                ".textContent)")
            text = await page.evaluate("document.body.innerText")
            banner = await page.evaluate("document.querySelector('#banner').innerText")
            await page.screenshot(ARTIFACTS / "status-page.png")
    finally:
        stop.set()
        await run
        await sim.stop()
    assert "✔ manhole-12 answered" in probed
    assert "bus covers (modbus_tcp 127.0.0.1:" in probed
    assert "unit 80: FC3 read holding registers 0x003D x4" in probed
    assert "tilt_x_deg: 7.25 °" in probed
    assert "uplink connected since" in banner
    assert "all devices answering" in banner
    assert "0 active alarm(s)" in banner
    assert "outbox oldest" in banner
    assert "manhole-12" in text
    assert "路灯井盖 测试 (31.31050, 120.63020)" in text  # the asset next to the device
    assert "temperature_c\n20.0 °C" in text or "temperature_c\t20.0 °C" in text
    assert "s ago" in text  # last seen
    assert "{" not in text  # values as labelled numbers, not raw JSON
    assert "Outbox" in text
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000


async def test_credentials_in_the_url_do_not_break_the_page(tmp_path: Path) -> None:
    page_port = free_port()
    runner = await serve_status_page(_fake_status, _fake_probe, host="127.0.0.1",
                                     port=page_port, password=PASSWORD)
    try:
        async with browser(tmp_path) as page:
            await page.call("Page.navigate", url=f"http://tech:{PASSWORD}@127.0.0.1:{page_port}/")
            await page.wait_for("document.querySelector('#devices').innerText"
                                ".includes('lamp-3')")
            await page.evaluate("document.querySelector('button[data-device=\"lamp-3\"]')"
                                ".click()")
            probed = await page.wait_for(
                "(t => t.includes('power_w') && t)(document.querySelector('#probe').textContent)")
            banner = await page.evaluate("document.querySelector('#banner').innerText")
            alarms = await page.evaluate("document.querySelector('#alarms').innerText")
            seen = await page.evaluate("document.querySelector('#devices').innerText")
    finally:
        await runner.cleanup()
    assert "power_w: 98.5 W" in probed
    assert "uplink DISCONNECTED since" in banner
    assert "1 device(s) offline: lamp-3" in banner
    assert "1 active alarm(s)" in banner
    assert "lamp-3:comm_lost since" in alarms  # the raise time, from the alarm id
    assert "2025" in alarms  # 1764633600000 ms is 2025-12-02 00:00 UTC
    assert "12 s ago" in seen


async def _fake_status() -> dict[str, Any]:
    return {"gateway": "gw-1", "version": "t", "uptime_s": 1.0, "time_quality": "synced",
            "devices": {"lamp-3": {"kind": "streetlight", "state": "offline", "polls_ok": 1,
                                   "polls_failed": 3, "last_error": "no answer",
                                   "values": {"power_w": 98.5}, "last_ok_age_s": 12.0}},
            "outbox": {"depth": 0, "dead_letters": 0, "by_prio": {}},
            "uplink": {"connected": False, "events_acked": 0, "last_error": None},
            "active_alarms": ["lamp-3:comm_lost"],
            "active_alarm_ids": {"lamp-3:comm_lost": "3205080118000007:comm_lost:1764633600000"}}


async def _fake_probe(name: str) -> dict[str, Any]:
    if name != "lamp-3":
        raise KeyError(name)
    return {"power_w": 98.5}


def _basic(password: str, user: str = "tech") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_failed_logins_are_throttled_per_client_with_retry_after() -> None:
    port = free_port()
    throttle = LoginThrottle(max_failures=5, window_s=60, lockout_s=30)
    runner = await serve_status_page(_fake_status, _fake_probe, host="127.0.0.1", port=port,
                                     password=PASSWORD, throttle=throttle)
    url = f"http://127.0.0.1:{port}/api/status"
    before = REJECTED["status_page", 429]
    try:
        async with ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 401  # no credentials yet: not a failed login
            for n in range(5):
                async with http.get(url, headers=_basic(f"guess-{n}")) as resp:
                    assert resp.status == 401
            async with http.get(url, headers=_basic(PASSWORD)) as resp:
                assert resp.status == 429  # even the right password waits out the lockout
                assert 1 <= int(resp.headers["Retry-After"]) <= 31
    finally:
        await runner.cleanup()
    assert throttle.failed == 5
    assert throttle.throttled == 1
    assert REJECTED["status_page", 429] == before + 1  # counted (edge_http_rejected_total)
    # another client is not locked out, and a login forgets the client's failures
    assert throttle.retry_after_s("10.0.0.9", time.monotonic()) == 0


def test_the_throttle_remembers_a_bounded_number_of_clients() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=60, max_clients=100)
    for n in range(10_000):
        throttle.failure(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1.0)
    assert len(throttle) == 100
    for _ in range(3):
        throttle.failure("192.0.2.1", 2.0)
    assert throttle.retry_after_s("192.0.2.1", 2.0) == 60
    assert throttle.retry_after_s("192.0.2.1", 62.5) == 0


async def test_hostile_http_gets_a_clear_4xx_never_a_500_and_is_counted(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    page_port, metrics_port = free_port(), free_port()
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, devices=[],
                          buses=[])
    with_page(loaded.path, page_port, secret(tmp_path / "page.pw", PASSWORD))
    loaded.path.write_text(loaded.path.read_text() + f"  metrics_port: {metrics_port}\n")
    agent = Agent(load_config(loaded.path), boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    page, metrics = f"http://127.0.0.1:{page_port}", f"http://127.0.0.1:{metrics_port}"
    seen: list[tuple[str, int]] = []
    # the counters are process-wide: other tests' 502/504 probes stay in them
    errors_before = {k: v for k, v in REJECTED.items() if k[1] >= 500}
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        ok = _basic(PASSWORD)
        cases: list[tuple[str, str, dict[str, str], int]] = [
            ("GET", page + "/", {"Authorization": "Basic !!!not-base64"}, 401),
            ("GET", page + "/", {"Authorization": "Basic " + base64.b64encode(
                b"\xff\xfe:\xff").decode()}, 401),
            ("GET", page + "/", {"Authorization": "Bearer abc"}, 401),
            ("GET", page + "/", {"Authorization": "Basic"}, 401),
            ("GET", page + "/nope", ok, 404),
            ("GET", page + "/../../etc/passwd", ok, 404),
            ("DELETE", page + "/api/status", ok, 405),
            ("GET", page + "/api/probe/x", ok, 405),
            ("POST", page + "/api/probe/ghost", {**ok, "X-Requested-With": "edge"}, 404),
            ("POST", page + "/api/probe/ghost", ok, 403),
            ("GET", metrics + "/nope", {}, 404),
            ("POST", metrics + "/metrics", {}, 405),
            ("GET", metrics + "/metrics", {"Authorization": "Basic !!!"}, 200),
            ("HEAD", page + "/api/status", ok, 200),  # health checks probe with HEAD
            ("HEAD", metrics + "/healthz", {}, 200),
        ]
        async with ClientSession() as http:
            for method, url, headers, want in cases:
                async with http.request(method, url, headers=headers) as resp:
                    seen.append((f"{method} {url}", resp.status))
                    assert resp.status == want, (method, url, resp.status)
                    if url.startswith(page) and headers is ok:  # aiohttp's 404/405 as well
                        assert resp.headers.get("X-Frame-Options") == "DENY", (method, url)
        for base in (page, metrics):  # a 100 kB header: aiohttp's parser refuses it
            host, port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 +
                         b"\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.read(64), 5)
            writer.close()
            assert head.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), head
        async with ClientSession() as http, http.get(metrics + "/metrics") as resp:
            exposition = await resp.text()
    finally:
        stop.set()
        await run
    assert all(status < 500 for _, status in seen)
    for line in ('edge_http_rejected_total{site="status_page",status="401"}',
                 'edge_http_rejected_total{site="status_page",status="404"}',
                 'edge_http_rejected_total{site="status_page",status="405"}',
                 'edge_http_rejected_total{site="status_page",status="403"}',
                 'edge_http_rejected_total{site="status_page",status="400"}',
                 'edge_http_rejected_total{site="metrics",status="400"}',
                 'edge_http_rejected_total{site="metrics",status="405"}',
                 'edge_http_rejected_total{site="metrics",status="404"}'):
        assert line in exposition, line
    assert {k: v for k, v in REJECTED.items() if k[1] >= 500} == errors_before  # no new 5xx


def test_basic_auth_off_loopback_needs_an_explicit_plain_http(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    with_page(loaded.path, 8080, secret(tmp_path / "page.pw", PASSWORD))
    text = loaded.path.read_text() + "  status_page_host: 192.0.2.10\n"
    loaded.path.write_text(text)
    line = text.splitlines().index("  status_page_host: 192.0.2.10") + 1
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    want = f"devices.yaml:{line}: observability.status_page_host: 192.0.2.10 is not loopback"
    assert want in result.stderr
    loaded.path.write_text(text + "  status_page_plain_http: true\n")
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert "status_page_host" not in result.stderr


def test_a_placeholder_password_refuses_to_start(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    with_page(loaded.path, free_port(), secret(tmp_path / "page.pw", "changeme"))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == EX_UNAVAILABLE
    assert "placeholder" in result.stderr
    assert "changeme" not in result.stderr  # the secret itself is never printed


def test_status_page_needs_a_password_file(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    loaded.path.write_text(loaded.path.read_text() + "observability:\n  status_page_port: 9"
                           "\n")
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert "status_page_password_file: required" in result.stderr


async def test_probe_now_answers_for_a_device_the_poll_loop_backs_off_from(
        tmp_path: Path) -> None:
    sim_port, page_port = free_port(), free_port()
    unit = tilt_unit(tilt_x_deg=2.0)
    unit.fault = "dead"
    sim = ModbusTcpSim({80: unit}, sim_port)
    await sim.start()
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port,
         "timeout_s": 0.2, "retries": 0}], devices=[tilt_device("manhole-12", "covers", 80)])
    transports = Transports(loaded.config)
    driver = build_driver(loaded.config.device("manhole-12"), loaded.config, transports)
    bus = transports.buses["covers"]
    for _ in range(4):  # the poll loop's failures open the unit's breaker for seconds
        with contextlib.suppress(DeviceError):
            await bus.read("manhole-12", 80, 3, 0x3D, 4)
    unit.fault = "none"  # the technician fixed the wiring

    async def probe(name: str) -> dict[str, Any]:
        if name != "manhole-12":
            raise KeyError(name)
        return dict(await driver.probe())

    runner = await serve_status_page(_fake_status, probe, host="127.0.0.1", port=page_port,
                                     password=PASSWORD)
    try:
        with pytest.raises(DeviceError, match="after backoff"):
            await bus.read("manhole-12", 80, 3, 0x3D, 4)  # the poll loop would still wait
        async with ClientSession() as http, http.post(
                f"http://127.0.0.1:{page_port}/api/probe/manhole-12",
                headers={**_basic(PASSWORD), "X-Requested-With": "edge"}) as resp:
            body = await resp.json()
    finally:
        await runner.cleanup()
        await transports.close()
        await sim.stop()
    assert resp.status == 200, body
    assert body["labelled"]["tilt_x_deg"] == "2.0 °"
    assert body["wire"][0]["request"] == "FC3 read holding registers 0x003D x4"


async def test_an_old_error_is_marked_earlier_once_the_device_answers_again(
        tmp_path: Path) -> None:
    # issue 21 f3: "online … unit 80 not answering; next probe after backoff" stayed after the
    # device recovered, until it restarted
    sim_port = free_port()
    unit = tilt_unit(tilt_x_deg=2.0)
    unit.fault = "dead"
    sim = ModbusTcpSim({80: unit}, sim_port)
    await sim.start()
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port,
         "timeout_s": 0.2, "retries": 0}], devices=[
        tilt_device("manhole-12", "covers", 80, poll_interval_s=0.2)])
    transports = Transports(loaded.config)
    driver = build_driver(loaded.config.device("manhole-12"), loaded.config, transports)
    run = asyncio.create_task(driver.run(RecordingSink()), name="poll-manhole-12")
    try:
        await wait_until(lambda: driver.stats.state is DeviceState.OFFLINE, 20, "offline")
        failed = driver.stats.last_error
        assert failed
        unit.fault = "none"
        await wait_until(lambda: driver.stats.state is DeviceState.ONLINE, 30, "online again")
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await transports.close()
        await sim.stop()
    shown = stats_dict(driver)["last_error"]
    assert re.fullmatch(r"earlier \(until \d\d:\d\d\): .+", shown), shown
    assert failed in shown


async def test_uplink_connected_since_is_the_connack_time_and_a_relay_reads_on_off() -> None:
    # issue 21 f7: "connected since" was the page's first status read, not the connect time;
    # f10: relay_on was shown as False
    connack_at = time.time() - 3600.0

    async def status() -> dict[str, Any]:
        return {"gateway": "gw-1", "devices": {"lamp-3": {
            "kind": "streetlight", "state": "online", "values": {"relay_on": False,
                                                                 "power_w": 0.0}}},
                "outbox": {}, "uplink": {"connected": True, "connected_since": connack_at}}

    page_port = free_port()
    runner = await serve_status_page(status, _fake_probe, host="127.0.0.1", port=page_port,
                                     password=PASSWORD)
    try:
        async with ClientSession() as http, http.get(
                f"http://127.0.0.1:{page_port}/api/status", headers=_basic(PASSWORD)) as resp:
            body = await resp.json()
    finally:
        await runner.cleanup()
    assert body["banner"]["uplink_since"] == connack_at
    assert body["devices"]["lamp-3"]["labelled"]["relay_on"] == "off"


def test_edge_status_says_since_when_the_uplink_is_connected(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    connack_at = time.time() - 7200.0
    (loaded.state_dir / "status.json").write_text(json.dumps({
        "version": "x", "pid": 1, "written_at": time.time(), "time_quality": "synced",
        "config": {}, "outbox": {"depth": 0, "dead_letters": 0, "drops": 0},
        "uplink": {"connected": True, "connected_since": connack_at, "events_acked": 5},
        "devices": {"lamp-3": {"kind": "streetlight", "state": "online", "polls_ok": 4,
                               "polls_failed": 0, "last_error": ""}}}))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "status", "--config",
                             str(loaded.path)], capture_output=True, text=True, timeout=60,
                            check=False)
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(connack_at))
    assert f"uplink: connected since {since}, 5 events acked" in result.stdout, result.stdout


def test_rotating_addresses_does_not_escape_the_throttle() -> None:
    """An IPv6 client is its /64; all clients together get a failure budget (review #8)."""
    throttle = LoginThrottle(max_failures=5, window_s=60, lockout_s=60, max_failures_all=30)
    for n in range(5):  # five addresses of one /64: one client
        throttle.failure(f"2001:db8:1:2::{n + 1:x}", 1.0)
    assert throttle.retry_after_s("2001:db8:1:2::99", 1.0) == 60
    assert throttle.retry_after_s("2001:db8:1:3::1", 1.0) == 0  # another /64 may try
    for n in range(25):  # 30 failures in the window from anywhere: everyone waits
        throttle.failure(f"198.51.100.{n}", 2.0)
    assert throttle.retry_after_s("203.0.113.7", 2.0) == 60
    assert throttle.retry_after_s("203.0.113.7", 62.5) == 0
