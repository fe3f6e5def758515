"""``python -m bench platform`` (issue 18 A): the receiver tier on PostgreSQL, measured.

Two receiver processes (``python -m hil.receiver``) share one subscription
(``$share/platform/edge/v1/+/events``) on a private mosquitto and write to one private
PostgreSQL (initdb in a temporary folder, fsync on). 200 simulated gateways — each its own
Ed25519 key, seq and signed batches, readings, positions, alarm raises and clears — publish
through the broker; the receivers verify, validate and store.

Phase 1 (throughput): every batch published as fast as the broker takes them; receiver 1 is
killed -9 when 40 % is stored and started again (same client id: the broker resends what it
had not acknowledged). Measured: sustained events/s from first publish to last commit, stored
duplicates (rows sharing a (gw, id), cases sharing an alarm_id), lost events, whether case
numbers are dense. Phase 2 (latency): batches paced at half the phase-1 rate; p99 of alarm
publish → case row committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Row, cpu_s, report, workdir
from edge.clock import TimeQuality
from edge.model import Alarm, Asset, Event, EventType, encode_batch, encode_event
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port
from hil.receiver.pg_server import PrivatePostgres
from hil.receiver.pg_store import PgReceiverStore, create_database

GATEWAYS = 200
BATCH_EVENTS = 50  # a gateway's batch under load (replay after an outage: up to 200)
PUBLISHERS = 4  # MQTT connections the simulated gateways share
WINDOW = 400  # batches in flight to the broker
GOAL_EVENTS_PER_S = 20_000


class Fleet:
    """The simulated gateways: keys, seqs, and their signed batches."""

    def __init__(self, n: int) -> None:
        self.gws = [f"gw-320508-{i:04d}" for i in range(1, n + 1)]
        self.keys = {gw: Ed25519PrivateKey.generate() for gw in self.gws}
        self.signers = {gw: Signer(k) for gw, k in self.keys.items()}
        self.seq = dict.fromkeys(self.gws, 0)
        self.batch_no = dict.fromkeys(self.gws, 0)
        self.open_alarms: dict[str, list[str]] = {gw: [] for gw in self.gws}
        self.alarms = 0

    def registry(self) -> dict[str, str]:
        """Return gateway id → public key hex (the receivers' --keys file)."""
        return {gw: raw_public_key(k.public_key()).hex() for gw, k in self.keys.items()}

    def batch(self, gw: str, n_events: int, *, alarm: bool) -> tuple[bytes, list[str]]:
        """Return one signed batch of ``gw`` and the alarm ids it raises."""
        index = int(gw.rsplit("-", 1)[1])
        asset = Asset(f"320508010600{index:04d}", "0106", "320508001002003",
                      f"井盖 干将东路 {index}号", 31.3 + index / 1e4, 120.6 + index / 1e4)
        now = time.time_ns()
        events: list[Event] = []
        raised: list[str] = []
        for k in range(n_events):
            if alarm and k == 0:
                self.alarms += 1
                alarm_id = f"{asset.code}:cover_open:{self.alarms}"
                raised.append(alarm_id)
                self.open_alarms[gw].append(alarm_id)
                events.append(Event(EventType.ALARM, 0, now, TimeQuality.SYNCED,
                                    device="manhole-1", asset=asset,
                                    alarm=Alarm("cover_open", "raised", alarm_id, 1, 38.5, 15.0,
                                                "deg"), data={"tilt_x_deg": 38.5}))
            elif k == 1 and len(self.open_alarms[gw]) > 1:
                old = self.open_alarms[gw].pop(0)  # the one before clears now
                events.append(Event(EventType.ALARM, 1, now, TimeQuality.SYNCED,
                                    device="manhole-1", asset=asset,
                                    alarm=Alarm("cover_open", "cleared", old, 1, 2.0, 15.0,
                                                "deg"), data={"tilt_x_deg": 2.0}))
            elif k % 10 == 5:
                events.append(Event(EventType.POSITION, 2, now, TimeQuality.SYNCED,
                                    device="truck-1", asset=asset,
                                    data={"lat": 31.3 + k / 1e5, "lon": 120.6, "speed_kmh": 23.5}))
            else:
                events.append(Event(EventType.READING, 3, now, TimeQuality.SYNCED,
                                    device=f"lamp-{k % 40}", asset=asset,
                                    data={"voltage_v": 229.5, "current_a": 0.41, "power_w": 88.0,
                                          "energy_kwh": 1234.5, "dim_pct": 60}))
        wire = []
        for event in events:
            self.seq[gw] += 1
            wire.append(encode_event(event, self.seq[gw]))
        self.batch_no[gw] += 1
        body = encode_batch(gw, self.batch_no[gw], now, wire)
        return self.signers[gw].envelope(body), raised


def _spawn(folder: Path, port: int, dsn: str, client_id: str) -> subprocess.Popen[str]:
    log = (folder / f"{client_id}.log").open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.receiver", "--broker", f"127.0.0.1:{port}", "--keys",
         str(folder / "gateways.json"), "--store", dsn, "--share", "platform",
         "--client-id", client_id], stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"{client_id} did not start: "
                           + (folder / f"{client_id}.log").read_text()[-2000:])
    return proc


class Publisher:
    """The fleet's MQTT connections; records when each alarm's batch was published."""

    def __init__(self, port: int) -> None:
        self.links = [MqttLink(host="127.0.0.1", port=port, client_id=f"fleet-{i}",
                               protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None,
                               max_inflight=WINDOW // PUBLISHERS)
                      for i in range(PUBLISHERS)]
        # per link: paho refuses a publish beyond its max_inflight
        self.windows = [asyncio.Semaphore(WINDOW // PUBLISHERS) for _ in self.links]
        self.published_ns: dict[str, int] = {}
        self.refused = 0

    async def connect(self) -> None:
        for link in self.links:
            await link.connect()

    async def send(self, gw: str, payload: bytes, alarm_ids: list[str]) -> None:
        i = int(gw.rsplit("-", 1)[1]) % PUBLISHERS
        link = self.links[i]
        async with self.windows[i]:
            for alarm_id in alarm_ids:
                self.published_ns[alarm_id] = time.time_ns()
            code = await asyncio.wait_for(link.publish(f"edge/v1/{gw}/events", payload), 60)
            if code != 0:
                self.refused += 1

    async def close(self) -> None:
        for link in self.links:
            await link.close()


def _count(store: PgReceiverStore) -> int:
    """Events stored so far, from the receivers' counters (committed with the events).

    Not count(*): polled every 50 ms on a growing table it took half a core from the
    receivers it measures. The final figures are counted on the table itself.
    """
    row = store.conn.execute("SELECT coalesce(sum(value), 0) FROM counters "
                             "WHERE name = 'events.accepted'").fetchone()
    return int(row[0]) if row else 0


async def _wait_stored(store: PgReceiverStore, target: int, timeout_s: float) -> float:
    """Poll until ``target`` events are stored; return the monotonic time it happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_count, store) >= target:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{await asyncio.to_thread(_count, store)} of {target} stored "
                       f"after {timeout_s:.0f} s")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its live children and its reaped ones (PostgreSQL backends)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / ticks  # utime stime cutime cstime
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            total += cpu_s(int(child))
    return total


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(folder: Path, *, events_per_gw: int, paced_s: float,
                  kill: bool = True) -> dict[str, Any]:
    """Run both phases; return the figures."""
    pg = PrivatePostgres(fsync=True)
    pg.start()
    broker = Mosquitto(folder / "mosquitto", free_port(), None, max_inflight=100)
    procs: list[subprocess.Popen[str]] = []
    publisher: Publisher | None = None
    try:
        create_database(pg.dsn, "platform")
        dsn = pg.dsn_for("platform")
        broker.start()
        fleet = Fleet(GATEWAYS)
        (folder / "gateways.json").write_text(json.dumps(fleet.registry()))
        observer = PgReceiverStore(dsn, node="bench")
        # signed before the clock starts: signing is the gateways' cost, not the platform's
        batches_per_gw = events_per_gw // BATCH_EVENTS
        # one batch in five raises an alarm, the gateways out of step (a city's alarms do not
        # all go off in the same second)
        phase1 = [(gw, *fleet.batch(gw, BATCH_EVENTS, alarm=(b + i) % 5 == 0))
                  for b in range(batches_per_gw) for i, gw in enumerate(fleet.gws)]
        produced = len(phase1) * BATCH_EVENTS
        procs = [_spawn(folder, broker.port, dsn, f"rx-{i}") for i in range(2)]
        publisher = Publisher(broker.port)
        await publisher.connect()
        killed_at = 0
        t0 = time.monotonic()
        cpu0 = {i: cpu_s(p.pid) for i, p in enumerate(procs)}
        assert pg.proc is not None
        assert broker.proc is not None
        pg_cpu0, mq_cpu0 = _tree_cpu_s(pg.proc.pid), cpu_s(broker.proc.pid)

        async def killer() -> None:
            nonlocal killed_at
            await _wait_stored(observer, int(produced * 0.4), 600)
            procs[0].kill()  # SIGKILL mid stream
            procs[0].wait(10)
            killed_at = await asyncio.to_thread(_count, observer)
            procs[0] = await asyncio.to_thread(_spawn, folder, broker.port, dsn, "rx-0")

        kill_task = asyncio.create_task(killer(), name="bench.killer") if kill else None
        await asyncio.gather(*(publisher.send(gw, p, a) for gw, p, a in phase1))
        t_published = time.monotonic()
        t_stored = await _wait_stored(observer, produced, 600)
        if kill_task is not None:
            await kill_task
        # rx-1 was never killed: its CPU over what it handled is a receiver's cost per event
        rx1_cpu = cpu_s(procs[1].pid) - cpu0[1]
        pg_cpu = _tree_cpu_s(pg.proc.pid) - pg_cpu0
        mq_cpu = cpu_s(broker.proc.pid) - mq_cpu0
        rx1_row = observer.conn.execute("SELECT coalesce(sum(value), 0) FROM counters WHERE "
                                        "node = 'rx-1' AND name LIKE 'events.%%'").fetchone()
        rx1_events = int(rx1_row[0]) if rx1_row else 0
        elapsed = t_stored - t0
        rate = produced / elapsed
        await asyncio.sleep(1.0)  # a late redelivery, if any, would be stored now
        saturated_latency = _latencies(observer, publisher.published_ns)

        # phase 2: paced at half the sustained rate, for the alarm → case latency
        publisher.published_ns.clear()
        pace_batches_per_s = max(1.0, rate / 2 / BATCH_EVENTS)
        n2 = int(pace_batches_per_s * paced_s)
        phase2 = [(gw, *fleet.batch(gw, BATCH_EVENTS, alarm=i % 4 == 0))
                  for i, gw in enumerate(fleet.gws[j % GATEWAYS] for j in range(n2))]
        start2 = time.monotonic()
        sends = []
        for i, (gw, payload, alarm_ids) in enumerate(phase2):
            delay = start2 + i / pace_batches_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(publisher.send(gw, payload, alarm_ids)))
        await asyncio.gather(*sends)
        total = produced + len(phase2) * BATCH_EVENTS
        await _wait_stored(observer, total, 300)
        await asyncio.sleep(0.5)
        paced_latency = _latencies(observer, publisher.published_ns)

        row = observer.conn.execute(
            "SELECT count(*), count(DISTINCT (gw, id)) FROM events").fetchone()
        stored, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
        crow = observer.conn.execute("SELECT count(*), count(DISTINCT alarm_id), "
                                     "coalesce(max(case_no), 0) FROM cases").fetchone()
        cases, case_alarms, max_case = (int(crow[0]), int(crow[1]), int(crow[2])) if crow \
            else (0, 0, 0)
        size = observer.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        counters = observer.counters()
        figures = {
            "events_per_s": round(rate),
            "case_open_p99_s": round(_p(paced_latency, 0.99), 4),
            "case_open_p50_s": round(_p(paced_latency, 0.50), 4),
            "case_open_p99_saturated_s": round(_p(saturated_latency, 0.99), 3),
            "duplicates": (stored - distinct) + (cases - case_alarms),
            "lost": total - distinct,
            "cases": cases, "case_numbers_dense": max_case == cases,
            "alarms_raised": fleet.alarms,
            "redelivered_dropped": counters.get("events.duplicates", 0),
            "rejected": sum(v for k, v in counters.items() if k.startswith("rejected.")),
            "killed_at_events": killed_at, "produced": produced, "stored": stored,
            "gateways": GATEWAYS, "batch_events": BATCH_EVENTS,
            "publish_s": round(t_published - t0, 2), "elapsed_s": round(elapsed, 2),
            "paced_events_per_s": round(pace_batches_per_s * BATCH_EVENTS),
            "db_bytes": int(size[0]) if size else 0,
            "db_bytes_per_event": round(int(size[0]) / max(1, stored)) if size else 0,
            "receiver_cpu_s_per_1k_events": round(1000 * rx1_cpu / max(1, rx1_events), 3),
            "postgres_cpu_s_per_1k_events": round(1000 * pg_cpu / produced, 3),
            "mosquitto_cpu_s_per_1k_events": round(1000 * mq_cpu / produced, 3),
        }
        observer.close()
        return figures
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()
                p.wait(10)
        if publisher is not None:
            await publisher.close()
        broker.stop()
        pg.stop()


def _latencies(store: PgReceiverStore, published_ns: dict[str, int]) -> list[float]:
    """Return alarm publish → case committed, in seconds, for the alarms just published."""
    rows = store.conn.execute("SELECT alarm_id, opened_ns FROM cases WHERE alarm_id = "
                              "ANY(%s)", (list(published_ns),)).fetchall()
    return [(int(opened) - published_ns[alarm]) / 1e9 for alarm, opened in rows]


def run(*, quick: bool, as_json: bool) -> dict[str, Any]:
    """Run the platform benchmark and print its table."""
    with workdir("platform-") as folder:
        m = asyncio.run(measure(folder, events_per_gw=300 if quick else 1_500,
                                paced_s=5.0 if quick else 15.0))
    data = {k: m[k] for k in ("events_per_s", "case_open_p99_s", "duplicates", "lost")}
    data |= {k: v for k, v in m.items() if k not in data}
    report("platform", [
        Row(f"sustained, {GATEWAYS} gateways → 2 receivers → PostgreSQL", m["events_per_s"],
            "events/s", f"≥ {GOAL_EVENTS_PER_S:,}", m["events_per_s"] >= GOAL_EVENTS_PER_S),
        Row(f"alarm → case open p99 (paced at {m['paced_events_per_s']:,} events/s)",
            m["case_open_p99_s"], "s"),
        Row("alarm → case open p99 while saturated", m["case_open_p99_saturated_s"], "s"),
        Row(f"duplicates stored (receiver killed -9 at {m['killed_at_events']:,})",
            m["duplicates"], "rows", "0", m["duplicates"] == 0),
        Row(f"lost (of {m['produced']:,} + the paced phase)", m["lost"], "events", "0",
            m["lost"] == 0),
        Row("case numbers dense", str(m["case_numbers_dense"]), "", "True",
            m["case_numbers_dense"]),
        Row("redeliveries dropped by (gw, id)", m["redelivered_dropped"], "events"),
        Row("database size per event", m["db_bytes_per_event"], "bytes"),
        Row("receiver CPU per 1,000 events", m["receiver_cpu_s_per_1k_events"], "s"),
        Row("PostgreSQL CPU per 1,000 events", m["postgres_cpu_s_per_1k_events"], "s"),
        Row("mosquitto CPU per 1,000 events", m["mosquitto_cpu_s_per_1k_events"], "s"),
    ], data, as_json=as_json)
    return data

