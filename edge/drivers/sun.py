"""Sunrise and sunset for an asset's position (astral; pure computation, no I/O).

Used by the streetlight's ``day_burn`` alarm and by astronomical light schedules
(``sunset+15``). Times are computed for the *local* date (gateway.utc_offset_h), so a city
east of Greenwich gets this morning's sunrise, not tomorrow's.
"""

from __future__ import annotations

import datetime as dt
import functools

from astral import Observer
from astral.sun import sunrise, sunset


@functools.lru_cache(maxsize=64)
def sun_times(lat: float, lon: float, day: dt.date, utc_offset_h: float
              ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Return (sunrise, sunset) on local ``day`` as aware datetimes.

    Either is None where the sun does not rise or set that day (polar day or night).
    """
    zone = dt.timezone(dt.timedelta(hours=utc_offset_h))
    observer = Observer(latitude=lat, longitude=lon)
    try:
        rise: dt.datetime | None = sunrise(observer, day, tzinfo=zone)
    except ValueError:
        rise = None
    try:
        set_: dt.datetime | None = sunset(observer, day, tzinfo=zone)
    except ValueError:
        set_ = None
    return rise, set_


def is_day(lat: float, lon: float, now_utc: dt.datetime, utc_offset_h: float, *,
           margin_min: float = 0.0) -> bool:
    """Return whether the sun is up at ``now_utc`` by more than ``margin_min`` on both sides.

    Polar day/night (no sunrise or sunset) returns False: no day_burn alarm there, ever —
    better a missed alarm than a false one every hour of the polar summer.
    """
    zone = dt.timezone(dt.timedelta(hours=utc_offset_h))
    local = now_utc.astimezone(zone)
    rise, set_ = sun_times(round(lat, 3), round(lon, 3), local.date(), utc_offset_h)
    if rise is None or set_ is None:
        return False
    margin = dt.timedelta(minutes=margin_min)
    return rise + margin <= local <= set_ - margin
