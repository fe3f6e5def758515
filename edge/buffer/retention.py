"""What the queue drops by age, and the re-stamping of events queued before the clock synced.

Both run in the outbox's transactions (``Outbox.prune``, ``Outbox.correct_unsynced`` call them
with its connection); the gap event that announces a prune is the outbox's to write, since it
takes a seq.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from edge.buffer.counters import bump
from edge.model import ALARM_PRIOS

# rows queued before schema 4 carry no type: their payload says (0004_event_type)
IS_POSITION = ("(event_type='position' OR (event_type IS NULL AND "
               "CAST(payload AS TEXT) LIKE '%\"type\":\"position\"%'))")


@dataclass(slots=True)
class Pruned:
    """Events one prune deleted: per prio, and the seq range they spanned."""

    dropped: dict[int, int] = field(default_factory=dict)
    first_seq: int = 0
    last_seq: int = 0


def prune_expired(db: sqlite3.Connection, now_ns: int, *, alarm_retention_s: float,
                  telemetry_retention_s: float, position_retention_s: float | None) -> Pruned:
    """Delete events older than their retention in the caller's transaction (counted).

    Positions (personal data) have their own, usually shorter, retention, and it reaches the
    dead letters too.
    """
    out = Pruned()
    seqs: list[int] = []
    rules: list[tuple[int, str, float, str]] = []
    if position_retention_s is not None:
        rules.append((2, IS_POSITION, position_retention_s, "position_retention"))
    rules += [(prio, "1", alarm_retention_s if prio in ALARM_PRIOS else
               telemetry_retention_s, "retention") for prio in range(4)]
    for prio, extra, keep_s, reason in rules:
        where = f"prio=? AND created_ns < ? AND {extra}"
        args = (prio, now_ns - int(keep_s * 1e9))
        row = db.execute("SELECT count(*), min(seq), max(seq) FROM events WHERE "  # noqa: S608
                         + where, args).fetchone()
        if row[0]:
            db.execute("DELETE FROM events WHERE " + where, args)  # noqa: S608
            out.dropped[prio] = out.dropped.get(prio, 0) + int(row[0])
            seqs += [int(row[1]), int(row[2])]
            bump(db, f"dropped.{reason}.{prio}", int(row[0]))
    if position_retention_s is not None:
        # a dead letter left the stream (counted then), but a position in it is still
        # personal data kept on the gateway: the same limit (reliability.md S12)
        cutoff_ns = now_ns - int(position_retention_s * 1e9)
        gone = db.execute("DELETE FROM dead_letters WHERE created_ns < ? AND "  # noqa: S608
                          + IS_POSITION, (cutoff_ns,)).rowcount
        if gone:
            bump(db, "dropped.position_retention.dead_letters", gone)
    if seqs:
        out.first_seq, out.last_seq = min(seqs), max(seqs)
    return out


def restamped(db: sqlite3.Connection, boot_id: str, wall_now_ns: int, mono_now_ms: int
              ) -> list[tuple[bytes, int, int]]:
    """Return (payload, created_ns, seq) for this boot's unsynced events, re-stamped.

    The clock just synced: each event's time is now minus the monotonic time since it was
    read, marked ``corrected``.
    """
    from edge.clock import rfc3339_ms  # noqa: PLC0415 - keeps the hot import path small

    rows = db.execute("SELECT seq, mono_ms, payload FROM events WHERE boot_id=?",
                      (boot_id,)).fetchall()
    updates = []
    for seq, mono_ms, payload in rows:
        ts_ns = wall_now_ns - (mono_now_ms - int(mono_ms)) * 1_000_000
        doc = json.loads(payload)
        doc["ts"] = rfc3339_ms(ts_ns)
        doc["time_quality"] = "corrected"
        updates.append((json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(),
                        ts_ns, int(seq)))
    return updates
