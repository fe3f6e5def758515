"""systemd: sandbox exposure, progress-gated watchdog, READY/STOPPING from the real agent."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.ops.systemd import Progress, should_ping, watchdog
from tests.cfg import write_config
from tests.figures import figure
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]


def test_unit_exposure_score_is_at_most_2() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have systemd-analyze (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed")
    out = subprocess.run([tool, "security", "--offline=true", str(ROOT / "systemd" /
                                                                  "edge.service")],
                         capture_output=True, text=True, check=False).stdout
    match = re.search(r"Overall exposure level for edge\.service: ([0-9.]+)", out)
    assert match, out[-2000:]
    figure("R16", f"exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.0


def test_unit_keeps_what_the_agent_needs() -> None:
    unit = (ROOT / "systemd" / "edge.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "TimeoutStopSec=60",
                 "StateDirectory=edge", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "DevicePolicy=closed", "SupplementaryGroups=dialout",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "MemoryMax="):
        assert line in unit


def test_unit_forbids_core_dumps() -> None:
    # the agent holds the gateway's Ed25519 seed in memory: a core dump would write it to disk
    lines = (ROOT / "systemd" / "edge.service").read_text().splitlines()
    assert "LimitCORE=0" in lines
    assert "UMask=0077" in lines  # state files are private even if the agent forgot a mode


# versions below these have published CVEs (aiohttp: request smuggling and directory
# traversal up to 3.10.10, smuggling in the pure-Python parser up to 3.12.13; cryptography:
# NULL dereference up to 42.0.3, vulnerable bundled OpenSSL up to 44.0.0)
FIXED_FLOORS = {"aiohttp": (3, 12, 14), "cryptography": (44, 0, 1)}


def test_dependency_floors_exclude_known_vulnerable_versions() -> None:
    import tomllib
    from importlib.metadata import version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, fixed in FIXED_FLOORS.items():
        spec = next(d for d in deps if re.match(rf"{name}\b", d))
        floor = re.search(r">=\s*([0-9.]+)", spec)
        assert floor, spec
        assert tuple(int(p) for p in floor.group(1).split(".")) >= fixed, spec
        installed = tuple(int(p) for p in version(name).split(".")[:3])
        assert installed >= fixed, (name, installed)  # the venv we test with satisfies it


GOOD = Progress(writer_queue=0, writer_last_commit=100.0, uplink_last_progress=100.0,
                devices_last_ok=100.0)


@pytest.mark.parametrize(("progress", "lag", "expect"), [
    (GOOD, 0.0, "ok"),
    (GOOD, 50.0, "event loop blocked"),
    (Progress(5, 10.0, 100.0, 100.0), 0.0, "outbox writer stalled"),
    (Progress(0, 10.0, 100.0, 100.0), 0.0, "ok"),  # an idle writer is fine
    (Progress(0, 100.0, 10.0, 10.0), 0.0, "no uplink or device progress"),
    (Progress(0, 100.0, 10.0, 100.0), 0.0, "ok"),  # devices alone are progress
])
def test_ping_gate(progress: Progress, lag: float, expect: str) -> None:
    ok, reason = should_ping(progress, now=120.0, loop_lag_s=lag, window_s=60.0)
    assert ok == (expect == "ok")
    assert reason.startswith(expect)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)  # noqa: FBT003
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[tuple[float, str]]:
    got = []
    while True:
        try:
            got.append((time.monotonic(), sock.recv(4096).decode()))
        except BlockingIOError:
            return got


async def test_a_blocked_event_loop_stops_the_pings(notify_socket: socket.socket) -> None:
    task = asyncio.create_task(watchdog(lambda: Progress(0, time.monotonic(), time.monotonic(),
                                                         time.monotonic()), interval_s=0.2))
    await asyncio.sleep(1.0)
    before = drain(notify_socket)
    assert len(before) >= 5
    assert all(msg == "WATCHDOG=1" for _t, msg in before)
    blocked_at = time.monotonic()
    time.sleep(1.0)
    await asyncio.sleep(0.25)  # the first tick after the block sees the lag and withholds
    during = [t for t, _m in drain(notify_socket) if t - blocked_at < 1.2]
    assert during == []
    await wait_until(lambda: drain(notify_socket), 5, "pings resuming after the block")
    task.cancel()


def test_the_agent_says_ready_and_stopping(tmp_path: Path, notify_socket: socket.socket) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    env = {**os.environ, "NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}
    agent = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                              str(loaded.path)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        messages: list[str] = []
        while "READY=1" not in messages:
            assert time.monotonic() < deadline, messages
            messages += [m for _t, m in drain(notify_socket)]
            time.sleep(0.05)
        agent.terminate()
        assert agent.wait(20) == 0
        messages += [m for _t, m in drain(notify_socket)]
        assert "STOPPING=1" in messages
    finally:
        if agent.poll() is None:
            agent.kill()


def test_preflight_sees_the_unit_and_its_watchdog(tmp_path: Path) -> None:
    from edge.preflight import check_unit

    assert check_unit((tmp_path / "none.service",)).status == "warn"
    good = tmp_path / "edge.service"
    good.write_text((ROOT / "systemd" / "edge.service").read_text())
    assert check_unit((good,)).status == "ok"
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\n")
    assert check_unit((bad,)).status == "fail"


def test_the_benches_run_the_agent_with_the_units_environment() -> None:
    # bench w1 measures RSS with bench.common.EDGE_ENV: it must be what the unit gives (D86)
    from bench.common import EDGE_ENV

    unit = (ROOT / "systemd" / "edge.service").read_text(encoding="utf-8")
    env: dict[str, str] = {}
    for line in unit.splitlines():
        if line.startswith("Environment="):
            for item in line.removeprefix("Environment=").split():
                name, _, value = item.partition("=")
                env[name] = value
    assert env == EDGE_ENV
