"""Light schedules: which switch state a lamp should be in now (pure; no I/O, no clock).

An entry is a local time (``"18:30"``) or an astronomical one (``"sunset+15"``,
``"sunrise-10"``, minutes) with the state to take then. The state in force is the latest
entry at or before now, looking back to yesterday, so a gateway that reboots at 02:00 puts the
lamps back in the state the schedule wants instead of waiting for the next switch time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from edge.drivers.sun import sun_times

AT_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|(sunrise|sunset)([+-][0-9]{1,3})?)$"
_ASTRO = re.compile(r"^(sunrise|sunset)([+-][0-9]{1,3})?$")


@dataclass(frozen=True, slots=True)
class Step:
    """One schedule entry."""

    at: str
    on: bool
    dim_pct: int = 100


def is_astronomical(at: str) -> bool:
    """Return whether ``at`` depends on the sun (and so needs the asset's lat/lon)."""
    return _ASTRO.match(at) is not None


def step_time(at: str, day: dt.date, utc_offset_h: float, lat: float | None,
              lon: float | None) -> dt.datetime | None:
    """Return when ``at`` happens on local ``day`` (aware), or None (no sunset that day)."""
    zone = dt.timezone(dt.timedelta(hours=utc_offset_h))
    astro = _ASTRO.match(at)
    if astro is None:
        hh, mm = at.split(":")
        return dt.datetime.combine(day, dt.time(int(hh), int(mm)), zone)
    if lat is None or lon is None:
        return None
    rise, set_ = sun_times(round(lat, 3), round(lon, 3), day, utc_offset_h)
    base = rise if astro.group(1) == "sunrise" else set_
    if base is None:
        return None
    return base + dt.timedelta(minutes=int(astro.group(2) or 0))


def in_force(steps: Sequence[Step], now_utc: dt.datetime, utc_offset_h: float,
             lat: float | None, lon: float | None) -> tuple[Step, dt.datetime] | None:
    """Return the step in force at ``now_utc`` and when it took effect (None: no steps)."""
    zone = dt.timezone(dt.timedelta(hours=utc_offset_h))
    today = now_utc.astimezone(zone).date()
    best: tuple[Step, dt.datetime] | None = None
    for day in (today - dt.timedelta(days=1), today):
        for step in steps:
            when = step_time(step.at, day, utc_offset_h, lat, lon)
            if when is not None and when <= now_utc and (best is None or when >= best[1]):
                best = (step, when)
    return best
