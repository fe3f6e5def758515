"""R9, a fleet of 500 gateways through a broker restart, and the 30-minute soak (make faults).

Soak: the real agent on simulators at a street cabinet's pace with the broker taken away for
20 s every 5 minutes; RSS and open file descriptors stay within 10 % of where they settled,
the WAL stays bounded, nothing committed is lost. ``SOAK_S`` shortens or lengthens it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import pytest

from bench.fleet import REPLAY_PER_S, measure
from hil.broker import Mosquitto, free_port
from hil.receiver.service import run_mqtt
from hil.sims.modbus_sim import ModbusTcpSim, lamp_unit, tilt_unit
from tests.cfg import lamp_device, tilt_device, write_config
from tests.figures import figure
from tests.helpers import GATEWAY, receiver_for, start_agent, stop_agent, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.faults]


@pytest.mark.timeout(900)
async def test_r9_fleet_of_500_gateways_through_a_broker_restart(tmp_path: Path) -> None:
    m = await measure(tmp_path, 500, 100)
    hist = " ".join(f"{s}:{n}" for s, n in m["histogram"].items())
    figure("R9", f"500 gateways, {m['produced']} events queued in the outage: {m['lost']} lost; "
                 f"busiest reconnect second {100 * m['max_bucket_share']:.1f} % of the fleet; "
                 f"fastest replay {m['max_replay_per_s']:.1f}/s (limit {REPLAY_PER_S:g}); "
                 f"attempts per second [{hist}]")
    assert m["connected_first"] == 500
    assert m["lost"] == 0
    assert m["max_bucket_share"] <= 0.10
    assert m["max_replay_per_s"] <= REPLAY_PER_S * 1.1


def _proc_sample(pid: int, wal: Path) -> tuple[float, int, int]:
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith("VmRSS:"))
    fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return rss_kb / 1024, fds, wal.stat().st_size if wal.exists() else 0


@pytest.mark.timeout(3 * 3600)
async def test_soak_rss_fds_and_wal_stay_flat(tmp_path: Path) -> None:
    soak_s = float(os.environ.get("SOAK_S", "1800"))
    broker = Mosquitto(tmp_path / "mq", free_port(), None, persistence=True)
    broker.start()
    sim_port = free_port()
    units = {u: tilt_unit(1.0) for u in range(1, 21)} | {
        u: lamp_unit() for u in range(21, 41)}
    sim = ModbusTcpSim(units, sim_port)
    await sim.start()
    loaded = write_config(
        tmp_path / "gw", broker_port=broker.port, pki=None,
        buses=[{"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[tilt_device(f"mh-{u}", "b", u, poll_interval_s=0.5) for u in range(1, 21)]
        + [lamp_device(f"lamp-{u}", "b", u, poll_interval_s=1.0) for u in range(21, 41)])
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port, tls=None,
                                      ready=ready, retry_s=0.5))
    await asyncio.wait_for(ready.wait(), 10)
    agent = start_agent(loaded.path, tmp_path / "agent.log")
    wal = loaded.state_dir / "outbox.db-wal"
    samples: list[tuple[float, float, int, int]] = []
    started = time.monotonic()
    next_flap = started + 300
    try:
        await asyncio.sleep(min(120.0, soak_s / 10))  # settle: caches, first reconnects
        while time.monotonic() - started < soak_s:
            samples.append((time.monotonic() - started, *_proc_sample(agent.pid, wal)))
            if time.monotonic() >= next_flap:
                broker.stop()
                await asyncio.sleep(20)
                broker.start()
                next_flap += 300
            await asyncio.sleep(10)
        assert agent.poll() is None, "the agent died during the soak"
        await wait_until(lambda: store.seq_count(GATEWAY)[0] > 0, 30)
    finally:
        stop_agent(agent)
        rx.cancel()
        await sim.stop()
        broker.stop()
    gaps = store.seq_gaps(GATEWAY)
    total = store.seq_count(GATEWAY)[0]
    store.close()
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss0, rss1 = (statistics.median(s[1] for s in part) for part in (first, last))
    fd0, fd1 = (statistics.median(s[2] for s in part) for part in (first, last))
    wal_max = max(s[3] for s in samples)
    figure("SOAK", f"{soak_s / 60:.0f} min, {len(samples)} samples, broker away 20 s every "
                   f"5 min: RSS {rss0:.1f} → {rss1:.1f} MiB, fds {fd0:.0f} → {fd1:.0f}, WAL max "
                   f"{wal_max / 2**20:.1f} MiB, {total} events at the receiver, {len(gaps)} gaps")
    assert abs(rss1 - rss0) <= 0.10 * rss0
    assert abs(fd1 - fd0) <= max(2, 0.10 * fd0)
    assert wal_max <= 64 * 2**20
    assert not gaps
