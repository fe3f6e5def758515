"""``python -m bench outbox``: commit rates, TinyDB on the same disk, bytes per event, and the
agent's start-up with a large backlog (first live reading forwarded to a local mosquitto)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Row, current_rss_mb, report, rss_mb, workdir, write_config
from edge.buffer.gaps import make_gap_factory
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality
from edge.model import Asset, Event, EventType
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit

ASSET = Asset("3205080106000123", "0106", "320508001002003", "路灯井盖 干将东路 12号",
              31.3105, 120.6302)


def reading(i: int) -> Event:
    """A typical ~200-byte telemetry event."""
    return Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device="manhole-12",
                 data={"tilt_x_deg": 1.25, "tilt_y_deg": -0.5, "n": i})


def commit_rates(folder: Path, *, batched_events: int, single_events: int) -> dict[str, float]:
    """Events per second committed in batches of 100, and one per commit (FULL, fsync)."""
    store = Outbox(folder / "rates.db", quota_bytes=1 << 30)
    store.open()
    start = time.perf_counter()
    for i in range(0, batched_events, 100):
        store.append([reading(i + k) for k in range(100)])
    batched = batched_events / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(single_events):
        store.append([reading(i)])
    single = single_events / (time.perf_counter() - start)
    store.close()
    return {"batched": batched, "single": single}


def tinydb_rate(folder: Path, records: int) -> float:
    """TinyDB 4.x default JSON storage, one insert per record (as measured in decisions.md)."""
    from tinydb import TinyDB  # noqa: PLC0415 - bench-only dependency

    db = TinyDB(folder / "tiny.json")
    payload = reading(0).to_wire(1)  # the same document the outbox stores
    start = time.perf_counter()
    for i in range(records):
        db.insert({**payload, "n": i})
    rate = records / (time.perf_counter() - start)
    db.close()
    return rate


def disk_per_event(folder: Path, events: int) -> tuple[float, float]:
    """(bytes on disk per event, payload bytes per event) for ~200-byte events."""
    store = Outbox(folder / "size.db", quota_bytes=1 << 30)
    store.open()
    payload = 0
    for i in range(0, events, 1000):
        batch = [Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                       device="manhole-12", data={"tilt_x_deg": 1.25, "tilt_y_deg": -0.5,
                                                  "battery_v": 3.61, "n": i + k})
                 for k in range(1000)]
        store.append(batch)
    payload = sum(len(doc) for doc in store.export())
    store.close()  # checkpoints and truncates the WAL
    size = sum(p.stat().st_size for p in folder.glob("size.db*") if p.is_file()
               and not p.name.endswith((".lock", ".seq", ".ballast")))
    return size / events, payload / events


def build_backlog(path: Path, events: int) -> None:
    """Queue ``events`` telemetry events as a previous run would have left them."""
    store = Outbox(path, quota_bytes=1 << 31, gap_factory=make_gap_factory(Clock("system")))
    store.open()
    for i in range(0, events, 10_000):
        store.append([reading(i + k) for k in range(min(10_000, events - i))])
    store.close()


async def first_live_reading(folder: Path, backlog: int) -> dict[str, float]:
    """Start the agent on a store holding ``backlog`` events; time its first live reading."""
    broker = Mosquitto(folder / "mq", free_port())
    broker.start()
    sim_port = free_port()
    sim = ModbusTcpSim({80: tilt_unit()}, sim_port)
    await sim.start()
    config = write_config(
        folder, broker_port=broker.port,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[{"name": "manhole-12", "kind": "manhole_tilt", "transport": "modbus_tcp",
                  "bus": "covers", "unit_id": 80, "poll_interval_s": 0.5,
                  "asset": {"code": ASSET.code, "class": ASSET.cls, "grid": ASSET.grid,
                            "name": ASSET.name}}],
        outbox={"quota_bytes": 1 << 31})
    (folder / "state").mkdir(exist_ok=True)
    build_backlog(folder / "state" / "outbox.db", backlog)
    sub = MqttLink(host="127.0.0.1", port=broker.port, client_id="bench-sub", protocol="5",
                   keepalive_s=30, connect_timeout_s=5, tls=None, inbound_max=10_000_000)
    await sub.connect()
    await sub.subscribe("edge/v1/+/events")
    await sub.subscribe("edge/v1/+/state")
    started = time.monotonic()
    agent = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config),
         "--log-level", "WARNING"], stderr=subprocess.DEVNULL)
    online_s = live_s = None
    peak_rss = 0.0
    try:
        deadline = started + 120
        while live_s is None and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(0.5):
                    item = await sub.inbound.get()
            except TimeoutError:
                continue
            peak_rss = max(peak_rss, current_rss_mb(agent.pid))
            if item.topic.endswith("/state") and online_s is None:
                online_s = time.monotonic() - started
            elif item.topic.endswith("/events"):
                body = json.loads(json.loads(item.payload)["body"])
                if any(e["seq"] > backlog for e in body["events"]):
                    live_s = time.monotonic() - started
        peak_rss = max(peak_rss, rss_mb(agent.pid))
    finally:
        agent.terminate()
        agent.wait(30)
        await sub.close()
        await sim.stop()
        broker.stop()
    return {"start_s": online_s or float("nan"), "first_live_reading_s": live_s or float("nan"),
            "rss_mb": peak_rss}


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the outbox benchmark and print its table."""
    with workdir("outbox-") as folder:
        rates = commit_rates(folder, batched_events=20_000 if quick else 100_000,
                             single_events=200 if quick else 1_000)
        tiny = tinydb_rate(folder, 1_000 if quick else 3_000)
        disk, payload = disk_per_event(folder, 20_000 if quick else 100_000)
        backlog = 200_000 if quick else 1_000_000
        live = asyncio.run(first_live_reading(folder, backlog))
    data = {
        "batched_commits_per_s": round(rates["batched"]),
        "single_commits_per_s": round(rates["single"]),
        "tinydb_inserts_per_s": round(tiny, 1),
        "disk_bytes_per_event": round(disk, 1),
        "payload_bytes_per_event": round(payload, 1),
        "first_live_reading_s": round(live["first_live_reading_s"], 2),
        "agent_start_s": round(live["start_s"], 2),
        "backlog_events": backlog,
        "rss_mb": round(live["rss_mb"], 1),
    }
    ratio = rates["batched"] / tiny
    report("outbox", [
        Row("batched commits (100/commit, fsync)", round(rates["batched"]), "events/s"),
        Row("single-event commits", round(rates["single"]), "events/s"),
        Row("TinyDB inserts (same disk)", round(tiny, 1), "inserts/s"),
        Row("batched vs TinyDB", round(ratio, 1), "x", "≥ 100x", ratio >= 100),
        Row("bytes on disk per event", round(disk, 1), "bytes"),
        Row("payload bytes per event", round(payload, 1), "bytes"),
        Row("disk / payload", round(disk / payload, 2), "x", "≤ 1.5x", disk / payload <= 1.5),
        Row("agent start (birth message)", round(live["start_s"], 2), "s"),
        Row(f"first live reading ({backlog:,} queued)", round(live["first_live_reading_s"], 2),
            "s", "≤ 10 s", live["first_live_reading_s"] <= 10),
        Row("agent RSS (peak)", round(live["rss_mb"], 1), "MiB"),
    ], data, as_json=as_json)
    return data
