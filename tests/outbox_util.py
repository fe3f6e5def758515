"""Helpers for outbox tests."""

from __future__ import annotations

import time
from pathlib import Path

from edge.buffer.gaps import make_gap_factory
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality
from edge.model import Event, EventType


def ev(prio: int = 3, size: int = 0, **data: object) -> Event:
    """An event of ``prio`` with an optional padding of ``size`` bytes."""
    payload: dict[str, object] = dict(data)
    if size:
        payload["pad"] = "x" * size
    etype = EventType.ALARM if prio <= 1 else EventType.READING
    return Event(etype, prio, time.time_ns(), TimeQuality.SYNCED, device="dev", data=payload)


def open_store(path: Path, **kwargs: object) -> Outbox:
    """Open an outbox with a gap factory like the agent's."""
    store = Outbox(path, gap_factory=make_gap_factory(Clock("system")), **kwargs)  # type: ignore[arg-type]
    store.open()
    return store
