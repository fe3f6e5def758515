"""``python -m bench uplink``: backlog drain rate to a local mosquitto, alarm latency while the
backlog drains, reconnect time after a broker restart, and the agent's RSS — the real agent
(``edge run``) against a tilt simulator that keeps raising and clearing alarms."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    agent_env,
    cpu_s,
    current_rss_mb,
    report,
    rss_mb,
    subscribe,
    workdir,
    write_config,
)
from bench.outbox import ASSET, build_backlog
from edge.clock import parse_rfc3339
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.tilt import set_tilt_local


class Subscriber:
    """Counts events by seq and records alarm latency (read time → arrival)."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.backlog_seen: set[int] = set()
        self.first_backlog_at: float | None = None
        self.drained_at: float | None = None
        self.alarm_latency_s: list[float] = []
        self.births: list[float] = []
        self.first_live_at: float | None = None  # the first reading read after the start

    def handle(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        if topic.endswith("/state"):
            state = json.loads(payload)  # signed like a batch (docs/decisions.md D39)
            if json.loads(state.get("body", "{}")).get("online"):
                self.births.append(now)
            return
        wall_ns = time.time_ns()
        body = json.loads(json.loads(payload)["body"])
        for event in body["events"]:
            if event["seq"] <= self.backlog:
                if self.first_backlog_at is None:
                    self.first_backlog_at = now
                self.backlog_seen.add(event["seq"])
                if len(self.backlog_seen) == self.backlog:
                    self.drained_at = now
            elif event["type"] == "alarm":
                self.alarm_latency_s.append((wall_ns - parse_rfc3339(event["ts"])) / 1e9)
            elif event["type"] == "reading" and self.first_live_at is None:
                self.first_live_at = now


async def pump(link: MqttLink, sub: Subscriber) -> None:
    """Feed messages to the subscriber until cancelled."""
    while True:
        item = await link.inbound.get()
        sub.handle(item.topic, item.payload)


async def connect_subscriber(port: int) -> MqttLink:
    """Subscribe to every gateway's events and state (retrying while the broker starts)."""
    return await subscribe(port, "bench-uplink-sub", ["edge/v1/+/events", "edge/v1/+/state"])


async def measure(folder: Path, backlog: int) -> dict[str, Any]:
    """Run the agent on a backlog; return the measurements."""
    broker = Mosquitto(folder / "mq", free_port())
    broker.start()
    sim_port = free_port()
    unit = tilt_unit()
    sim = ModbusTcpSim({80: unit}, sim_port)
    await sim.start()
    config = write_config(
        folder, broker_port=broker.port,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[{"name": "manhole-12", "kind": "manhole_tilt", "transport": "modbus_tcp",
                  "bus": "covers", "unit_id": 80, "poll_interval_s": 0.05,
                  "asset": {"code": ASSET.code, "class": ASSET.cls, "grid": ASSET.grid,
                            "name": ASSET.name},
                  "alarms": {"cover_open": {"threshold": 15, "clear_below": 10,
                                            "raise_after": 1, "clear_after": 1}}}],
        uplink={"replay_events_per_s": 1_000_000, "reconnect_base_s": 0.2,
                "reconnect_cap_s": 1.0},
        outbox={"quota_bytes": 1 << 31})
    (folder / "state").mkdir(exist_ok=True)
    build_backlog(folder / "state" / "outbox.db", backlog)
    sub = Subscriber(backlog)
    link = await connect_subscriber(broker.port)
    pumping = asyncio.create_task(pump(link, sub))
    started = time.monotonic()
    agent = subprocess.Popen(  # noqa: ASYNC220 - fork/exec, no waiting
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config),
         "--log-level", "WARNING"], stderr=subprocess.DEVNULL, env=agent_env())
    peak_rss = 0.0
    rss_samples: list[float] = []
    try:
        deadline = time.monotonic() + 600
        tilted = False
        while sub.drained_at is None and time.monotonic() < deadline:
            tilted = not tilted
            set_tilt_local(unit, 40.0 if tilted else 0.0)  # an alarm raise or clear
            await asyncio.sleep(0.5)
            rss_samples.append(current_rss_mb(agent.pid))
            peak_rss = max(peak_rss, rss_samples[-1])
        drain_cpu_s = cpu_s(agent.pid)
        drain_s = (sub.drained_at or time.monotonic()) - (sub.first_backlog_at or 0)
        latencies = list(sub.alarm_latency_s)
        # broker restart: time from the broker being back to the agent's new birth message
        pumping.cancel()
        await link.close()
        broker.stop()
        await asyncio.sleep(1.0)
        broker.start()
        back = time.monotonic()
        births_before = len(sub.births)
        link = await connect_subscriber(broker.port)
        pumping = asyncio.create_task(pump(link, sub))
        while len(sub.births) == births_before and time.monotonic() - back < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        reconnect_s = (sub.births[-1] - back) if len(sub.births) > births_before else float("nan")
        peak_rss = max(peak_rss, rss_mb(agent.pid))
    finally:
        agent.terminate()
        agent.wait(30)
        pumping.cancel()
        await link.close()
        await sim.stop()
        broker.stop()
    return {"drain_events_per_s": len(sub.backlog_seen) / drain_s if drain_s > 0 else 0.0,
            "drained": len(sub.backlog_seen), "drain_s": drain_s, "drain_cpu_s": drain_cpu_s,
            "latencies": latencies, "reconnect_s": reconnect_s, "rss_mb": peak_rss,
            "first_live_reading_s": (sub.first_live_at or float("nan")) - started,
            "rss_samples": rss_samples}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] \
        if len(values) > 1 else values[0]


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the uplink benchmark and print its table."""
    backlog = 100_000 if quick else 1_000_000
    with workdir("uplink-") as folder:
        m = asyncio.run(measure(folder, backlog))
    p50, p99 = _pct(m["latencies"], 50), _pct(m["latencies"], 99)
    data = {"drain_events_per_s": round(m["drain_events_per_s"]),
            "alarm_latency_p50_s": round(p50, 3), "alarm_latency_p99_s": round(p99, 3),
            "reconnect_s": round(m["reconnect_s"], 2), "rss_mb": round(m["rss_mb"], 1),
            "backlog_events": backlog, "alarms_measured": len(m["latencies"])}
    report("uplink", [
        Row(f"backlog drained ({m['drained']:,} of {backlog:,})", round(m["drain_s"], 1), "s"),
        Row("drain rate to local mosquitto", round(m["drain_events_per_s"]), "events/s",
            "≥ 20,000", m["drain_events_per_s"] >= 20_000),
        Row("agent CPU during the drain", round(m["drain_cpu_s"], 1), "s"),
        Row(f"alarm latency p50 ({len(m['latencies'])} alarms)", round(p50, 3), "s"),
        Row("alarm latency p99 while draining", round(p99, 3), "s", "≤ 1 s", p99 <= 1.0),
        Row("reconnect after broker restart", round(m["reconnect_s"], 2), "s"),
        Row("agent RSS (peak)", round(m["rss_mb"], 1), "MiB"),
    ], data, as_json=as_json)
    return data
