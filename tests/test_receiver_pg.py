"""The reference receiver on PostgreSQL (issue 18 A): idempotent, dense cases under racing
receivers, verified before stored, versioned schema with the three query indexes, and two
receivers on one shared subscription of a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from psycopg import errors as pg_errors

from edge.clock import TimeQuality
from edge.model import Alarm, Asset, Event, EventType, encode_batch, encode_event
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.pg_store import PgReceiverStore, migrations
from hil.receiver.service import alarms_last, run_mqtt
from hil.receiver.store import ReceiverStore
from tests.figures import figure
from tests.helpers import wait_until
from tests.pg import pg_dsn, pg_server_dsn  # noqa: F401 - fixtures

GW = "gw-320508-0007"
TOPIC = f"edge/v1/{GW}/events"
ASSET = Asset("3205080106000123", "0106", "320508001002003", "井盖", 31.3, 120.6)
TRUCK = Asset("3205089901000001", "9901", "320508001002003", "环卫车 1", None, None)
KEY = Ed25519PrivateKey.generate()
SIGNER = Signer(KEY)
KEYS = load_gateway_keys({GW: raw_public_key(KEY.public_key()).hex()})


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PgReceiverStore]:  # noqa: F811 - the fixture
    s = PgReceiverStore(pg_dsn)
    yield s
    s.close()


def batch(events: list[tuple[Event, int]], gw: str = GW, signer: Signer = SIGNER) -> bytes:
    body = encode_batch(gw, 1, time.time_ns(), [encode_event(e, s) for e, s in events])
    return signer.envelope(body)


def reading(device: str = "d", value: float = 1.0) -> Event:
    return Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device=device,
                 asset=ASSET, data={"v": value})


def alarm(state: str, alarm_id: str = "x:cover_open:1") -> Event:
    return Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED, device="d", asset=ASSET,
                 alarm=Alarm("cover_open", state, alarm_id, 1, 40.0, 15.0, "deg"))  # type: ignore[arg-type]


def test_a_redelivered_batch_is_a_no_op(store: PgReceiverStore) -> None:
    rx = Receiver(store, KEYS)
    events = [(reading(), 1), (reading(), 2), (alarm("raised"), 3)]
    first = rx.handle(TOPIC, batch(events))
    again = rx.handle(TOPIC, batch(events))
    assert (first.accepted, first.duplicates, first.opened) == (3, 0, [1])
    assert (again.accepted, again.duplicates, again.opened) == (0, 3, [])
    assert store.seq_count(GW) == (3, 1, 3)
    assert store.event_count() == 3
    assert store.counters()["events.duplicates"] == 3
    assert len(store.cases()) == 1


def test_raise_opens_and_clear_closes_the_same_case(store: PgReceiverStore) -> None:
    rx = Receiver(store, KEYS)
    assert rx.handle(TOPIC, batch([(alarm("raised"), 1)])).opened == [1]
    assert rx.handle(TOPIC, batch([(alarm("cleared"), 2)])).closed == [1]
    assert rx.handle(TOPIC, batch([(alarm("raised", "x:cover_open:2"), 3)])).opened == [2]
    (closed,) = store.cases("closed")
    assert (closed["case_no"], closed["alarm_id"], closed["state"]) == (1, "x:cover_open:1",
                                                                        "closed")
    assert [c["case_no"] for c in store.cases("open")] == [2]


def test_a_clear_handled_before_its_raise_leaves_the_case_closed(
        store: PgReceiverStore) -> None:
    # two receivers split one gateway's batches: the clear's batch may commit first
    rx = Receiver(store, KEYS)
    assert rx.handle(TOPIC, batch([(alarm("cleared"), 2)])).closed == []
    assert rx.handle(TOPIC, batch([(alarm("raised"), 1)])).opened == [1]
    assert store.cases("open") == []
    assert [c["case_no"] for c in store.cases("closed")] == [1]


def test_a_forged_or_foreign_batch_stores_nothing(store: PgReceiverStore) -> None:
    rx = Receiver(store, KEYS)
    forger = Signer(Ed25519PrivateKey.generate())
    assert "unknown kid" in rx.handle(TOPIC, batch([(alarm("raised"), 1)], signer=forger)).rejected
    assert rx.handle("edge/v1/gw-other/events", batch([(reading(), 1)])).rejected
    tampered = batch([(reading(value=1.0), 1)]).replace(b'\\"v\\":1.0', b'\\"v\\":9.0')
    assert tampered != batch([(reading(value=1.0), 1)])
    assert "signature" in rx.handle(TOPIC, tampered).rejected
    assert store.event_count() == 0
    assert store.cases() == []
    counters = store.counters()
    assert counters["rejected.signature"] == 2
    assert counters["rejected.unknown_gateway"] == 1


def _fail_on_device(store: PgReceiverStore, monkeypatch: pytest.MonkeyPatch,
                    device: str) -> None:
    """Make storing a batch with an event of ``device`` fail inside the transaction (after its
    insert)."""
    add_events = store.add_events

    def failing(gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        new = add_events(gw, events)
        if any(event.get("device") == device for event in events):
            raise RuntimeError("injected failure inside the transaction")
        return new

    monkeypatch.setattr(store, "add_events", failing)


def test_a_batch_failing_inside_its_transaction_is_rolled_back_whole(
        store: PgReceiverStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rx = Receiver(store, KEYS)
    _fail_on_device(store, monkeypatch, "boom")
    out = rx.handle(TOPIC, batch([(reading(), 1), (alarm("raised"), 2), (reading("boom"), 3)]))
    assert "malformed" in out.rejected
    assert store.event_count() == 0
    assert store.cases() == []
    # nothing consumed: the next case is still #1
    assert rx.handle(TOPIC, batch([(alarm("raised"), 4)])).opened == [1]


def test_nul_characters_are_stored_not_refused(store: PgReceiverStore) -> None:
    """PostgreSQL's jsonb has no U+0000: a signed batch with one must not become unstorable."""
    rx = Receiver(store, KEYS)
    event = Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device="d\x00",
                  asset=ASSET, data={"note": "a\x00b", "\x00": 1})
    out = rx.handle(TOPIC, batch([(event, 1), (alarm("raised", "x\x00:1"), 2)]))
    assert (out.accepted, out.opened, out.rejected) == (2, [1], "")
    assert rx.handle(TOPIC, batch([(alarm("cleared", "x\x00:1"), 3)])).closed == [1]
    doc = store.events(type_="reading")[0]
    assert doc["data"] == {"note": "a\ufffdb", "\ufffd": 1}
    assert store.cases()[0]["alarm_id"] == "x\ufffd:1"


def test_a_group_commits_once_and_a_refused_message_is_undone_alone(
        store: PgReceiverStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rx = Receiver(store, KEYS)
    _fail_on_device(store, monkeypatch, "boom")
    forger = Signer(Ed25519PrivateKey.generate())
    first = reading()
    outcomes = rx.handle_many([
        (TOPIC, batch([(first, 1), (alarm("raised", "a:1"), 2)])),
        (TOPIC, batch([(alarm("raised", "a:2"), 3), (reading("boom"), 4)])),  # fails in the tx
        (TOPIC, batch([(reading(), 5)], signer=forger)),  # refused before it
        (TOPIC, batch([(first, 1), (alarm("raised", "a:3"), 6)])),  # one duplicate
    ])
    assert [(o.accepted, o.duplicates, o.opened, bool(o.rejected)) for o in outcomes] == [
        (2, 0, [1], False), (0, 0, [], True), (0, 0, [], True), (1, 1, [2], False)]
    assert store.event_count() == 3
    assert [c["alarm_id"] for c in store.cases()] == ["a:3", "a:1"]  # #2 went to a:3, dense
    counters = store.counters()
    assert (counters["events.accepted"], counters["events.duplicates"]) == (3, 1)
    assert counters["rejected.malformed"] == 1
    assert counters["rejected.signature"] == 1


def test_a_refused_message_leaves_nothing_on_the_map(
        store: PgReceiverStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The map rows of a group are written at its commit from what each message added: a
    message refused inside the group (its savepoint undone) adds no asset nor vehicle."""
    rx = Receiver(store, KEYS)
    _fail_on_device(store, monkeypatch, "boom")
    fix = Event(EventType.POSITION, 2, time.time_ns(), TimeQuality.SYNCED, device="truck-9",
                asset=TRUCK, data={"lat": 31.3, "lon": 120.6, "speed_kmh": 20.0})
    later = Event(EventType.READING, 3, time.time_ns() + 1_000_000_000, TimeQuality.SYNCED,
                  device="lamp-a", asset=ASSET, data={"v": 2.0})  # ts is to the millisecond
    outcomes = rx.handle_many([
        (TOPIC, batch([(reading("lamp-a"), 1)])),
        (TOPIC, batch([(reading("lamp-b"), 2), (fix, 3), (reading("boom"), 4)])),  # refused
        (TOPIC, batch([(later, 5)])),
    ])
    assert [o.accepted for o in outcomes] == [1, 0, 1]
    assert [(a["device"], a["last_data"]) for a in store.map_assets()] == [
        ("lamp-a", {"v": 2.0})]
    assert store.map_vehicles() == []
    assert store.last_value(GW, "lamp-b") is None


def test_a_group_handles_its_alarm_batches_last() -> None:
    """Opening or closing a case holds the case-number row until the group commits: the
    receiver takes the batches with alarms last (held for them only, not the whole group),
    keeping each gateway's raise before its clear and state messages in their order."""
    @dataclasses.dataclass
    class Item:
        topic: str
        payload: bytes

    events, state = f"edge/v1/{GW}/events", f"edge/v1/{GW}/state"
    raised, cleared = batch([(alarm("raised"), 1)]), batch([(alarm("cleared"), 3)])
    items = [Item(events, raised), Item(state, b'{"online": false}'),
             Item(events, batch([(reading(), 2)])), Item(events, cleared),
             Item(state, b'{"online": true, "active_alarms": [{"alarm_id": "a"}]}')]
    assert [items.index(i) for i in alarms_last(items)] == [1, 2, 4, 0, 3]


def test_case_numbers_stay_dense_with_two_receivers_racing(pg_dsn: str) -> None:  # noqa: F811
    """Two receivers (two connections) open cases at once, every raise delivered to both."""
    stores = [PgReceiverStore(pg_dsn, node=f"rx{i}") for i in range(2)]
    alarms = [alarm("raised", f"x:cover_open:{n}") for n in range(60)]
    payloads = [batch([(reading(), 2 * n + 1), (a, 2 * n + 2)]) for n, a in enumerate(alarms)]
    opened: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(i: int) -> None:
        rx = Receiver(stores[i], KEYS)
        start.wait()
        try:
            # the other receiver gets the same batches in the reverse order: every raise is
            # a duplicate for one of them, and they meet in the middle
            for payload in payloads if i == 0 else reversed(payloads):
                out = rx.handle(TOPIC, payload)
                assert not out.rejected, out.rejected
                opened[i] += out.opened
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        numbers = sorted(opened[0] + opened[1])
        assert numbers == list(range(1, len(alarms) + 1)), "case numbers not dense or doubled"
        cases = stores[0].cases()
        assert sorted(c["case_no"] for c in cases) == numbers
        assert sorted(c["alarm_id"] for c in cases) == sorted(a.alarm.alarm_id for a in alarms
                                                              if a.alarm is not None)
        assert stores[0].event_count() == 2 * len(alarms)
        counters = stores[0].counters()
        assert counters["events.accepted"] == 2 * len(alarms)
        assert counters["events.duplicates"] == 2 * len(alarms)
        figure("RX-PG", f"2 receivers racing on {len(alarms)} raises delivered to both: cases "
                        f"1..{numbers[-1]} dense, split {len(opened[0])}/{len(opened[1])}, "
                        f"{counters.get('store.retries', 0)} batch retries")
    finally:
        for s in stores:
            s.close()


def test_schema_is_versioned_and_queries_use_their_indexes(store: PgReceiverStore,
                                                          pg_dsn: str) -> None:  # noqa: F811
    versions = [v for v, _n, _s in migrations()]
    assert versions == list(range(1, len(versions) + 1))  # numbered, none skipped
    assert store.schema_version == versions[-1]
    again = PgReceiverStore(pg_dsn)  # a second receiver starting: nothing re-applied
    assert again.schema_version == versions[-1]
    assert [r[0] for r in again.conn.execute(
        "SELECT version FROM schema_version ORDER BY version")] == versions
    again.close()
    rx = Receiver(store, KEYS)
    day = dt.datetime(2026, 11, 26, 8, tzinfo=dt.UTC)
    track = [Event(EventType.POSITION, 2, int((day + dt.timedelta(minutes=m)).timestamp() * 1e9),
                   TimeQuality.SYNCED, device="truck-1", asset=TRUCK,
                   data={"lat": 31.3 + m / 1000, "lon": 120.6, "speed_kmh": 20.0})
             for m in range(5)]
    rx.handle(TOPIC, batch([(e, n + 1) for n, e in enumerate(track)]
                           + [(reading("lamp", 5.0), 10), (alarm("raised"), 11)]))
    assert [p[1] for p in store.track(TRUCK.code, day.date())] == [31.3 + m / 1000
                                                                  for m in range(5)]
    assert store.track(TRUCK.code, day.date() + dt.timedelta(days=1)) == []
    last = store.last_value(GW, "lamp")
    assert last is not None
    assert (last["last_type"], last["last_data"]) == ("reading", {"v": 5.0})
    assert [c["alarm_id"] for c in store.open_cases_in_grid(ASSET.grid)] == ["x:cover_open:1"]
    store.conn.execute("SET enable_seqscan = off")  # tiny tables: ask whether an index fits
    plans = {
        "cases_open_grid": "SELECT * FROM cases WHERE grid = '1' AND state = 'open'",
        "positions_track": "SELECT * FROM positions WHERE asset_code = '1' AND ts_at >= now() "
                           "AND ts_at < now() + interval '1 day' ORDER BY ts_at",
        "assets_pkey": "SELECT * FROM assets WHERE gw = 'g' AND device = 'd'",
        "events_device": "SELECT doc FROM events WHERE gw = 'g' AND device = 'd' "
                         "ORDER BY received_ns DESC LIMIT 100",
    }
    for index, query in plans.items():
        plan = "\n".join(r[0] for r in store.conn.execute(f"EXPLAIN {query}"))
        assert index in plan, plan


def test_command_results_are_kept_by_command(store: PgReceiverStore) -> None:
    rx = Receiver(store, KEYS)
    cmd_id = "0193f1c3-7a4e-7cc1-9b1e-4d2f6a0c9e12"
    result = Event(EventType.COMMAND_RESULT, 1, time.time_ns(), TimeQuality.SYNCED,
                   device="lamp-07", data={"cmd_id": cmd_id, "action": "light.set",
                                           "status": "executed", "detail": {"dim_pct": 60}})
    assert rx.handle(TOPIC, batch([(result, 1)])).accepted == 1
    assert rx.handle(TOPIC, batch([(result, 1)])).duplicates == 1
    assert store.command_results(cmd_id) == [{
        "gw": GW, "device": "lamp-07", "action": "light.set", "status": "executed",
        "ts": result.to_wire(1)["ts"], "detail": {"dim_pct": 60}}]


def test_the_pg_store_has_every_method_of_the_sqlite_store() -> None:
    """The web page (and the map) take either store: none of its queries may be missing."""
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}

    assert public(ReceiverStore) - public(PgReceiverStore) == set()


async def test_two_receivers_on_one_shared_subscription_store_each_event_once(
        plain_broker: Mosquitto, pg_dsn: str) -> None:  # noqa: F811
    gateways = [f"gw-320508-{n:04d}" for n in range(1, 7)]
    keys = {gw: Ed25519PrivateKey.generate() for gw in gateways}
    registry = load_gateway_keys({gw: raw_public_key(k.public_key()).hex()
                                  for gw, k in keys.items()})
    stores = [PgReceiverStore(pg_dsn, node=f"rx{i}") for i in range(2)]
    ready = [asyncio.Event(), asyncio.Event()]
    receivers = [Receiver(s, registry) for s in stores]
    tasks = [asyncio.create_task(run_mqtt(receivers[i], host="127.0.0.1",
                                          port=plain_broker.port, tls=None, ready=ready[i],
                                          client_id=f"receiver-{i}", share_group="platform"),
                                 name=f"receiver-{i}") for i in range(2)]
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="gateways",
                   protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
    try:
        for event in ready:
            await asyncio.wait_for(event.wait(), 10)
        await pub.connect()
        produced = 0
        for gw in gateways:
            events = [(reading(), n + 1) for n in range(40)] + [
                (alarm("raised", f"{gw}:cover_open:1"), 41)]
            payloads = [batch(events[i:i + 5], gw, Signer(keys[gw]))
                        for i in range(0, len(events), 5)]
            for payload in payloads + payloads[:3]:  # the gateway re-sends three batches
                assert await pub.publish(f"edge/v1/{gw}/events", payload) == 0
            produced += len(events)
        await wait_until(lambda: stores[0].event_count() >= produced, 30,
                         "every event stored")
        await asyncio.sleep(0.5)  # a second delivery, if any, would arrive now
        counters = stores[0].counters()
        per_node: dict[str, int] = dict(stores[0].conn.execute(
            "SELECT node, value FROM counters WHERE name = 'events.accepted'").fetchall())
        assert stores[0].event_count() == produced
        assert counters["events.accepted"] == produced
        assert counters["events.duplicates"] == len(gateways) * 15  # 3 batches of 5 again
        assert sorted(c["case_no"] for c in stores[0].cases()) == list(
            range(1, len(gateways) + 1))
        assert len(per_node) == 2, f"the shared subscription did not split the load: {per_node}"
    finally:
        await pub.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for s in stores:
            s.close()


def test_the_tests_fail_without_postgresql_in_ci(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    from tests import pg

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must provide PostgreSQL"):
        pg._missing("no initdb")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        pg._missing("no initdb")


def _spawn_receiver(tmp_path: Path, port: int, dsn: str, client_id: str,
                    keys: dict[str, str]) -> subprocess.Popen[str]:
    keys_file = tmp_path / "gateways.json"
    keys_file.write_text(json.dumps(keys))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.receiver", "--broker", f"127.0.0.1:{port}", "--keys",
         str(keys_file), "--store", dsn, "--share", "platform", "--client-id", client_id],
        stdout=subprocess.PIPE, stderr=(tmp_path / f"{client_id}.log").open("a"), text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", (tmp_path / f"{client_id}.log").read_text()
    return proc


async def test_a_receiver_killed_mid_stream_loses_and_doubles_nothing(
        tmp_path: Path, plain_broker: Mosquitto, pg_dsn: str) -> None:  # noqa: F811
    """kill -9 while messages are delivered but not yet committed; restart: all stored once.

    The receiver acknowledges a message only after its transaction commits, so the broker
    still holds what the killed process had not stored and sends it again on reconnect.
    """
    gateways = [f"gw-320508-{n:04d}" for n in range(1, 4)]
    keys = {gw: Ed25519PrivateKey.generate() for gw in gateways}
    registry = {gw: raw_public_key(k.public_key()).hex() for gw, k in keys.items()}
    payloads = []
    for gw in gateways:
        events = [(reading(value=float(n)), n + 1) for n in range(2_000)]
        payloads += [(gw, batch(events[i:i + 20], gw, Signer(keys[gw])))
                     for i in range(0, len(events), 20)]
    produced = 2_000 * len(gateways)
    store = PgReceiverStore(pg_dsn, node="observer")
    proc = _spawn_receiver(tmp_path, plain_broker.port, pg_dsn, "rx-kill", registry)
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="gateways",
                   protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None, max_inflight=100)
    try:
        await pub.connect()
        window = asyncio.Semaphore(50)  # paho queues no more than max_inflight

        async def send(gw: str, payload: bytes) -> int:
            async with window:
                return await pub.publish(f"edge/v1/{gw}/events", payload)

        # all at the broker (PUBACKed) before the kill
        assert set(await asyncio.gather(*(send(gw, p) for gw, p in payloads))) == {0}
        await wait_until(lambda: store.event_count() >= produced // 10, 30, "some stored")
        proc.kill()  # SIGKILL: no goodbye, no flush
        proc.wait(10)
        at_kill = store.event_count()
        assert at_kill < produced, "the stream ended before the kill: nothing was tested"
        proc = _spawn_receiver(tmp_path, plain_broker.port, pg_dsn, "rx-kill", registry)
        await wait_until(lambda: store.event_count() >= produced, 60, "every event stored")
        await asyncio.sleep(0.5)
        stored = store.event_count()
        per_gw = [store.seq_count(gw) for gw in gateways]
        figure("RX-PG", f"receiver kill -9 at {at_kill} of {produced} events, restarted: "
                        f"{stored} stored, {produced - stored} lost, "
                        f"{store.counters().get('events.duplicates', 0)} redelivered "
                        "and dropped by (gw, id)")
        assert stored == produced
        assert per_gw == [(2_000, 1, 2_000)] * len(gateways)
        assert all(store.seq_gaps(gw) == [] for gw in gateways)
    finally:
        await pub.close()
        proc.kill()
        proc.wait(10)
        store.close()


def test_the_map_reads_the_same_on_sqlite_and_postgresql(tmp_path: Path,
                                                         store: PgReceiverStore) -> None:
    """The map page takes either store: the same batches give the same map_* answers."""
    sqlite = ReceiverStore(tmp_path / "rx.db")
    day = dt.datetime(2026, 11, 26, 8, tzinfo=dt.UTC)

    def at(minute: int) -> int:
        return int((day + dt.timedelta(minutes=minute)).timestamp() * 1e9)

    def fix(minute: int, lat: float) -> Event:
        return Event(EventType.POSITION, 2, at(minute), TimeQuality.SYNCED, device="truck-1",
                     asset=TRUCK, data={"lat": lat, "lon": 120.6, "speed_kmh": 20.0,
                                        "course_deg": 90.0})

    lamp = [Event(EventType.READING, 3, at(m), TimeQuality.SYNCED, device="lamp-1", asset=ASSET,
                  data={"power_w": float(m)}) for m in (1, 3, 2)]  # one arrives late
    coverage = Event(EventType.WORK_COVERAGE, 2, at(9), TimeQuality.SYNCED, device="truck-1",
                     asset=TRUCK, data={
                         "shift": {"start": "2026-11-26T00:00:00Z", "end": "2026-11-26T08:00:00Z",
                                   "state": "ended"}, "clock": "trusted", "min_speed_kmh": 3.0,
                         "max_speed_kmh": 25.0, "segment_m": 50.0, "max_gap_s": 60.0,
                         "fixes": 2, "working_fixes": 2, "gaps": 0, "gap_s": 0.0, "roads": []})
    first_fix = fix(1, 31.30)
    batches = [
        batch([(lamp[0], 1), (first_fix, 2), (alarm("raised"), 3)]),
        batch([(lamp[1], 4), (fix(3, 31.32), 5), (fix(2, 31.31), 6), (coverage, 7)]),
        batch([(lamp[2], 8)]),
        batch([(lamp[0], 1), (first_fix, 2)]),  # a redelivery changes nothing
    ]
    answers = []
    for s in (sqlite, store):
        rx: Receiver[Any] = Receiver(s, KEYS)
        for payload in batches:
            assert not rx.handle(TOPIC, payload).rejected
        answers.append({
            "assets": s.map_assets(),
            "vehicles": s.map_vehicles(),
            "values": [e["id"] for e in s.map_device_values(GW, "lamp-1")],
            "cases": [(c["case_no"], c["alarm_id"], c["state"])
                      for c in s.map_device_cases(GW, "d")],
            "track": s.map_track(GW, "truck-1", at(0), at(60)),
            "coverage": [(c["gw"], c["id"]) for c in s.map_work_coverage()],
        })
    sqlite.close()
    lite, pg = answers
    assert pg == lite
    (lamp_row,) = [a for a in pg["assets"] if a["device"] == "lamp-1"]
    assert lamp_row["last_data"] == {"power_w": 3.0}  # the newest reading, not the last one
    assert [p[1] for p in pg["track"]] == [31.30, 31.31, 31.32]
    assert pg["vehicles"][0]["lat"] == 31.32


def test_a_dropped_database_session_is_not_a_refused_message(store: PgReceiverStore,
                                                             pg_dsn: str) -> None:  # noqa: F811
    """The database going away must not turn messages into rejections (they would be acked
    and lost): the receiver raises, does not acknowledge, and stores them on the next try."""
    rx = Receiver(store, KEYS)
    messages = [(TOPIC, batch([(reading(), n)])) for n in (1, 2)]

    def drop_session() -> None:
        with PgReceiverStore(pg_dsn, node="admin") as admin:
            admin.conn.execute("SELECT pg_terminate_backend(%s)",
                               (store.conn.info.backend_pid,))

    for handle in (lambda: rx.handle_many(messages), lambda: rx.handle(*messages[0])):
        drop_session()
        with pytest.raises(Exception) as raised:
            handle()
        assert store.unavailable(raised.value)
    assert [o.accepted for o in rx.handle_many(messages)] == [1, 1]  # a new session
    assert "rejected.malformed" not in store.counters()


def test_a_group_that_fails_as_a_whole_is_handled_one_by_one(
        store: PgReceiverStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that breaks the group's commit (not its own savepoint) cannot block the
    others forever: after the failed group each message is handled alone."""
    rx = Receiver(store, KEYS)
    flush = store._flush_projections
    calls = {"n": 0}

    def fail_first() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure at the group's commit")
        flush()

    monkeypatch.setattr(store, "_flush_projections", fail_first)
    outcomes = rx.handle_many([(TOPIC, batch([(reading(), n)])) for n in (1, 2, 3)])
    assert [o.accepted for o in outcomes] == [1, 1, 1]
    assert store.event_count() == 3
    assert store.counters()["store.group_failures"] == 1



async def test_the_page_and_the_map_are_served_from_postgresql(store: PgReceiverStore) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from hil.receiver.web import WebStore, make_app

    web_store: WebStore = store  # mypy: the PG store is everything the web app reads
    rx = Receiver(store, KEYS)
    rx.handle(TOPIC, batch([(reading("lamp-1", 7.0), 1), (alarm("raised"), 2)]))
    async with TestClient(TestServer(make_app(web_store))) as client:
        state = await (await client.get("/api/state")).json()
        assert [c["case_no"] for c in state["open_cases"]] == [1]
        assert len(state["recent_events"]) == 2
        map_doc = await (await client.get("/api/map")).json()
        device = await client.get("/api/map/device", params={"gw": GW, "device": "lamp-1"})
        assert device.status == 200
        values = await device.json()
    assert "lamp-1" in str(map_doc)
    assert "7.0" in str(values)


def _lock_store(store: PgReceiverStore, monkeypatch: pytest.MonkeyPatch,
                errors: list[Exception]) -> None:
    """Make storing a batch raise each of ``errors`` in turn (another receiver's lock), then
    store it."""
    add_events = store.add_events

    def locked(gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        if errors:
            raise errors.pop(0)
        return add_events(gw, events)

    monkeypatch.setattr(store, "add_events", locked)


def test_a_lock_timeout_is_never_a_rejection(store: PgReceiverStore,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries exhausted on lock timeouts: the error propagates (not acknowledged, 503); it was
    rejected.malformed, acknowledged and the signed batch lost."""
    rx = Receiver(store, KEYS)
    _lock_store(store, monkeypatch, [pg_errors.LockNotAvailable("lock timeout")] * 3)
    with pytest.raises(pg_errors.LockNotAvailable):
        rx.handle(TOPIC, batch([(alarm("raised"), 1)]))
    _lock_store(store, monkeypatch, [pg_errors.DeadlockDetected("deadlock")] * 3)
    with pytest.raises(pg_errors.DeadlockDetected):
        rx.handle_many([(TOPIC, batch([(reading(), n)])) for n in (2, 3)])
    assert not {k for k in store.counters() if k.startswith("rejected.")}
    assert store.event_count() == 0
    assert rx.handle(TOPIC, batch([(alarm("raised"), 1)])).opened == [1]  # the redelivery


def test_a_deadlocked_group_runs_again_as_a_whole(store: PgReceiverStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In a group a batch is a savepoint: retrying it alone kept the group's locks (and met the
    same deadlock); the group is rolled back (locks released) and runs again whole."""
    rx = Receiver(store, KEYS)
    calls = {"n": 0}
    add_events = store.add_events

    def second_deadlocks(gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise pg_errors.DeadlockDetected("deadlock")
        return add_events(gw, events)

    monkeypatch.setattr(store, "add_events", second_deadlocks)
    outcomes = rx.handle_many([(TOPIC, batch([(alarm("raised"), 1)])),
                               (TOPIC, batch([(reading(), 2)]))])
    assert [(o.accepted, o.duplicates, o.opened) for o in outcomes] == [(1, 0, [1]), (1, 0, [])]
    assert calls["n"] == 4  # the first batch ran again with the group, not the second alone
    counters = store.counters()
    assert counters["store.retries"] == 1
    assert "store.group_failures" not in counters
    assert [c["case_no"] for c in store.cases()] == [1]


def test_reordered_states_keep_the_newest(store: PgReceiverStore) -> None:
    """The same sequence as on SQLite (tests/test_receiver.py check_state_order)."""
    from tests.test_receiver import check_state_order

    check_state_order(Receiver(store, KEYS), SIGNER)


def test_a_state_of_an_unknown_gateway_is_refused(store: PgReceiverStore) -> None:
    rx = Receiver(store, KEYS)
    assert rx.handle("edge/v1/gw-stranger/state", b'{"online": true}').rejected
    assert store.gateways() == []
    assert store.counters()["rejected.unknown_gateway"] == 1


def test_two_receivers_deadlocking_in_groups_lose_nothing(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The review's scenario: A's group opens a case (the case counter row FOR UPDATE), B's
    group inserted an event A's group now inserts too (a redelivery); each waits for the other.
    Retrying the batch in its savepoint kept the group's locks, met the same deadlock three
    times and dropped it as rejected.malformed; the group now rolls back and runs again."""
    stores = [PgReceiverStore(pg_dsn, node=f"rx{i}") for i in range(2)]
    receivers = [Receiver(s, KEYS) for s in stores]
    shared = batch([(reading("shared"), 10)])  # the same batch delivered to both
    groups = [[(TOPIC, batch([(alarm("raised", "a:cover_open:1"), 1)])), (TOPIC, shared)],
              [(TOPIC, shared), (TOPIC, batch([(alarm("raised", "b:cover_open:1"), 2)]))]]
    first_done = [threading.Event(), threading.Event()]
    for i, rx in enumerate(receivers):
        def between(topic: str, payload: bytes, *, i: int = i,
                    handle: Any = rx.handle, calls: list[int] = [0]) -> Any:  # noqa: B006
            calls[0] += 1
            if calls[0] == 2:  # each group holds its first lock before taking the second
                first_done[i].set()
                first_done[1 - i].wait(5)
                time.sleep(0.3 * i)
            return handle(topic, payload)

        monkeypatch.setattr(rx, "handle", between)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            receivers[i].handle_many(groups[i])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        counters = stores[0].counters()
        assert not {k for k in counters if k.startswith("rejected.")}, counters
        assert counters["store.retries"] >= 1  # the deadlock happened and was retried whole
        assert stores[0].event_count() == 3
        assert sorted(c["alarm_id"] for c in stores[0].cases()) == ["a:cover_open:1",
                                                                     "b:cover_open:1"]
        assert sorted(c["case_no"] for c in stores[0].cases()) == [1, 2]
    finally:
        for s in stores:
            s.close()


async def test_a_lock_timeout_answers_503_over_https(store: PgReceiverStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries exhausted on PostgreSQL: 503 with Retry-After (the gateway retries), never the
    400 it counts toward dead-lettering."""
    from aiohttp.test_utils import TestClient, TestServer

    from hil.receiver.web import make_app

    rx = Receiver(store, KEYS)
    _lock_store(store, monkeypatch, [pg_errors.LockNotAvailable("lock timeout")] * 3)
    payload = batch([(alarm("raised"), 1)])
    async with TestClient(TestServer(make_app(store, receiver=rx))) as client:
        refused = await client.post(f"/v1/gateways/{GW}/events", data=payload)
        assert refused.status == 503
        assert refused.headers["Retry-After"]
        again = await client.post(f"/v1/gateways/{GW}/events", data=payload)  # the retry
        assert again.status == 200
        assert (await again.json())["accepted"] == 1
    assert not {k for k in store.counters() if k.startswith("rejected.")}
    assert [c["case_no"] for c in store.cases()] == [1]
