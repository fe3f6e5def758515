"""The outbox: seq never reused, priorities, leases, dead letters, quota, corruption, schema."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from edge.buffer.migrations import SCHEMA
from edge.buffer.store import Outbox
from edge.clock import TimeQuality
from edge.errors import StoreError
from edge.model import Event, EventType
from tests.outbox_sql import sql_rows
from tests.outbox_util import ev, open_store


def seqs_of(store: Outbox) -> list[int]:
    return [r[0] for r in sql_rows(store, "SELECT seq FROM events ORDER BY seq")]


def test_pragmas_are_the_durable_ones(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    db = store._conn
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_seq_strictly_increases_across_deletes_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = open_store(path)
    first = store.append([ev() for _ in range(10)]).seqs
    assert first == list(range(1, 11))
    store.ack(first)  # delete the highest: a plain rowid would reuse it
    store.close()
    store = open_store(path)
    again = store.append([ev()]).seqs
    assert again == [11]
    store.close()


def test_seq_continues_above_high_water_after_corrupt_store_replaced(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = open_store(path)
    high = store.append([ev() for _ in range(50)]).seqs[-1]
    store.close()
    path.write_bytes(b"this is not a database" * 100)
    store = open_store(path)
    assert store.replaced_corrupt is not None
    assert store.replaced_corrupt.exists()
    assert store.replaced_corrupt.name.startswith("o.db.corrupt-")
    new = store.append([ev()]).seqs[0]
    assert new > high
    store.close()


def test_truncated_store_is_moved_aside_and_a_fresh_one_starts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = open_store(path)
    store.append([ev(size=300) for _ in range(2000)])
    high = store._next_seq
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    store = open_store(path)
    assert store.replaced_corrupt is not None
    assert store.append([ev()]).seqs[0] >= high
    assert sql_rows(store, "PRAGMA integrity_check")[0][0] == "ok"
    store.close()


def test_a_new_alarm_is_leased_before_100k_queued_telemetry(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    for _ in range(100):
        store.append([ev(3, n=i) for i in range(1000)])
    first = store.lease(200)
    assert all(item.prio == 3 for item in first)
    alarm_seq = store.append([ev(0)]).seqs[0]
    nxt = store.lease(200)
    assert nxt[0].seq == alarm_seq
    assert nxt[0].prio == 0
    store.close()


def test_lease_never_hands_out_an_event_twice_until_released(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    store.append([ev() for _ in range(30)])
    a, b = store.lease(10), store.lease(10)
    assert not {x.seq for x in a} & {x.seq for x in b}
    store.release([x.seq for x in a])
    c = store.lease(10)
    assert [x.seq for x in c] == [x.seq for x in a]
    store.close()


def test_lease_respects_byte_bound(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    store.append([ev(size=1000) for _ in range(20)])
    batch = store.lease(20, max_bytes=5000)
    assert 1 <= len(batch) <= 5
    assert sum(len(x.payload) for x in batch) <= 5000
    store.close()


def test_nack_dead_letters_after_n_attempts_without_blocking_the_head(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db", max_attempts=3)
    poison = store.append([ev(0)]).seqs
    store.append([ev(3) for _ in range(5)])
    for attempt in range(3):
        batch = store.lease(1)
        assert [x.seq for x in batch] == poison
        dead = store.nack(poison, "PUBACK 0x87")
        assert dead == (poison if attempt == 2 else [])
    nxt = store.lease(10)
    assert poison[0] not in [x.seq for x in nxt]
    assert len(nxt) == 5
    stats = store.stats()
    assert stats["dead_letters"] == 1
    assert store.requeue_dead() == 1
    store.release([x.seq for x in nxt])
    assert poison[0] in [x.seq for x in store.lease(10)]
    store.close()


def test_leases_do_not_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = open_store(path)
    seqs = store.append([ev() for _ in range(5)]).seqs
    assert [x.seq for x in store.lease(5)] == seqs
    store.close()  # crash-equivalent: leases lived in memory
    store = open_store(path)
    assert [x.seq for x in store.lease(5)] == seqs
    store.close()


def test_quota_evicts_oldest_telemetry_never_alarms_and_emits_a_gap(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db", quota_bytes=1024 * 1024)
    alarms = []
    for i in range(60):
        alarms += store.append([ev(0 if i % 10 == 0 else 1, size=200)]).seqs
        store.append([ev(3, size=400) for _ in range(100)])
    remaining = set(seqs_of(store))
    assert set(alarms) <= remaining, "an alarm was evicted"
    stats = store.stats()
    assert stats["drops"].get("quota.3", 0) > 0
    assert stats["used_bytes"] <= 1024 * 1024
    gaps = [json.loads(r[0]) for r in sql_rows(store, "SELECT payload FROM events WHERE prio=0")
            if json.loads(r[0])["type"] == "gap"]
    assert gaps, "no gap event announced the drop"
    gap = gaps[0]["data"]
    assert gap["reason"] == "quota" and gap["dropped"]["3"] > 0
    assert gap["first_seq"] <= gap["last_seq"]
    assert not remaining & set(range(gap["first_seq"], gap["last_seq"] + 1)) - set(alarms) - {
        g["seq"] for g in gaps}
    store.close()


def test_when_alarms_alone_fill_the_quota_telemetry_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db", quota_bytes=1024 * 1024)
    stored = []
    for _ in range(40):
        stored += store.append([ev(1, size=300) for _ in range(100)]).seqs
    result = store.append([ev(3, size=100)])
    assert result.refused == {3: 1}
    assert result.seqs == []
    more = store.append([ev(0, size=100)])
    assert len(more.seqs) == 1, "an alarm was refused while room remained"
    assert set(stored) <= set(seqs_of(store))
    assert store.counters()["dropped.quota_refused.3"] == 1
    store.close()


def test_old_schema_store_migrates_in_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA[0][1])
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO events (prio, created_ns, payload) VALUES (3, 1, ?)",
               (b'{"seq":1}',))
    db.commit()
    db.close()
    store = open_store(path)
    assert sql_rows(store, "PRAGMA user_version")[0][0] == SCHEMA[-1][0]
    assert sql_rows(store, "SELECT count(*) FROM events")[0][0] == 1
    assert store.counters() == {}
    assert store.append([ev()]).seqs == [2]
    store.close()


def test_a_failing_migration_leaves_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    open_store(path, schema=SCHEMA[:1]).close()
    broken = [*SCHEMA[:1], (2, "CREATE TABLE counters (x); CREATE TABLE counters (y)")]
    store = Outbox(path, schema=broken)
    with pytest.raises(StoreError, match="migration 1 -> 2 failed"):
        store.open()  # our bug, not a bad file: the data stays where it is
    store.close()
    assert store.replaced_corrupt is None
    old = sqlite3.connect(path)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT count(*) FROM sqlite_master WHERE name='counters'").fetchone()[0] == 0
    old.close()


def test_second_agent_on_the_same_store_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    with pytest.raises(StoreError, match="in use"):
        open_store(tmp_path / "o.db")
    store.close()


def test_unsynced_events_are_restamped_when_the_clock_syncs(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    boot = "boot-1"
    store.append([Event(EventType.READING, 3, 0, TimeQuality.UNSYNCED, data={},
                        mono=(boot, 1_000))])
    store.append([Event(EventType.READING, 3, 0, TimeQuality.UNSYNCED, data={},
                        mono=("older-boot", 1_000))])
    now_ns = time.time_ns()
    assert store.correct_unsynced(boot, now_ns, mono_now_ms=61_000) == 1
    docs = [json.loads(r[0]) for r in sql_rows(store, "SELECT payload FROM events ORDER BY seq")]
    assert docs[0]["time_quality"] == "corrected"
    from edge.clock import parse_rfc3339

    assert abs(parse_rfc3339(docs[0]["ts"]) - (now_ns - 60_000_000_000)) < 2_000_000
    assert docs[1]["time_quality"] == "unsynced"  # another boot: cannot be corrected
    store.close()


def test_retention_drops_old_telemetry_keeps_recent_alarms(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    old = time.time_ns() - 4 * 86400 * 10**9
    store.append([Event(EventType.READING, 3, old, TimeQuality.SYNCED, data={}),
                  Event(EventType.ALARM, 1, old, TimeQuality.SYNCED, data={})])
    dropped = store.prune(time.time_ns(), alarm_retention_s=7 * 86400,
                          telemetry_retention_s=72 * 3600)
    assert dropped == {3: 1}
    assert store.counters()["dropped.retention.3"] == 1
    store.close()


def test_after_a_reconnect_live_events_are_leased_apart_from_the_backlog(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    backlog = store.append([ev(3) for _ in range(50)]).seqs
    store.set_live_from()
    live = store.append([ev(3) for _ in range(5)]).seqs
    alarm = store.append([ev(1)]).seqs
    assert [x.seq for x in store.lease(10, max_prio=1)] == alarm
    assert [x.seq for x in store.lease(10, live=True)] == live
    assert [x.seq for x in store.lease(10, live=False)] == backlog[:10]
    assert [x.seq for x in store.lease(100, live=False)] == backlog[10:]
    assert store.lease(10) == []
    store.close()


def test_positions_have_their_own_retention(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    old = time.time_ns() - 2 * 86400 * 10**9
    store.append([Event(EventType.POSITION, 2, old, TimeQuality.SYNCED, data={"lat": 31.3}),
                  Event(EventType.STATE, 2, old, TimeQuality.SYNCED, data={"state": "online"}),
                  Event(EventType.POSITION, 2, time.time_ns(), TimeQuality.SYNCED, data={})])
    dropped = store.prune(time.time_ns(), alarm_retention_s=7 * 86400,
                          telemetry_retention_s=72 * 3600, position_retention_s=86400)
    assert dropped == {2: 1}
    kinds = [json.loads(r[0])["type"] for r in sql_rows(store, "SELECT payload FROM events")]
    assert kinds.count("position") == 1  # the fresh one
    assert "state" in kinds
    assert store.counters()["dropped.position_retention.2"] == 1
    store.close()


def test_positions_queued_before_the_type_column_keep_their_own_retention(
        tmp_path: Path) -> None:
    """Schema 4 adds the type without rewriting old rows (dead letters too): prune reads an
    untyped row's payload, and a payload that is not JSON is no position."""
    path = tmp_path / "o.db"
    open_store(path, schema=SCHEMA[:3]).close()
    old_ns = time.time_ns() - 2 * 86400 * 10**9
    db = sqlite3.connect(path)
    for payload in (b'{"type":"position","seq":1}', b'{"type":"state","seq":2}', b"\xff{"):
        db.execute("INSERT INTO events (prio, created_ns, payload) VALUES (2, ?, ?)",
                   (old_ns, payload))
    db.execute("INSERT INTO dead_letters (seq, prio, created_ns, attempts, reason, dead_ns, "
               "payload) VALUES (99, 2, ?, 5, 'x', ?, ?)",
               (old_ns, old_ns, b'{"type":"position","seq":99}'))
    db.commit()
    db.close()
    store = open_store(path)
    assert store.requeue_dead() == 1  # the requeued row keeps its type
    dropped = store.prune(time.time_ns(), alarm_retention_s=7 * 86400,
                          telemetry_retention_s=72 * 3600, position_retention_s=86400)
    assert dropped == {2: 2}
    left = [r[0] for r in sql_rows(store, "SELECT payload FROM events WHERE prio=2")]
    assert left == [b'{"type":"state","seq":2}', b"\xff{"]
    store.close()


def test_a_dead_lettered_position_is_kept_no_longer_than_positions_are(tmp_path: Path) -> None:
    """Personal data in dead letters too (reliability.md S12); other dead letters stay."""
    store = open_store(tmp_path / "o.db", max_attempts=1)
    old = time.time_ns() - 2 * 86400 * 10**9
    store.append([Event(EventType.POSITION, 2, old, TimeQuality.SYNCED, data={"lat": 31.3}),
                  Event(EventType.STATE, 2, old, TimeQuality.SYNCED, data={"state": "online"}),
                  Event(EventType.POSITION, 2, time.time_ns(), TimeQuality.SYNCED, data={})])
    leased = [x.seq for x in store.lease(10)]
    assert store.nack(leased, "rejected") == leased
    store.prune(time.time_ns(), alarm_retention_s=7 * 86400,
                telemetry_retention_s=72 * 3600, position_retention_s=86400)
    left = sorted(r[0] for r in sql_rows(store, "SELECT event_type FROM dead_letters"))
    assert left == ["position", "state"]  # the fresh position and the state
    assert store.counters()["dropped.position_retention.dead_letters"] == 1
    store.close()


def test_a_dead_lettered_position_requeued_keeps_its_type_and_its_retention(
        tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db", max_attempts=1)
    old = time.time_ns() - 2 * 86400 * 10**9
    store.append([Event(EventType.POSITION, 2, old, TimeQuality.SYNCED, data={"lat": 31.3}),
                  Event(EventType.STATE, 2, old, TimeQuality.SYNCED, data={"state": "online"})])
    leased = [x.seq for x in store.lease(10)]
    assert store.nack(leased, "rejected") == leased  # both dead letters
    assert store.requeue_dead() == 2
    assert sorted(r[0] for r in sql_rows(store, "SELECT event_type FROM events")) == \
        ["position", "state"]
    dropped = store.prune(time.time_ns(), alarm_retention_s=7 * 86400,
                          telemetry_retention_s=72 * 3600, position_retention_s=86400)
    assert dropped == {2: 1}
    assert store.counters()["dropped.position_retention.2"] == 1
    gap = sql_rows(store, "SELECT event_type FROM events WHERE event_type='gap'")
    assert gap == [("gap",)]  # the retention gap is typed too
    store.close()
