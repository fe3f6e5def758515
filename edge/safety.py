"""What the device safety rules read (check 5 of design/events.md §Commands).

The rules themselves are declared with their actions in each kind's module (``Action.safety``,
edge/drivers/kind.py) and run by ``edge.commands.safety.SafetyRules``; this module holds what
the drivers and the rules share: a lamp's relay log (what the switch rate counts) and the
quiet-hours window.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque

SWITCH_WINDOW_S = 60.0
MAX_SWITCHES_KEPT = 64  # more than any max_switches_per_min (<= 60): the window is always whole


class RelayLog:
    """A lamp relay's known state and the monotonic times it changed (what wears it).

    The driver owns one and feeds it every state it verifies or polls, whoever switched the
    relay (a command, a schedule step, a hand at the cabinet); the switch-rate rule reads it.
    It counted ``light.set`` commands before: four ``on: true`` to a lamp already on made the
    fifth ``unsafe`` (issue 20 #10).
    """

    def __init__(self) -> None:
        self.on: bool | None = None  # None: not read yet
        self.changes: deque[float] = deque(maxlen=MAX_SWITCHES_KEPT)

    def observe(self, on: bool, now_mono: float | None = None) -> None:
        """Record that the relay is ``on`` now; a change of a known state is one switch."""
        if self.on is not None and on != self.on:
            self.changes.append(time.monotonic() if now_mono is None else now_mono)
        self.on = on

    def recent(self, now_mono: float) -> int:
        """Return the switches within the last SWITCH_WINDOW_S."""
        return sum(1 for at in self.changes if now_mono - at <= SWITCH_WINDOW_S)


def in_quiet_hours(spec: str, local: dt.time) -> bool:
    """Return whether ``local`` falls in ``HH:MM-HH:MM`` (which may wrap past midnight)."""
    start_s, end_s = spec.split("-")
    start, end = dt.time.fromisoformat(start_s), dt.time.fromisoformat(end_s)
    return start <= local < end if start <= end else local >= start or local < end
