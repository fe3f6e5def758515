"""R19: a gateway without RTC boots at 1970; its clock jumps ±1 h while running.

* At 1970 (libfaketime under the real agent): events are flagged ``unsynced`` with boot id and
  monotonic time, the broker's certificate is "not yet valid" — reported as a TLS failure,
  retried with backoff, not in a storm, never in plaintext.
* At 1970, commands are judged by their counter alone (freshness cannot be judged).
* Jumps of ±1 h while forwarding lose nothing and duplicate nothing (timers are monotonic).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.broker import Mosquitto, free_port
from hil.pki import Pki
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from tests.cfg import tilt_device, write_config
from tests.figures import figure
from tests.helpers import ROOT, stop_agent, wait_until
from tests.test_commands import Harness
from tests.uplink_rig import rig

pytestmark = pytest.mark.reliability
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1")


def _libfaketime() -> str:
    for lib in FAKETIME_LIBS:
        if Path(lib).exists():
            return lib
    if os.environ.get("CI"):
        pytest.fail("CI must install faketime (apt-get install faketime): R19 needs it")
    pytest.skip("libfaketime is not installed (apt-get install faketime)")


async def test_boot_at_1970_flags_events_and_reports_tls_without_a_storm(tmp_path: Path,
                                                                         pki: Pki) -> None:
    lib = _libfaketime()
    broker = Mosquitto(tmp_path / "mq", free_port(), pki)
    broker.start()
    sim_port = free_port()
    sim = ModbusTcpSim({1: tilt_unit(1.0)}, sim_port)
    await sim.start()
    loaded = write_config(tmp_path / "gw", broker_port=broker.port, pki=pki,
                          buses=[{"name": "b", "type": "modbus_tcp", "host": "127.0.0.1",
                                  "port": sim_port}],
                          devices=[tilt_device("mh-1", "b", 1, poll_interval_s=0.5)],
                          uplink={"reconnect_base_s": 1.0, "reconnect_cap_s": 30.0})
    # a constant offset back to the epoch: wall clock and (as libfaketime does) monotonic move
    # together, so timers behave; OpenSSL sees 1970 and the broker's certificate as not valid
    env = {**os.environ, "LD_PRELOAD": lib, "FAKETIME": f"-{int(time.time())}"}
    log = tmp_path / "agent.log"
    with log.open("ab") as out:
        agent = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                                  str(loaded.path)], cwd=ROOT, env=env, stdout=out, stderr=out)
    status_path = loaded.state_dir / "status.json"
    watch_s = 15.0
    try:
        def status() -> dict[str, object]:
            try:
                return json.loads(status_path.read_text())  # type: ignore[no-any-return]
            except (OSError, ValueError):
                return {}

        await wait_until(lambda: status().get("uplink"), 20, "a status file")
        await asyncio.sleep(watch_s)
        doc = status()
        uplink = doc["uplink"]
        assert isinstance(uplink, dict)
        db = sqlite3.connect(loaded.state_dir / "outbox.db")
        stamped = [json.loads(p) for (p,) in db.execute("SELECT payload FROM events LIMIT 50")]
        db.close()
        figure("R19", f"boot at 1970: time_quality {doc['time_quality']}, {len(stamped)}+ events "
                      f"queued unsynced, uplink {uplink['failures']} in {uplink['attempts']} "
                      f"attempts over {watch_s:g} s, connected={uplink['connected']}")
        assert doc["time_quality"] == "unsynced"
        assert stamped, "no event was queued"
        assert all(e["time_quality"] == "unsynced" and "mono" in e for e in stamped)
        assert not uplink["connected"], "connected to a broker whose certificate is not valid yet"
        assert uplink["failures"].get("uplink.tls", 0) >= 1, uplink
        assert uplink["attempts"] <= 8, "retried into a storm"  # full jitter, base 1 s
        text = log.read_text(errors="replace")
        assert "Traceback" not in text
    finally:
        stop_agent(agent)
        await sim.stop()
        broker.stop()


async def test_commands_fall_back_to_counter_only_at_1970(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path)
    await h.start()
    try:
        real = time.time_ns
        monkeypatch.setattr(time, "time_ns", lambda: real() - 1_700_000_000 * 10**9)
        yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        # "expired" by the platform's clock, but a gateway at 1970 cannot know: counter only
        out = await h.send(h.lighting, "light.set", {"on": True}, iat=yesterday)
        assert out.status == "executed", out
        replay = await h.send(h.lighting, "light.set", {"on": False}, iat=yesterday, ctr=1)
        assert replay.status == "rejected"
        assert replay.reason == "counter_rollback"
    finally:
        await h.stop()


async def test_clock_jumps_of_an_hour_lose_and_duplicate_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is required")
    broker = Mosquitto(tmp_path / "mq", free_port(), None)
    broker.start()
    offset_ns = [0]
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + offset_ns[0])
    try:
        async with rig(tmp_path, uplink_port=broker.port, receiver_port=broker.port) as r:
            for jump_s in (0, 3600, 0, -3600, 0):
                offset_ns[0] = jump_s * 10**9
                await r.produce(300, 1.5, alarm_every_s=0.5)
            await r.wait_delivered(30)
            seqs = [s for (s,) in r.store.db.execute("SELECT seq FROM events ORDER BY "
                                                     "received_ns")]
            figure("R19", f"±1 h jumps while forwarding: {len(r.missing())} lost of "
                          f"{len(r.produced)}, {r.duplicates()} duplicates")
            assert not r.missing()
            assert r.duplicates() == 0
            assert len(set(seqs)) == len(seqs)
    finally:
        broker.stop()
