"""A full disk never stops the agent (issue 14 re-test f14 #1): the status file, the clock floor
and the other auxiliary files fail with a count and one log line per outage, their temporary
files are removed, and the cover alarm the outbox holds is delivered once space returns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge.buffer.device_state import DeviceStateStore
from edge.buffer.store import Outbox
from edge.errors import StoreFullError
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from hil.receiver.service import run_mqtt
from tests.cfg import TILT_ASSET, write_config
from tests.helpers import receiver_for, start_agent, stop_agent, wait_until
from tests.outbox_sql import sql_rows
from tests.outbox_util import ev, open_store
from tests.test_outbox_diskfull import fill, small_fs

pytestmark = pytest.mark.reliability
__all__ = ["small_fs"]  # the tmpfs fixture, shared with the outbox's own disk-full test


def _status(state: Path) -> dict[str, Any]:
    try:
        doc = json.loads((state / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


async def test_a_full_disk_keeps_the_agent_running_and_the_alarm_arrives(
        tmp_path: Path, small_fs: Path, plain_broker: Mosquitto) -> None:
    state = small_fs / "state"
    cover = {"name": "cover-5", "kind": "manhole_tilt", "transport": "mqtt",
             "model": "mqtt_json", "topic": "covers/5", "poll_interval_s": 5,
             "asset": {**TILT_ASSET, "code": "3205080106000995"},
             "alarms": {"cover_open": {"threshold": 15.0, "clear_below": 10.0,
                                       "raise_after": 2, "clear_after": 2}}}
    loaded = write_config(
        tmp_path / "gw", broker_port=plain_broker.port, pki=None, buses=[], devices=[cover],
        gateway={"state_dir": str(state)},
        extra={"southbound_mqtt": {"host": "127.0.0.1", "port": plain_broker.port,
                                   "tls": False}})
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=plain_broker.port,
                                      tls=None, ready=ready, retry_s=0.2))
    log = tmp_path / "agent.log"
    agent = start_agent(loaded.path, log)
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="cover-5",
                   protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await pub.connect()
        await wait_until(lambda: _status(state).get("devices"), 20, "the agent's first status")
        await pub.publish("covers/5", b'{"tilt": 1.0}')
        await wait_until(lambda: store.db.execute("SELECT count(*) FROM events WHERE "
                                                  "device = 'cover-5'").fetchone()[0] >= 1,
                         20, "the cover's first reading at the receiver")
        # the tester's case: the disk fills up, then the cover is lifted
        # (the outbox releases its reserve at the first full write: fill that too)
        for _ in range(3):
            fill(small_fs / "filler", leave_bytes=0)
            await pub.publish("covers/5", b'{"tilt": 1.0}')
            await asyncio.sleep(0.5)
        fill(small_fs / "filler", leave_bytes=0)
        for _ in range(3):
            await pub.publish("covers/5", b'{"tilt": 80.0}')
        full_until = time.monotonic() + 6  # three status periods and more on a full disk
        while time.monotonic() < full_until:
            tail = log.read_text()[-3000:]
            assert agent.poll() is None, f"exit {agent.returncode} on a full disk:\n{tail}"
            await asyncio.sleep(0.2)
        assert not (state / "status.json.tmp").exists(), "a failed status write left its tmp"
        text = log.read_text()
        assert text.count("status.json not written") == 1, text[-3000:]  # once per outage
        # space returns: the held alarm is delivered, the status file is written again
        (small_fs / "filler").unlink()
        await wait_until(lambda: store.db.execute(
            "SELECT count(*) FROM cases WHERE kind = 'cover_open'").fetchone()[0] == 1,
            30, "the cover_open case at the receiver after space returned")
        await wait_until(lambda: "status.json written again" in log.read_text(), 10,
                         "the status file's recovery logged")
        failures = _status(state).get("aux_write_failures")
        assert isinstance(failures, dict) and failures.get("status.json", 0) >= 1, failures
        assert agent.poll() is None
        # a restart on a full disk (systemd, a power cut): the store is kept, never taken
        # for corrupt; with no reserve left the agent says so and exits 69 until space returns
        stop_agent(agent)
        fill(small_fs / "filler2", leave_bytes=0)
        agent = start_agent(loaded.path, log)
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(5)
        assert agent.returncode in {None, 69}, log.read_text()[-3000:]
        if agent.returncode == 69:
            assert "the disk is full" in log.read_text()
        assert not list(state.glob("outbox.db.corrupt-*")), log.read_text()[-3000:]
        (small_fs / "filler2").unlink()
        if agent.poll() is not None:
            agent = start_agent(loaded.path, log)  # as systemd's Restart= does
        await wait_until(lambda: (_status(state).get("uplink") or {}).get("connected"), 20,
                         "the restarted agent connected")
        assert store.db.execute("SELECT count(*) FROM cases WHERE kind = 'cover_open'"
                                ).fetchone()[0] == 1
    finally:
        await pub.close()
        stop_agent(agent)
        rx.cancel()
        store.close()


async def test_work_coverage_on_a_full_disk_is_counted_logged_once_and_retried(
        small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.test_coverage import T0, ClockSink, _mqtt_gps, _mqtt_truck, _sweep_main_st

    driver = _mqtt_gps(_mqtt_truck())
    driver.saved = DeviceStateStore(small_fs / "coverage", max_bytes=1 << 20)
    sink = ClockSink(T0)
    await driver.restore_coverage(sink)
    await _sweep_main_st(driver, sink)
    fill(small_fs / "filler", leave_bytes=0)
    for _ in range(3):
        await driver.save_coverage()  # never raises: the shift goes on in memory
    name = "truck-03: work coverage truck-03.json"
    assert driver.aux_writes.failures == {name: 3}
    said = [r.getMessage() for r in caplog.records if "work coverage" in r.getMessage()]
    assert len([m for m in said if "not written" in m]) == 1, said  # once per outage
    assert not (small_fs / "coverage" / "truck-03.json.tmp").exists()
    (small_fs / "filler").unlink()
    await driver.save_coverage()
    assert (small_fs / "coverage" / "truck-03.json").exists()
    assert any("written again after 3" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("reserve", [True, False])
def test_a_store_opened_on_a_full_disk_is_not_moved_aside_as_corrupt(small_fs: Path,
                                                                     reserve: bool) -> None:
    """A restart on a full disk: SQLite's "disk I/O error" (no room for -shm) was taken for
    corruption, the store with its held alarms moved aside, and the agent exited 69."""
    store = open_store(small_fs / "outbox.db")
    seqs = store.append([ev(0, size=100) for _ in range(10)]).seqs
    store.close()
    if not reserve:
        (small_fs / "outbox.db.ballast").unlink()
    fill(small_fs / "filler", leave_bytes=0)
    again = Outbox(small_fs / "outbox.db")
    try:
        if reserve:  # the reserve makes room: open, every held event there
            again.open()
            assert [r[0] for r in sql_rows(again, "SELECT seq FROM events ORDER BY seq")] == seqs
        else:  # no reserve: refused as full, never replaced
            with pytest.raises(StoreFullError, match="disk is full"):
                again.open()
    finally:
        again.close()
    assert not list(small_fs.glob("outbox.db.corrupt-*")), sorted(small_fs.iterdir())
    assert (small_fs / "outbox.db").stat().st_size > 0
