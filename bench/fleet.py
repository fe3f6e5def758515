"""``python -m bench fleet`` (reliability.md R9): 500 gateways — each its own outbox (SQLite,
synchronous=FULL) and MQTT uplink, asyncio, 50 per process — against one mosquitto on loopback.

Each gateway queues a backlog while the broker is down; the broker is restarted. Measured: the
reconnect attempts per one-second bucket after the restart (share of the fleet), the replay
rate of each gateway against its configured ``replay_events_per_s``, and loss (every queued
event's id must reach the subscriber).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import Row, report, subscribe, workdir
from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import TimeQuality
from edge.config import UplinkConfig
from edge.config_loader import validate
from edge.model import Event, EventType
from edge.security.signing import Ed25519PrivateKey, Signer
from edge.transports.mqtt import MqttLink
from edge.uplink.mqtt import MqttUplink
from hil.broker import Mosquitto, free_port

REPLAY_PER_S = 20.0
ROOT = Path(__file__).resolve().parents[1]


class Arrivals:
    """Event ids seen by the platform side, and when, per gateway."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.times: dict[str, list[float]] = {}

    def handle(self, topic: str, payload: bytes) -> None:
        gw = topic.split("/")[2]
        now = time.monotonic()
        body = json.loads(json.loads(payload)["body"])
        for event in body["events"]:
            if event["id"] not in self.ids:
                self.ids.add(event["id"])
                self.times.setdefault(gw, []).append(now)


async def _pump(link: MqttLink, arrivals: Arrivals) -> None:
    while True:
        item = await link.inbound.get()
        arrivals.handle(item.topic, item.payload)


async def _subscriber(port: int, arrivals: Arrivals) -> tuple[MqttLink, asyncio.Task[None]]:
    link = await subscribe(port, "bench-fleet-sub", ["edge/v1/+/events"])
    return link, asyncio.create_task(_pump(link, arrivals), name="bench.fleet.sub")


def _events(n: int) -> list[Event]:
    return [Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device="dev",
                  data={"n": i}) for i in range(n)]


# paho waits in select() (sockets must stay below fd 1024), and 125 paho threads in one process
# contend for its GIL until CONNACKs take > 10 s: 50 gateways per process, as 10 cabinets' worth
WORKERS = 10


async def _read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await proc.stdout.readline()).decode().strip()


async def _tell(procs: list[asyncio.subprocess.Process], line: str) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{line}\n".encode())
        await proc.stdin.drain()


async def worker(folder: Path, port: int, first: int, count: int, backlog: int) -> None:
    """One process of the fleet: ``count`` gateways; steps driven over stdin/stdout."""
    cfg = validate(UplinkConfig, {
        "host": "127.0.0.1", "port": port, "tls": False, "keepalive_s": 30,
        "reconnect_base_s": 1.0, "reconnect_cap_s": 60.0,  # reconnect_spread_s: the default
        "stable_after_s": 5.0, "boot_delay_max_s": 5.0, "replay_events_per_s": REPLAY_PER_S,
        "max_inflight": 5, "batch_max_events": 50})
    outboxes: list[AsyncOutbox] = []
    uplinks: list[MqttUplink] = []
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    for g in range(first, first + count):
        outbox = AsyncOutbox(Outbox(folder / f"gw{g:03d}.db"), commit_max_wait_s=0.05)
        await outbox.open()
        outboxes.append(outbox)
        uplink = MqttUplink(cfg, gateway_id=f"gw-{g:03d}", boot_id="bench",
                            signer=Signer(Ed25519PrivateKey.generate()), outbox=outbox,
                            base_dir=folder)
        uplinks.append(uplink)
        tasks.append(asyncio.create_task(outbox.run(), name=f"outbox.gw{g}"))
        tasks.append(asyncio.create_task(uplink.run(), name=f"uplink.gw{g}"))  # boot jitter
    produced: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while sum(u.stats.connected for u in uplinks) < count and \
                time.monotonic() < deadline:  # noqa: ASYNC110 - flags set by other tasks
            await asyncio.sleep(0.2)
        print(f"connected {sum(u.stats.connected for u in uplinks)}", flush=True)
        await reader.readline()  # "outage": the broker is down now
        for outbox in outboxes:
            events = _events(backlog)
            await outbox.put_many(events)
            produced += [e.id for e in events]
        marks = [len(u.stats.attempt_log) for u in uplinks]
        print("queued", flush=True)
        await reader.readline()  # "restarted"
        deadline = time.monotonic() + 300  # late is not lost: wait for stragglers
        while time.monotonic() < deadline:
            depths = [(await o.stats())["depth"] for o in outboxes]
            if not any(depths):
                break
            await asyncio.sleep(1.0)
        attempts = [t for u, n in zip(uplinks, marks, strict=True)
                    for t in u.stats.attempt_log[max(0, n - 1):]]
        errors = Counter(u.stats.last_error for u in uplinks if u.stats.last_error)
        print(json.dumps({"attempts": attempts, "produced": produced, "errors": errors}),
              flush=True)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for outbox in outboxes:
            await outbox.close()


async def measure(folder: Path, gateways: int, backlog: int) -> dict[str, Any]:
    """Run the fleet (in WORKERS processes) through a broker restart; return the figures."""
    broker = Mosquitto(folder / "mq", free_port())
    broker.start()
    arrivals = Arrivals()
    link, pump = await _subscriber(broker.port, arrivals)
    per = gateways // WORKERS
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fleet", "--worker", str(folder), str(broker.port),
        str(w * per), str(per), str(backlog), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, limit=64 << 20) for w in range(WORKERS)]
    try:
        connected = 0
        print("fleet: waiting for connections", file=sys.stderr, flush=True)
        for p in procs:
            connected += int((await _read_line(p)).split()[1])
        await asyncio.sleep(5.5)  # stable: every backoff is reset
        dropped = time.monotonic()
        broker.stop()
        pump.cancel()
        await link.close()
        await _tell(procs, "outage")
        for p in procs:
            await _read_line(p)  # queued
        await asyncio.sleep(2.0)
        restart = time.monotonic()
        broker.start()
        link, pump = await _subscriber(broker.port, arrivals)
        await _tell(procs, "restarted")
        print("fleet: restarted, waiting for the drain", file=sys.stderr, flush=True)
        results = [json.loads(await _read_line(p)) for p in procs]
        await asyncio.sleep(2.0)  # the last PUBLISHes reach the subscriber
        drain_s = time.monotonic() - restart
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            await p.wait()
        pump.cancel()
        await link.close()
        broker.stop()
    produced = {i for r in results for i in r["produced"]}
    errors = sum((Counter(r["errors"]) for r in results), Counter())
    attempts = [t for r in results for t in r["attempts"] if t >= dropped]
    buckets = Counter(int(t - dropped) for t in attempts)  # seconds since the fleet lost it
    rates = []
    for times in arrivals.times.values():
        late = [t for t in times if t >= restart]
        if len(late) > 2 * REPLAY_PER_S:  # the bucket lets one second's worth go at once
            rates.append((len(late) - REPLAY_PER_S) / max(late[-1] - late[0], 1e-3))
    return {"gateways": gateways, "connected_first": connected, "backlog_each": backlog,
            "histogram": dict(sorted(buckets.items())),
            "max_bucket_share": max(buckets.values(), default=0) / gateways,
            "lost": len(produced - arrivals.ids), "produced": len(produced),
            "max_replay_per_s": max(rates, default=0.0), "drain_s": drain_s,
            "errors": dict(errors.most_common(5)),
            "last_arrival_s": max((t[-1] for t in arrivals.times.values()), default=restart)
            - restart}


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the fleet benchmark and print its table and histogram."""
    with workdir("fleet-") as folder:
        m = asyncio.run(measure(folder, 500, 100 if quick else 400))
    print("reconnect attempts per second after the broker went down (restarted at +2 s):")
    for second, count in m["histogram"].items():
        print(f"  {second:+4d} s {count:5d} {'#' * round(60 * count / m['gateways'])}")
    data = {"max_bucket_share": round(m["max_bucket_share"], 3), "lost": m["lost"],
            "gateways": m["gateways"], "max_replay_per_s": round(m["max_replay_per_s"], 1),
            "produced": m["produced"]}
    report("fleet", [
        Row("gateways connected (boot jitter 5 s)", m["connected_first"], f"of {m['gateways']}"),
        Row("busiest second of reconnects (spread 20 s)", round(100 * m["max_bucket_share"], 1),
            "% of fleet", "≤ 10 %", m["max_bucket_share"] <= 0.10),
        Row(f"replay rate, fastest gateway (limit {REPLAY_PER_S:g})",
            round(m["max_replay_per_s"], 1), "events/s", f"≤ {REPLAY_PER_S * 1.1:g}",
            m["max_replay_per_s"] <= REPLAY_PER_S * 1.1),
        Row(f"lost (of {m['produced']:,} queued during the outage)", m["lost"], "events", "0",
            m["lost"] == 0),
        Row("all delivered after the restart", round(m["drain_s"], 1), "s"),
    ], data, as_json=as_json)
    return data


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    f, port, first, count, backlog = sys.argv[2:7]
    asyncio.run(worker(Path(f), int(port), int(first), int(count), int(backlog)))
