"""The ``gap`` event the outbox writes when it has to drop events (design/events.md)."""

from __future__ import annotations

from edge.buffer.store import GapFactory
from edge.clock import Clock
from edge.model import Event, EventType, Prio


def make_gap_factory(clock: Clock) -> GapFactory:
    """Return the outbox's gap-event factory: ``gap`` is prio 0, so it drains first."""

    def gap(reason: str, dropped: dict[int, int], first_seq: int, last_seq: int) -> Event:
        return Event(EventType.GAP, Prio.CRITICAL, clock.now_ns(), clock.quality(),
                     data={"reason": reason, "dropped": {str(k): v for k, v in dropped.items()},
                           "first_seq": first_seq, "last_seq": last_seq})

    return gap
