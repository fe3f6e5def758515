"""``python -m bench serial``: NMEA sentences parsed per CPU-second, latency from a sentence on
a pty to its position event committed in the outbox (p99), and the agent's RSS with 20 GPS
receivers and 20 loudspeakers attached."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any

from bench.common import Row, current_rss_mb, report, workdir, write_config
from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import Clock
from edge.config_loader import load_config, validate
from edge.drivers._codecs import nmea
from edge.drivers.base import Reading
from edge.drivers.coverage import CoverageTracker
from edge.drivers.gps import GpsSerialDriver
from edge.kinds.gps import WorkConfig
from edge.sink import EventSink
from edge.transports.serial import SerialPort
from hil.broker import Mosquitto, free_port
from hil.sims.serial_sims import GpsSim, TtsSim


def work_roads() -> WorkConfig:
    """A sweeper's district: its route north along one street, 5 parallel streets 30 m apart
    and 20 cross streets every 55 m (the route crosses them all: grid lookups, no sweep)."""
    lat0, lon0 = 31.3, 120.6
    deg_e = 1 / (111_320 * math.cos(math.radians(lat0)))
    roads: list[dict[str, Any]] = [
        {"id": f"ns-{k}", "width_m": 6.0,
         "line": [[lat0, lon0 + 30 * k * deg_e], [lat0 + 0.0099, lon0 + 30 * k * deg_e]]}
        for k in range(-2, 3)]
    roads += [{"id": f"ew-{k}", "width_m": 6.0,
               "line": [[lat0 + k * 55 / 111_320, lon0 - 90 * deg_e],
                        [lat0 + k * 55 / 111_320, lon0 + 90 * deg_e]]} for k in range(20)]
    return validate(WorkConfig, {"shift": {"start": "00:00", "end": "23:59"},
                                 "roads": roads, "min_speed_kmh": 2, "max_speed_kmh": 20})


def parse_rate(sentences: int, *, coverage: bool = False) -> float:
    """Sentences per CPU-second through checksum, split and fix assembly; with ``coverage``,
    every fix also goes through the work coverage tracker (issue 18 B), sweeping a street."""
    start = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    lines = []
    knots = 5.0 if coverage else 20.0  # 9 km/h: working speed, every fix sweeps
    for i in range(1000):
        when = start + dt.timedelta(seconds=i)
        lat = 31.3 + i * 1e-5
        lines.append(nmea.rmc(when, lat, 120.6, knots, 0.0 if coverage else 90.0))
        north = f"31{(lat - 31) * 60:09.6f}" if coverage else "3118.0000"  # the same fix
        body = (f"GNGGA,{when:%H%M%S}.00,{north},N,12036.0000,E,1,08,1.0,10.0,M,0.0,M,,")
        lines.append(f"${body}*{nmea.checksum(body)}\r\n")
    tracker = nmea.NmeaTracker()
    cover = CoverageTracker(work_roads(), utc_offset_h=0) if coverage else None
    now_s = start.timestamp() + 3600
    fixes = 0
    cpu0 = time.process_time()
    for n in range(sentences):
        fix = tracker.feed(nmea.parse_sentence(lines[n % len(lines)]))
        if fix is not None and cover is not None:
            fixes += 1
            cover.on_fix(fix.lat, fix.lon, fix.speed_kmh, now_s + fixes, trusted=True)
    rate = sentences / (time.process_time() - cpu0)
    if cover is not None:  # the sweep really ran: the street along the route is covered
        report = cover.report(now_s + fixes)
        assert report is not None
        assert report["roads"][2]["covered_pct"] > 90, report["roads"][2]
    return rate


class TimingSink(EventSink):
    """The agent's sink, noting when each position was committed."""

    committed: dict[str, float]

    async def reading(self, reading: Reading) -> None:
        await super().reading(reading)
        self.committed[str(reading.values["fix_utc"])] = time.monotonic()


async def pty_latency(folder: Path, fixes: int) -> list[float]:
    """Write RMC sentences on a pty at 10 Hz; return sentence → committed latencies."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    config = load_config(write_config(folder, broker_port=1, buses=[], devices=[
        {"name": "gps-1", "kind": "gps", "transport": "serial", "port": path,
         "min_distance_m": 0, "max_interval_s": 1,
         "asset": {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
                   "name": "truck"}}]))
    outbox = AsyncOutbox(Outbox(folder / "latency.db"))
    await outbox.open()
    writer = asyncio.create_task(outbox.run())
    sink = TimingSink(config.config, outbox, Clock("system"), {})
    sink.committed = {}
    driver = GpsSerialDriver(config.config.devices[0], SerialPort(path, 9600))  # type: ignore[arg-type]
    task = asyncio.create_task(driver.run(sink))
    written: dict[str, float] = {}
    try:
        await asyncio.sleep(0.3)
        start = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
        for i in range(fixes):
            when = start + dt.timedelta(seconds=i)
            os.write(master, nmea.rmc(when, 31.3 + i * 1e-4, 120.6, 20.0, 90.0).encode())
            written[when.isoformat()] = time.monotonic()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await outbox.drain()
        await outbox.close()
        os.close(master)
        os.close(slave)
    return [sink.committed[k] - t for k, t in written.items() if k in sink.committed]


async def fleet_rss(folder: Path, seconds: float) -> float:
    """The agent with 20 GPS receivers and 20 loudspeakers (simulated) attached."""
    broker = Mosquitto(folder / "mq", free_port())
    broker.start()
    gps = [GpsSim(free_port(), rate_hz=1) for _ in range(20)]
    tts = [TtsSim(free_port()) for _ in range(20)]
    sims: list[GpsSim | TtsSim] = [*gps, *tts]
    for sim in sims:
        await sim.start()
    devices: list[dict[str, Any]] = []
    for i, sim in enumerate(gps):
        devices.append({"name": f"gps-{i}", "kind": "gps", "transport": "serial",
                        "port": f"socket://127.0.0.1:{sim.port}", "asset": {
                            "code": f"32050821900{i:05d}", "class": "2190",
                            "grid": "320508001002003", "name": f"truck {i}"}})
    for i, speaker in enumerate(tts):
        devices.append({"name": f"speaker-{i}", "kind": "loudspeaker", "transport": "serial",
                        "port": f"socket://127.0.0.1:{speaker.port}", "poll_interval_s": 2,
                        "asset": {"code": f"32050821050{i:05d}", "class": "2105",
                                  "grid": "320508001002003", "name": f"speaker {i}"}})
    config = write_config(folder / "fleet", broker_port=broker.port, buses=[], devices=devices)
    agent = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--log-level",
         "WARNING"], stderr=subprocess.DEVNULL)
    peak = 0.0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            peak = max(peak, current_rss_mb(agent.pid))
    finally:
        agent.terminate()
        agent.wait(30)
        for sim in sims:
            await sim.stop()
        broker.stop()
    return peak


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the serial benchmark and print its table."""
    rate = parse_rate(100_000 if quick else 500_000)
    rate_cov = parse_rate(100_000 if quick else 500_000, coverage=True)
    with workdir("serial-") as folder:
        latencies = asyncio.run(pty_latency(folder, 100 if quick else 300))
        rss = asyncio.run(fleet_rss(folder, 15 if quick else 60))
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98] if latencies else \
        float("nan")
    data = {"nmea_sentences_per_cpu_s": round(rate),
            "nmea_sentences_per_cpu_s_coverage_on": round(rate_cov),
            "position_latency_p99_s": round(p99, 4),
            "position_latency_p50_s": round(statistics.median(latencies), 4),
            "rss_mb": round(rss, 1), "positions_measured": len(latencies)}
    report("serial", [
        Row("NMEA sentences parsed per CPU-second", round(rate), "sentences",
            "≥ 50,000", rate >= 50_000),
        Row("  with work coverage on (25 streets, every fix sweeping)", round(rate_cov),
            "sentences", "≥ 50,000", rate_cov >= 50_000),
        Row(f"pty → outbox p50 ({len(latencies)} fixes)", round(statistics.median(latencies), 4),
            "s"),
        Row("pty → outbox p99", round(p99, 4), "s"),
        Row("agent RSS, 20 GPS + 20 speakers", round(rss, 1), "MiB"),
    ], data, as_json=as_json)
    return data
