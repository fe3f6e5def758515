"""State files are private (0600) even when the agent runs outside systemd's UMask=0077.

Security review 19 #11: ``outbox.db`` and ``status.json`` were created 0644 by a shell-started
agent, readable by every local user (events carry asset positions; status carries errors).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from edge.buffer.store import Outbox
from edge.clock import TimeQuality
from edge.model import Event, EventType
from tests.cfg import write_config

ROOT = Path(__file__).resolve().parents[1]


def loose_files(folder: Path) -> dict[str, str]:
    """Return every file under ``folder`` whose mode lets anyone but the owner in."""
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode))
            for p in folder.rglob("*") if p.is_file() and p.stat().st_mode & 0o077}


def test_the_outbox_creates_its_files_0600_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a shell's usual umask
    try:
        store = Outbox(tmp_path / "state" / "outbox.db")
        store.open()
        store.append([Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                              device="d", data={"n": i}) for i in range(5)])
        names = {p.name for p in (tmp_path / "state").iterdir()}
        assert {"outbox.db", "outbox.db-wal", "outbox.db.seq"} <= names, names
        assert loose_files(tmp_path / "state") == {}
        store.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_outbox_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    first = Outbox(path)
    first.open()
    first.close()
    path.chmod(0o644)  # created by an older agent
    store = Outbox(path)
    store.open()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.close()


def test_the_running_agent_leaves_no_readable_state_file(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    state = loaded.state_dir
    agent = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                              str(loaded.path)], cwd=ROOT, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: os.umask(0o022))  # noqa: PLW1509 - umask only
    try:
        deadline = time.monotonic() + 30
        while not (state / "status.json").exists():
            assert agent.poll() is None, "the agent exited"
            assert time.monotonic() < deadline, "no status.json"
            time.sleep(0.1)
        first = (state / "status.json").stat().st_ino
        while (state / "status.json").stat().st_ino == first:  # a second write: tmp + rename
            assert time.monotonic() < deadline, "no second status write"
            time.sleep(0.1)
        names = {p.name for p in state.iterdir()}
        assert {"status.json", "outbox.db"} <= names, names
        assert loose_files(state) == {}
        assert stat.S_IMODE(state.stat().st_mode) == 0o700  # nobody lists it either
    finally:
        agent.terminate()
        agent.wait(30)
    assert loose_files(state) == {}


async def test_a_stored_light_schedule_is_0600(tmp_path: Path) -> None:
    from edge.kinds.streetlight import LightStep
    from tests.test_light_schedule import _config, _driver

    driver, bus = _driver(_config(tmp_path, 1), 1, tmp_path / "state" / "schedules")
    old = os.umask(0o022)
    try:
        driver.store_schedule([LightStep(at="sunset+15", on=True, dim_pct=80)])
    finally:
        os.umask(old)
        await bus.close()
    assert (tmp_path / "state" / "schedules" / "lamp-1.json").exists()
    assert loose_files(tmp_path / "state") == {}


async def test_an_existing_0755_state_dir_is_tightened_at_start(tmp_path: Path) -> None:
    """Issue 19 re-test #6: a state dir created 0755 earlier (by hand, an older agent) stayed so."""
    import asyncio

    from edge.agent import Agent

    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[])
    loaded.state_dir.mkdir(parents=True)
    loaded.state_dir.chmod(0o755)
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop), name="agent")
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert stat.S_IMODE(loaded.state_dir.stat().st_mode) == 0o700
    finally:
        stop.set()
        await asyncio.wait({run}, timeout=10)
    assert loose_files(loaded.state_dir) == {}
