"""``python -m bench modbus``: RS-485 bus utilisation, Modbus TCP readings and points per
CPU-second (beside thingsboard-gateway 3.8.x), and memory under overload.

* Bus utilisation: ten WitMotion slaves on a wire-timed 9,600 baud pty (hil/sims/rtu_sim.py),
  polled faster than the wire allows, so the line never idles by choice. What the wire allows
  for a transaction is its request and reply characters plus the two 3.5-character silences
  that end them (the plan edge check uses); for a request to a dead slave it is the request, one
  silence and the configured timeout (the master may not talk before that).
  Utilisation = that sum over every request / elapsed time.
* Side by side (bench/sidebyside.py): 100 devices x 10 registers at 1 Hz, in a loopback-only
  network namespace.
* Points per CPU-second: devices of 100 contiguous registers polled as fast as the agent can,
  each reading decoded, committed to the outbox (synchronous=FULL) and PUBACKed by a local
  mosquitto; points delivered / CPU seconds of the agent process.
* Overload: ten devices polled every 0.1 s through a simulator that takes 0.1 s per answer —
  ten times what the link can serve; the agent's RSS sampled for the run, overruns counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from bench.common import (
    Row,
    agent_env,
    cpu_s,
    current_rss_mb,
    report,
    subscribe,
    workdir,
    write_config,
)
from bench.sidebyside import run_in_namespace
from edge.config import ModbusRtuBus
from edge.config_loader import validate
from edge.drivers.base import AlarmChange, DeviceState, Reading
from edge.drivers.manhole_tilt import ManholeTiltModbusDriver
from edge.kinds.manhole_tilt import ManholeTiltDevice
from edge.transports.modbus import ModbusBus
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import tilt_unit
from hil.sims.rtu_sim import RtuLineSim

ROOT = Path(__file__).resolve().parents[1]
BAUD: Literal[9600] = 9600
TIMEOUT_S = 0.2
ASSET = {"class": "0106", "grid": "320508001002003", "name": "cover"}


class CountingSink:
    """A sink that only counts (bus timing is measured here, not storage)."""

    def __init__(self) -> None:
        self.readings = 0

    async def reading(self, reading: Reading) -> None:  # noqa: ARG002 - the Sink protocol
        self.readings += 1

    async def alarm(self, change: AlarmChange) -> None:
        """Ignore alarms."""

    async def state(self, device: str, state: DeviceState, detail: str) -> None:
        """Ignore state changes."""

    def active_alarms(self, device: str) -> set[str]:  # noqa: ARG002
        return set()

    async def command_result(self, *_args: Any) -> None:
        """Ignore results."""

    def gnss_time(self, utc_ns: int) -> None:
        """Ignore time."""


async def bus_utilisation(seconds: float, *, dead_slave: bool) -> dict[str, float]:
    """Poll ten slaves on a wire-timed pty for ``seconds``; return utilisation figures."""
    units = {u: tilt_unit(1.0) for u in range(1, 11)}
    if dead_slave:
        units[10].fault = "dead"
    line = RtuLineSim(units, baud=BAUD)
    await line.start()
    cfg = ModbusRtuBus(name="line", type="modbus_rtu", port=line.path, baud=BAUD,
                       timeout_s=TIMEOUT_S, retries=0)
    bus = ModbusBus(cfg)
    drivers = [ManholeTiltModbusDriver(validate(ManholeTiltDevice, {
        "name": f"mh-{u}", "kind": "manhole_tilt", "transport": "modbus_rtu", "bus": "line",
        "unit_id": u, "poll_interval_s": 0.05,
        "asset": {**ASSET, "code": f"32050801060{u:05d}"}}), bus, timeout_s=1.0)
        for u in units]
    sink = CountingSink()
    await bus.read("warm", 1, 3, 0x3D, 4)  # open the port outside the measurement
    requests0, timeouts0 = bus.stats.requests, bus.stats.timeouts
    started = time.monotonic()
    tasks = [asyncio.create_task(d.run(sink), name=f"bench.{d.name}") for d in drivers]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    elapsed = time.monotonic() - started
    requests = bus.stats.requests - requests0
    timeouts = bus.stats.timeouts - timeouts0
    await bus.close()
    await line.stop()
    frame_chars = 8 + 5 + 2 * 4  # request + reply of a 4-register read
    ok_s = (frame_chars + 7) * line.char_s
    dead_s = (8 + 3.5) * line.char_s + TIMEOUT_S
    allowed_s = (requests - timeouts) * ok_s + timeouts * dead_s
    overruns = sum(d.stats.overruns for d in drivers)
    return {"utilisation_pct": 100 * allowed_s / elapsed,
            "useful_pct": 100 * (requests - timeouts) * ok_s / elapsed,
            "requests": requests, "timeouts": timeouts, "readings": sink.readings,
            "overruns": overruns, "elapsed_s": elapsed}


def _sim(port: int, model: str, count: int, delay_s: float = 0.0) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.sim_server", str(port), model,
                             str(count), str(delay_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    proc.stdout.readline()  # ready
    return proc


def _lamps(count: int, buses: int, poll_s: float) -> tuple[list[dict[str, Any]],
                                                           list[str]]:
    devices = [{"name": f"dev-{u:03d}", "kind": "streetlight", "transport": "modbus_tcp",
                "bus": f"sim{u % buses}", "unit_id": u, "model": "pzem004t",
                "poll_interval_s": poll_s,
                "asset": {"code": f"320508011800{u:04d}", "class": "0118",
                          "grid": "320508001002003", "name": f"device {u}"}}
               for u in range(1, count + 1)]
    return devices, [f"sim{b}" for b in range(buses)]


async def _count_points(port: int, points: list[int], stop: asyncio.Event) -> None:
    link = await subscribe(port, "bench-points", ["edge/v1/+/events"])
    try:
        while not stop.is_set():
            try:
                item = await link.next_inbound(0.5)
            except TimeoutError:
                continue
            body = json.loads(json.loads(item.payload)["body"])
            points[0] += sum(len(e.get("data", {})) for e in body["events"]
                             if e["type"] == "reading")
    finally:
        await link.close()


async def points_per_cpu_s(folder: Path, seconds: float, devices: int) -> dict[str, float]:
    """Run the agent on 100-register devices; return points delivered per CPU-second."""
    broker = Mosquitto(folder / "mq", free_port())
    broker.start()
    sim_port = free_port()
    sim = _sim(sim_port, "block100", devices)
    defs, bus_names = _lamps(devices, 4, 0.05)
    config = write_config(folder / "points", broker_port=broker.port, devices=defs,
                          buses=[{"name": b, "type": "modbus_tcp", "host": "127.0.0.1",
                                  "port": sim_port, "timeout_s": 1.0} for b in bus_names],
                          outbox={"commit_max_events": 500, "commit_max_wait_s": 0.02})
    points = [0]
    stop = asyncio.Event()
    counter = asyncio.create_task(_count_points(broker.port, points, stop))
    agent = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
        [sys.executable, "-m", "bench.block_agent", "--config", str(config), "--log-level",
         "WARNING"], env=agent_env(), cwd=ROOT)
    try:
        await asyncio.sleep(5.0)  # start-up and the first cycles
        cpu0, n0 = cpu_s(agent.pid), points[0]
        await asyncio.sleep(seconds)
        cpu1, n1 = cpu_s(agent.pid), points[0]
        rss = current_rss_mb(agent.pid)
    finally:
        agent.terminate()
        agent.wait(30)
        stop.set()
        await counter
        sim.terminate()
        sim.wait(10)
        broker.stop()
    return {"points_per_cpu_s": (n1 - n0) / max(cpu1 - cpu0, 1e-9),
            "points_per_s": (n1 - n0) / seconds, "agent_cpu_pct": 100 * (cpu1 - cpu0) / seconds,
            "rss_mb": rss}


async def overload(folder: Path, seconds: float) -> dict[str, float]:
    """Poll ten devices ten times faster than the link answers; sample the agent's RSS."""
    broker = Mosquitto(folder / "mq-overload", free_port())
    broker.start()
    sim_port = free_port()
    sim = _sim(sim_port, "pzem004t", 10, delay_s=0.1)  # the link serves 10 reads/s
    defs, bus_names = _lamps(10, 1, 0.1)  # the devices ask for 100 reads/s
    config = write_config(folder / "overload", broker_port=broker.port, devices=defs,
                          buses=[{"name": bus_names[0], "type": "modbus_tcp",
                                  "host": "127.0.0.1", "port": sim_port, "timeout_s": 1.0}])
    agent = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--log-level",
         "ERROR"], env=agent_env(), cwd=ROOT)
    samples: list[float] = []
    try:
        await asyncio.sleep(5.0)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(current_rss_mb(agent.pid))
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.5)  # one more status file (every 2 s)
        status = json.loads((config.parent / "state" / "status.json").read_text())
    finally:
        agent.terminate()
        agent.wait(30)
        sim.terminate()
        sim.wait(10)
        broker.stop()
    third = max(1, len(samples) // 3)
    growth = max(samples[-third:]) - min(samples[:third])
    overruns = sum(int(d.get("overruns", 0)) for d in status.get("devices", {}).values())
    polls = sum(int(d.get("polls_ok", 0)) for d in status.get("devices", {}).values())
    return {"overload_rss_growth_mb": growth, "overruns": overruns, "polls_ok": polls,
            "rss_first_mb": samples[0], "rss_last_mb": samples[-1]}


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the Modbus benchmark and print its table."""
    logging.getLogger("edge").setLevel(logging.ERROR)  # the dead slave's warning is expected
    bus_s = 5.0 if quick else 30.0
    healthy = asyncio.run(bus_utilisation(bus_s, dead_slave=False))
    dead = asyncio.run(bus_utilisation(bus_s, dead_slave=True))
    with workdir("modbus-") as folder:
        points = asyncio.run(points_per_cpu_s(folder, 6.0 if quick else 30.0,
                                              40 if quick else 100))
        load = asyncio.run(overload(folder, 6.0 if quick else 60.0))
    sbs = run_in_namespace(seconds=6.0 if quick else 60.0, outage_s=0.0)
    ratio = sbs["edge_readings_per_cpu_s"] / max(sbs["tbgw_readings_per_cpu_s"], 1e-9)
    data = {"bus_utilisation_pct": round(healthy["utilisation_pct"], 1),
            "bus_utilisation_dead_slave_pct": round(dead["utilisation_pct"], 1),
            "bus_useful_dead_slave_pct": round(dead["useful_pct"], 1),
            "edge_readings_per_cpu_s": round(sbs["edge_readings_per_cpu_s"]),
            "tbgw_readings_per_cpu_s": round(sbs["tbgw_readings_per_cpu_s"]),
            "edge_rss_mb": round(sbs["edge_rss_mb"], 1),
            "tbgw_rss_mb": round(sbs["tbgw_rss_mb"], 1),
            "points_per_cpu_s": round(points["points_per_cpu_s"]),
            "points_per_s": round(points["points_per_s"]),
            "overload_rss_growth_mb": round(load["overload_rss_growth_mb"], 1),
            "overruns": load["overruns"]}
    report("modbus", [
        Row(f"RS-485 9,600 bd, 10 slaves ({healthy['requests']:.0f} requests)",
            round(healthy["utilisation_pct"], 1), "% of wire", "≥ 90 %",
            healthy["utilisation_pct"] >= 90),
        Row(f"  same, one dead slave ({dead['timeouts']:.0f} timeouts)",
            round(dead["utilisation_pct"], 1), "% of wire", "≥ 90 %",
            dead["utilisation_pct"] >= 90),
        Row("  dead slave: useful replies only", round(dead["useful_pct"], 1), "% of wire"),
        Row("TCP 100 dev x 10 reg @1 Hz: edge", round(sbs["edge_readings_per_cpu_s"]),
            "readings/CPU-s", "≥ 3x tbgw", ratio >= 3),
        Row("  thingsboard-gateway 3.8.2", round(sbs["tbgw_readings_per_cpu_s"]),
            "readings/CPU-s"),
        Row("  edge RSS", round(sbs["edge_rss_mb"], 1), "MiB", "≤ ½ tbgw",
            sbs["edge_rss_mb"] <= sbs["tbgw_rss_mb"] / 2),
        Row("  tbgw RSS", round(sbs["tbgw_rss_mb"], 1), "MiB"),
        Row("points end to end (100-register blocks)", round(points["points_per_cpu_s"]),
            "points/CPU-s", "≥ 166,000", points["points_per_cpu_s"] >= 166_000),
        Row("  points delivered per second", round(points["points_per_s"]), "points/s"),
        Row("overload 10x: RSS growth", round(load["overload_rss_growth_mb"], 1), "MiB",
            "flat (≤ 2)", load["overload_rss_growth_mb"] <= 2.0),
        Row("  overruns counted", load["overruns"], "ticks", "> 0", load["overruns"] > 0),
    ], data, as_json=as_json)
    return data
