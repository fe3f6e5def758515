"""Debounced threshold alarms: pure state machines, no I/O, no clock.

Raise after ``raise_after`` consecutive samples over the threshold; clear after
``clear_after`` consecutive samples past the hysteresis bound. Samples between the two bounds
reset both counters, so a value hovering at the threshold never flaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Transition = Literal["raised", "cleared"]


@dataclass(slots=True)
class Debounced:
    """One alarm condition on one value; ``below=True`` alarms on low values (battery, supply)."""

    threshold: float
    clear_at: float
    raise_after: int = 3
    clear_after: int = 3
    below: bool = False
    active: bool = False
    _over: int = 0
    _under: int = 0

    def __post_init__(self) -> None:
        bad = self.clear_at > self.threshold if not self.below else self.clear_at < self.threshold
        if bad:
            side = "above" if self.below else "below"
            raise ValueError(f"clear bound {self.clear_at} must be {side} {self.threshold}")

    def _is_alarm(self, value: float) -> bool:
        return value <= self.threshold if self.below else value >= self.threshold

    def _is_clear(self, value: float) -> bool:
        return value > self.clear_at if self.below else value < self.clear_at

    def update(self, value: float) -> Transition | None:
        """Feed one sample; return the transition it completes, if any."""
        if self._is_alarm(value):
            self._over, self._under = self._over + 1, 0
        elif self._is_clear(value):
            self._over, self._under = 0, self._under + 1
        else:
            self._over = self._under = 0
        if not self.active and self._over >= self.raise_after:
            self.active, self._over = True, 0
            return "raised"
        if self.active and self._under >= self.clear_after:
            self.active, self._under = False, 0
            return "cleared"
        return None
