"""Outbox: a SQLite store of events that only an acknowledgement removes.

One ``Outbox`` must be used from one thread (``AsyncOutbox`` gives it a thread of its own).
Its file is a ``database.StoreFile``: the lock, the one writer connection and what happens at
open (WAL + ``synchronous=FULL`` + ``psow=0``, which lost no acknowledged row over ~1,400
simulated crash states where ``NORMAL`` lost up to 89 commits: design/reliability.md §1; the
quick check, migrations, a corrupt file moved aside, a full disk told from a corrupt file).
The typed stores kept in the same database (``alarm_state.AlarmState``,
``command_journal.CommandJournal``) use that connection and its transactions; nothing outside
``edge/buffer/`` writes or reads SQL (issue 13). ``Outbox`` is the queue itself; what it keeps
beside the queue has a module of its own: the schema and its migration (``migrations``), the
disk-full reserve (``ballast``), the seq high-water mark (``seq_reservation``), the uplink's
view (``lease``), the persisted counters (``counters``), and what is dropped by age and
re-stamped after a clock sync (``retention``).

Contract:

* ``append`` commits before it returns: a returned seq is durable.
* ``seq`` is strictly increasing and never reused, also after deletes, restarts and after a
  corrupt store was replaced: a reservation file beside the store records a high-water mark
  that every assigned seq stays below (written before the seq is used).
* ``lease`` hands out the next events by (prio, seq) and never the same event twice until it is
  nacked; leases live in memory, so after a crash every unacked event is leased again.
* ``ack`` deletes; ``nack`` counts attempts and moves an event to ``dead_letters`` after
  ``max_attempts`` (the queue head never blocks).
* Over the quota, telemetry (prio 3, then 2) is evicted oldest first and a ``gap`` event tells
  the platform; prio 0-1 are never evicted. When only alarms are left, telemetry is refused.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.buffer.alarm_state import AlarmState, AlarmStateChange
from edge.buffer.command_journal import CommandJournal
from edge.buffer.counters import bump, read_counters
from edge.buffer.database import StoreFile, is_full
from edge.buffer.lease import Leased
from edge.buffer.migrations import SCHEMA
from edge.buffer.retention import prune_expired, restamped
from edge.buffer.seq_reservation import SeqReservation
from edge.errors import StoreError, StoreFullError
from edge.model import ALARM_PRIOS, Event, encode_event

log = logging.getLogger(__name__)

HIGH_WATERMARK = 0.90  # evict above this share of the quota ...
LOW_WATERMARK = 0.80  # ... down to this share
DELETE_CHUNK = 500

GapFactory = Callable[[str, dict[int, int], int, int], Event]


@dataclass(slots=True)
class AppendResult:
    """What one append did: the seqs given, and what had to be dropped to make room."""

    seqs: list[int] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)  # prio -> events not stored
    evicted: dict[int, int] = field(default_factory=dict)  # prio -> older events evicted
    gap_seqs: list[int] = field(default_factory=list)  # gap events the store added


class Outbox:
    """The durable store. Not thread-safe: one thread owns it (see ``AsyncOutbox``)."""

    def __init__(self, path: Path, *, quota_bytes: int = 256 * 1024 * 1024,
                 max_attempts: int = 5, synchronous: str = "FULL",
                 gap_factory: GapFactory | None = None,
                 schema: Sequence[tuple[int, str]] = SCHEMA) -> None:
        self.path = path
        self.max_attempts = max_attempts
        self._gap_factory = gap_factory
        # the file: lock, connection, checks, corrupt and full-disk handling at open
        self._file = StoreFile(path, quota_bytes=quota_bytes, synchronous=synchronous,
                               schema=schema)
        self._next_seq = 1
        self._seqs = SeqReservation(path)  # the high-water mark every seq stays below
        # highest seq leased per (prio, live/backlog/all): a lease scans from there
        self._cursors: dict[tuple[int, bool | None], int] = {}
        self._live_from = 1
        self._leased: set[int] = set()
        self._ballast_check_at = 0.0
        self._refused_unannounced: dict[int, int] = {}
        self._refusal_gap_at = 0.0
        # the typed stores kept in the same database: same connection, same transactions
        self.alarms = AlarmState(self._file.conn)
        self.journal = CommandJournal(self._file.conn, self._file.tx)

    # ---- opening ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating, checking, migrating); a corrupt file is moved aside, never fatal."""
        existed = self._file.open()
        self._seqs.load()
        db = self._conn
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        db_high = int(row[0]) if row else 0
        # A fresh store (first boot, or a corrupt one replaced) continues above the reservation.
        floor = db_high if existed else max(db_high, self._seqs.reserved_upto)
        self._next_seq = max(floor, db_high) + 1
        self._cursors.clear()
        self._live_from = self._next_seq
        self._leased.clear()

    @property
    def quota_bytes(self) -> int:
        """The store's quota (its file's: the page cap at open is derived from it)."""
        return self._file.quota_bytes

    @property
    def replaced_corrupt(self) -> Path | None:
        """Where open() moved a corrupt file aside (None: it did not)."""
        return self._file.replaced_corrupt

    @property
    def corrupt_reason(self) -> str:
        """Why open() found the file corrupt."""
        return self._file.corrupt_reason

    def restore_ballast(self) -> bool:
        """Create the reserve file when there is room for it twice over; return if present."""
        return self._file.ballast.restore()

    def _release_ballast(self) -> bool:
        return self._file.ballast.release()

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._file.conn()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._file.tx()

    def close(self) -> None:
        """Checkpoint and close; releases the lock."""
        self._file.close()

    def _reserve(self, upto: int) -> None:
        """Durably record that seqs up to ``upto`` may be used (before any is used)."""
        self._seqs.reserve(upto, self._next_seq)

    # ---- writing ---------------------------------------------------------------------------

    def append(self, events: Sequence[Event], ack_seqs: Sequence[int] = (),
               alarm_state: Sequence[AlarmStateChange] = ()) -> AppendResult:
        """Store ``events``, delete ``ack_seqs`` and apply ``alarm_state`` in one transaction.

        Returns the seqs given, in order, and what was refused or evicted to make room.
        Raises StoreFullError only when alarms cannot be stored (telemetry is shed first).
        """
        result = AppendResult()
        pending = list(events)
        # On a full disk or quota, escalate: rewind the WAL into the blocks it has, then evict
        # telemetry, then shed the telemetry in hand and spend the reserve (the ballast).
        for attempt in range(4):
            try:
                self._append_tx(pending, ack_seqs, alarm_state, result)
            except sqlite3.Error as exc:
                if not is_full(exc):
                    raise StoreError(f"append failed: {exc}") from exc
                if attempt == 1:
                    self._make_room(result, need_bytes=sum(256 + 32 * len(e.data)
                                                           for e in pending))
                elif attempt == 2:
                    for e in pending:
                        if e.prio not in ALARM_PRIOS:
                            result.refused[e.prio] = result.refused.get(e.prio, 0) + 1
                    pending = [e for e in pending if e.prio in ALARM_PRIOS]
                    self._release_ballast()
                self._rewind_wal()
                continue
            self._after_append(result)
            if result.refused and attempt >= 2:
                self._count_refused(result)
            return result
        self._count_refused(result)
        raise StoreFullError(f"{self.path}: no room even for {len(pending)} alarm events")

    def _rewind_wal(self) -> None:
        """Checkpoint so the next commit writes the WAL from its start, into blocks it has."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")

    def _append_tx(self, events: Sequence[Event], ack_seqs: Sequence[int],
                   alarm_state: Sequence[AlarmStateChange], result: AppendResult) -> None:
        over = self._file.used_bytes() > self._file.room_bytes() * HIGH_WATERMARK
        alarms_only = over and self._telemetry_count() == 0
        refused: dict[int, int] = {}
        stored: list[int] = []
        saved_next = self._next_seq
        evicted_before = dict(result.evicted)
        gaps_before = len(result.gap_seqs)
        try:
            with self._tx() as db:
                if over and not alarms_only:
                    self._evict(db, result, self._file.room_bytes() * LOW_WATERMARK)
                keep = [e for e in events if not alarms_only or e.prio in ALARM_PRIOS]
                for e in events:
                    if alarms_only and e.prio not in ALARM_PRIOS:
                        refused[e.prio] = refused.get(e.prio, 0) + 1
                first = self._next_seq
                self._seqs.ensure(first + len(keep), self._next_seq)
                rows = []
                for seq, event in enumerate(keep, start=first):
                    boot, mono = event.mono or (None, None)
                    rows.append((seq, event.prio, event.ts_ns, boot, mono, event.type.value,
                                 encode_event(event, seq)))
                    stored.append(seq)
                if rows:
                    db.executemany("INSERT INTO events (seq, prio, created_ns, boot_id, "
                                   "mono_ms, event_type, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   rows)
                self._next_seq = first + len(rows)
                self._delete(db, ack_seqs)
                AlarmState.write(db, alarm_state)
                for prio, n in refused.items():
                    bump(db, f"dropped.quota_refused.{prio}", n)
                    self._refused_unannounced[prio] = self._refused_unannounced.get(prio, 0) + n
                self._announce_refusals(db, result)
        except BaseException:
            # nothing of this transaction happened: give back its seqs and its counts
            self._next_seq = saved_next
            result.evicted = evicted_before
            del result.gap_seqs[gaps_before:]
            raise
        result.seqs.extend(stored)
        for prio, n in refused.items():
            result.refused[prio] = result.refused.get(prio, 0) + n
        self._leased.difference_update(ack_seqs)

    def _after_append(self, result: AppendResult) -> None:
        if result.evicted:
            log.warning("outbox over quota or disk full: evicted %s (prio: events)",
                        result.evicted)
        now = time.monotonic()
        if now >= self._ballast_check_at and not self._file.ballast.exists():
            self._ballast_check_at = now + 10.0
            if self.restore_ballast():
                log.info("outbox: disk space is back; reserve restored")

    def _count_refused(self, result: AppendResult) -> None:
        with contextlib.suppress(sqlite3.Error), self._tx() as db:
            for prio, n in result.refused.items():
                bump(db, f"dropped.disk_full.{prio}", n)

    def _make_room(self, result: AppendResult, need_bytes: int) -> None:
        """Evict telemetry so that a DELETE-freed page can take new rows (disk or quota full)."""
        for _ in range(2):
            try:
                with self._tx() as db:
                    target = min(self._file.used_bytes(), self._file.room_bytes()) * LOW_WATERMARK \
                        - need_bytes
                    self._evict(db, result, max(target, 0))
            except sqlite3.Error as exc:
                if not is_full(exc) or not self._release_ballast():
                    log.warning("outbox could not evict on a full disk: %s", exc)
                    return
            else:
                self._rewind_wal()
                return

    def _evict(self, db: sqlite3.Connection, result: AppendResult, target_bytes: float) -> None:
        """Delete oldest telemetry (prio 3, then 2) until used bytes ≤ target; emit a gap."""
        dropped: dict[int, int] = {}
        first_seq, last_seq = 0, 0
        for prio in (3, 2):
            while self._file.used_bytes() > target_bytes:
                seqs = [r[0] for r in db.execute(
                    "SELECT seq FROM events WHERE prio=? ORDER BY seq LIMIT ?",
                    (prio, DELETE_CHUNK))]
                if not seqs:
                    break
                self._delete(db, seqs)
                dropped[prio] = dropped.get(prio, 0) + len(seqs)
                first_seq = min(first_seq or seqs[0], seqs[0])
                last_seq = max(last_seq, seqs[-1])
        if not dropped:
            return
        for prio, n in dropped.items():
            bump(db, f"dropped.quota.{prio}", n)
            result.evicted[prio] = result.evicted.get(prio, 0) + n
        seq = self._insert_gap(db, "quota", dropped, first_seq, last_seq)
        if seq is not None:
            result.gap_seqs.append(seq)

    def _announce_refusals(self, db: sqlite3.Connection, result: AppendResult) -> None:
        """Write one gap event for telemetry refused lately (at most one a minute)."""
        now = time.monotonic()
        if not self._refused_unannounced or now < self._refusal_gap_at:
            return
        seq = self._insert_gap(db, "quota_refused", self._refused_unannounced, 0, 0)
        if seq is not None:
            result.gap_seqs.append(seq)
        self._refused_unannounced = {}
        self._refusal_gap_at = now + 60.0

    def _delete(self, db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        for i in range(0, len(seqs), DELETE_CHUNK):
            chunk = list(seqs[i:i + DELETE_CHUNK])
            db.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)  # noqa: S608 - placeholders only

    def _telemetry_count(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM (SELECT 1 FROM events WHERE prio >= 2 "
                                 "LIMIT 1)").fetchone()
        return int(row[0])

    # ---- the uplink's side -----------------------------------------------------------------

    def set_live_from(self) -> int:
        """Mark everything queued now as backlog (a connection just came up); return the split.

        ``lease(live=True)`` then hands out only events stored from now on,
        ``lease(live=False)`` only the backlog, each in (prio, seq) order.
        """
        self._live_from = self._next_seq
        self._cursors.clear()
        return self._live_from

    def lease(self, max_events: int, max_bytes: int = 1 << 30, max_prio: int = 3,
              live: bool | None = None) -> list[Leased]:
        """Return up to ``max_events`` unleased events of prio ≤ ``max_prio``.

        Lowest prio first, then oldest; ``live`` restricts to events stored after (True) or
        before (False) the last ``set_live_from``.
        """
        out: list[Leased] = []
        size = 0
        db = self._conn
        low, high = {None: (0, 1 << 62), True: (self._live_from - 1, 1 << 62),
                     False: (0, self._live_from)}[live]
        for prio in range(max_prio + 1):
            key = (prio, live)
            while len(out) < max_events:
                want = max_events - len(out)
                after = max(self._cursors.get(key, 0), low)
                rows = db.execute(
                    "SELECT seq, payload, attempts FROM events WHERE prio=? AND seq>? AND seq<? "
                    "ORDER BY seq LIMIT ?", (prio, after, high, want)).fetchall()
                if not rows:
                    break
                for seq, payload, attempts in rows:
                    self._cursors[key] = seq
                    if seq in self._leased:
                        continue
                    if out and size + len(payload) > max_bytes:
                        return self._mark(out)
                    out.append(Leased(seq, prio, bytes(payload), attempts))
                    size += len(payload)
                if len(rows) < want:
                    break
        return self._mark(out)

    def _mark(self, out: list[Leased]) -> list[Leased]:
        self._leased.update(item.seq for item in out)
        return out

    def ack(self, seqs: Sequence[int]) -> None:
        """Delete acknowledged events (committed before returning)."""
        with self._tx() as db:
            self._delete(db, seqs)
        self._leased.difference_update(seqs)

    def release(self, seqs: Sequence[int]) -> None:
        """Return leased events to the queue without counting an attempt (link lost)."""
        self._unlease(seqs)

    def _unlease(self, seqs: Sequence[int]) -> None:
        self._leased.difference_update(seqs)
        if not seqs:
            return
        rows = self._conn.execute(
            f"SELECT prio, min(seq) FROM events WHERE seq IN ({','.join('?' * len(seqs))}) "  # noqa: S608
            "GROUP BY prio", list(seqs)).fetchall()
        for prio, low in rows:
            for key in [k for k in self._cursors if k[0] == prio]:
                self._cursors[key] = min(self._cursors[key], int(low) - 1)

    def nack(self, seqs: Sequence[int], reason: str) -> list[int]:
        """Count a failed attempt; return the seqs moved to dead letters after max_attempts."""
        now = time.time_ns()
        with self._tx() as db:
            marks = ",".join("?" * len(seqs))
            db.execute(f"UPDATE events SET attempts = attempts + 1 WHERE seq IN ({marks})",  # noqa: S608
                       list(seqs))
            dead = [r[0] for r in db.execute(
                f"SELECT seq FROM events WHERE seq IN ({marks}) AND attempts >= ?",  # noqa: S608
                [*seqs, self.max_attempts])]
            if dead:
                dmarks = ",".join("?" * len(dead))
                db.execute("INSERT OR REPLACE INTO dead_letters (seq, prio, created_ns, attempts, "  # noqa: S608
                           "reason, dead_ns, event_type, payload) SELECT seq, prio, "
                           "created_ns, attempts, ?, ?, event_type, payload FROM events "
                           f"WHERE seq IN ({dmarks})",
                           [reason, now, *dead])
                self._delete(db, dead)
                bump(db, "dead_letters", len(dead))
        self._leased.difference_update(dead)
        self._unlease([s for s in seqs if s not in set(dead)])
        return dead

    def requeue_dead(self) -> int:
        """Move every dead letter back to the queue (attempts reset); return how many."""
        with self._tx() as db:
            n = db.execute("INSERT OR IGNORE INTO events (seq, prio, created_ns, attempts, "
                           "event_type, payload) SELECT seq, prio, created_ns, 0, event_type, "
                           "payload FROM dead_letters").rowcount
            db.execute("DELETE FROM dead_letters")
        self._cursors.clear()  # requeued seqs are below the cursors
        return int(n)

    # ---- maintenance -----------------------------------------------------------------------

    def prune(self, now_ns: int, *, alarm_retention_s: float, telemetry_retention_s: float,
              position_retention_s: float | None = None) -> dict[int, int]:
        """Drop events older than their retention (``retention``), announced by a gap event."""
        with self._tx() as db:
            pruned = prune_expired(db, now_ns, alarm_retention_s=alarm_retention_s,
                                   telemetry_retention_s=telemetry_retention_s,
                                   position_retention_s=position_retention_s)
            if pruned.dropped:
                self._insert_gap(db, "retention", pruned.dropped, pruned.first_seq,
                                 pruned.last_seq)
        return pruned.dropped

    def _insert_gap(self, db: sqlite3.Connection, reason: str, dropped: dict[int, int],
                    first_seq: int, last_seq: int) -> int | None:
        """Store a ``gap`` event in the current transaction; return its seq."""
        if self._gap_factory is None:
            return None
        gap = self._gap_factory(reason, dropped, first_seq, last_seq)
        seq = self._next_seq
        self._seqs.ensure(seq + 1, self._next_seq)
        db.execute("INSERT INTO events (seq, prio, created_ns, event_type, payload) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (seq, gap.prio, gap.ts_ns, gap.type.value, encode_event(gap, seq)))
        self._next_seq = seq + 1
        return seq

    def correct_unsynced(self, boot_id: str, wall_now_ns: int, mono_now_ms: int) -> int:
        """Re-stamp this boot's unsynced events from monotonic time (clock just synced)."""
        updates = restamped(self._conn, boot_id, wall_now_ns, mono_now_ms)
        if updates:
            with self._tx() as db:
                db.executemany("UPDATE events SET payload=?, created_ns=?, boot_id=NULL, "
                               "mono_ms=NULL WHERE seq=?", updates)
        # leased copies were already sent unsynced; re-leasing sends the corrected version
        return len(updates)

    # ---- small key-value state kept with the events ----------------------------------------

    def counters(self) -> dict[str, int]:
        """Return the persisted counters (drops by reason and prio, dead letters, ...)."""
        return read_counters(self._conn)

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a persisted counter."""
        with self._tx() as db:
            bump(db, name, n)

    def seq_baseline(self) -> dict[str, int]:
        """Return the seq baseline the uplink's ``state`` carries: ``seq_low`` and ``seq_high``.

        ``seq_low``: the lowest seq still held (queued or dead-lettered), ``seq_high`` + 1 when
        none is; ``seq_high``: the last seq committed (0 before the first). Read at each
        publication of ``state`` only (birth, change, heartbeat): indexed look-ups, no scan.
        """
        seq_high = self._next_seq - 1
        row = self._conn.execute("SELECT MIN(s) FROM (SELECT MIN(seq) AS s FROM events "
                                 "UNION ALL SELECT MIN(seq) FROM dead_letters)").fetchone()
        low = row[0] if row is not None and row[0] is not None else seq_high + 1
        return {"seq_low": int(low), "seq_high": seq_high}

    def stats(self, now_ns: int | None = None) -> dict[str, Any]:
        """Return depth and bytes per prio, oldest age, dead letters and drop counters.

        Reads the trigger-kept ``queue_depth`` rows and one indexed row per prio, never the
        queue itself: with 1 M queued a scan held the store's thread ~0.7 s (issue 14 #7).
        """
        now = time.time_ns() if now_ns is None else now_ns
        db = self._conn
        by_prio = {}
        dead = 0
        for prio, n, size in db.execute(
                "SELECT prio, events, bytes FROM queue_depth WHERE events > 0 ORDER BY prio"):
            if prio < 0:
                dead = int(n)
                continue
            # the oldest is the lowest seq of its prio (events_prio_seq index); re-stamped
            # events keep their seq, so this is the head the uplink drains next
            row = db.execute("SELECT created_ns FROM events WHERE prio=? ORDER BY seq LIMIT 1",
                             (prio,)).fetchone()
            oldest = int(row[0]) if row else now
            by_prio[str(prio)] = {"events": int(n), "bytes": int(size),
                                  "oldest_age_s": round(max(0, now - oldest) / 1e9, 3)}
        counters = self.counters()
        return {
            "depth": sum(p["events"] for p in by_prio.values()),
            "by_prio": by_prio,
            "dead_letters": dead,
            "used_bytes": self._file.used_bytes(),
            "quota_bytes": self.quota_bytes,
            "next_seq": self._next_seq,
            "drops": {k.removeprefix("dropped."): v for k, v in counters.items()
                      if k.startswith("dropped.")},
            "dead_lettered_total": counters.get("dead_letters", 0),
        }

    def export(self) -> Iterator[bytes]:
        """Yield every queued event's JSON, by (prio, seq), in short read transactions."""
        for prio in range(4):
            last = 0
            while True:
                rows = self._conn.execute("SELECT seq, payload FROM events WHERE prio=? AND "
                                          "seq>? ORDER BY seq LIMIT 1000", (prio, last)).fetchall()
                if not rows:
                    break
                for seq, payload in rows:
                    last = seq
                    yield bytes(payload)
