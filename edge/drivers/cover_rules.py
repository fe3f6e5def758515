"""A manhole cover's alarm rules, shared by the Modbus and the MQTT covers (pure, no I/O).

design/devices.md §2.1 (cover rules); prio per design/events.md: a cover off its seat is a
hole in the road (prio 0); flooding and a flat battery are ordinary alarms (prio 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edge.drivers.alarms import Debounced
from edge.drivers.base import AlarmChange, Value
from edge.kinds.device import DebouncedThreshold
from edge.kinds.manhole_tilt import TiltAlarms

COVER_OPEN = "cover_open"
COVER_DISPLACED = "cover_displaced"
WATER_LEVEL_HIGH = "water_level_high"
BATTERY_LOW = "battery_low"


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    value_key: str
    unit: str
    prio: int
    severity: int
    threshold: float
    tracker: Debounced
    event_class: str | None = None


def _tracker(rule: DebouncedThreshold, *, below: bool = False) -> Debounced:
    return Debounced(rule.threshold, rule.clear_below, rule.raise_after, rule.clear_after,
                     below=below)


class CoverRules:
    """Turn a cover's readings into alarm raises and clears."""

    def __init__(self, device: str, alarms: TiltAlarms) -> None:
        self.device = device
        rules = [
            _Rule(COVER_OPEN, "tilt_deg", "deg", 0, 1, alarms.cover_open.threshold,
                  _tracker(alarms.cover_open)),
            _Rule(COVER_DISPLACED, "tilt_deg", "deg", 0, 1, alarms.cover_displaced.threshold,
                  _tracker(alarms.cover_displaced)),
        ]
        if alarms.water_level_high is not None:
            rules.append(_Rule(WATER_LEVEL_HIGH, "water_level_m", "m", 1, 2,
                               alarms.water_level_high.threshold,
                               _tracker(alarms.water_level_high), alarms.water_event_class))
        if alarms.battery_low is not None:
            rules.append(_Rule(BATTERY_LOW, "battery_v", "V", 1, 3, alarms.battery_low.threshold,
                               _tracker(alarms.battery_low, below=True)))
        self.rules = tuple(rules)
        self.restored = False  # alarms still active before a restart taken over

    def restore(self, active: set[str]) -> None:
        """Take over alarms still active from before a restart (their case stays open)."""
        if not self.restored:
            for rule in self.rules:
                rule.tracker.active = rule.kind in active
            self.restored = True

    def evaluate(self, values: Mapping[str, Value]) -> list[AlarmChange]:
        """Feed one reading; return the transitions it completes.

        A value the reading lacks (a cover that reports no battery this time) is no sample:
        absence never clears an alarm.
        """
        out: list[AlarmChange] = []
        for rule in self.rules:
            value = values.get(rule.value_key)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            change = rule.tracker.update(float(value))
            if change is not None:
                out.append(AlarmChange(self.device, rule.kind, change, prio=rule.prio,
                                       severity=rule.severity, value=float(value),
                                       threshold=rule.threshold, unit=rule.unit,
                                       event_class=rule.event_class, data=dict(values)))
        return out
