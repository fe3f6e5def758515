"""GPS alarm rules (pure): no fix, overspeed, stopped too long, geofences; and thinning."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.drivers._codecs.nmea import Fix
from edge.drivers.alarms import Debounced
from edge.drivers.geo import distance_m, heading_change_deg, inside
from edge.kinds.gps import GpsDevice

STOPPED_BELOW_KMH = 1.0
GPS_NO_FIX = "gps_no_fix"
OVERSPEED = "overspeed"
STOPPED_TOO_LONG = "stopped_too_long"
# a fence's alarm is this prefix and its name: geofence_exit:depot
GEOFENCE_ENTER, GEOFENCE_EXIT = "geofence_enter:", "geofence_exit:"
ALARMS = (GPS_NO_FIX, OVERSPEED, STOPPED_TOO_LONG, GEOFENCE_ENTER, GEOFENCE_EXIT)


@dataclass(frozen=True, slots=True)
class Change:
    """An alarm transition the driver turns into an AlarmChange."""

    kind: str
    state: str
    value: float | None = None
    threshold: float | None = None
    unit: str | None = None


@dataclass
class GpsRules:
    """Evaluates one tracker's rules; ``now_s`` is monotonic seconds (injected)."""

    config: GpsDevice
    _last_fix_s: float | None = None
    _first_tick_s: float | None = None
    _stopped_since_s: float | None = None
    _no_fix_active: bool = False
    _stopped_active: bool = False
    _fence_alarm: dict[str, bool] = field(default_factory=dict)
    _overspeed: Debounced | None = None
    _last_report: tuple[float, float, float | None, float] | None = None

    def __post_init__(self) -> None:
        limit = self.config.overspeed_kmh
        if limit is not None:
            self._overspeed = Debounced(limit, limit - 5, raise_after=3, clear_after=3)

    def on_fix(self, fix: Fix, now_s: float) -> list[Change]:
        """Feed a valid fix."""
        out: list[Change] = []
        self._last_fix_s = now_s
        if self._no_fix_active:
            self._no_fix_active = False
            out.append(Change(GPS_NO_FIX, "cleared"))
        speed = fix.speed_kmh
        if speed is not None and self._overspeed is not None:
            change = self._overspeed.update(speed)
            if change:
                out.append(Change(OVERSPEED, change, speed, self.config.overspeed_kmh, "km/h"))
        out += self._stopped(speed, now_s)
        for fence in self.config.geofences:
            is_in = inside(fix.lat, fix.lon, fence.polygon)
            alarm = (not is_in) if fence.alarm_on == "exit" else is_in
            was = self._fence_alarm.get(fence.name, False)
            if alarm != was:
                self._fence_alarm[fence.name] = alarm
                prefix = GEOFENCE_EXIT if fence.alarm_on == "exit" else GEOFENCE_ENTER
                out.append(Change(prefix + fence.name,
                                  "raised" if alarm else "cleared"))
        return out

    def _stopped(self, speed: float | None, now_s: float) -> list[Change]:
        limit = self.config.stopped_too_long_s
        if limit is None or speed is None:
            return []
        if speed >= STOPPED_BELOW_KMH:
            self._stopped_since_s = None
            if self._stopped_active:
                self._stopped_active = False
                return [Change(STOPPED_TOO_LONG, "cleared")]
            return []
        if self._stopped_since_s is None:
            self._stopped_since_s = now_s
        stopped_s = now_s - self._stopped_since_s
        if stopped_s >= limit and not self._stopped_active:
            self._stopped_active = True
            return [Change(STOPPED_TOO_LONG, "raised", round(stopped_s), limit, "s")]
        return []

    def on_tick(self, now_s: float) -> list[Change]:
        """Call regularly (with or without fixes): detects a lost fix."""
        if self._first_tick_s is None:
            self._first_tick_s = now_s
        since = self._last_fix_s if self._last_fix_s is not None else self._first_tick_s
        if not self._no_fix_active and now_s - since >= self.config.no_fix_s:
            self._no_fix_active = True
            return [Change(GPS_NO_FIX, "raised", round(now_s - since), self.config.no_fix_s,
                           "s")]
        return []

    def due(self, fix: Fix, now_s: float) -> bool:
        """Thinning: report when moved, turned, or after ``max_interval_s``; remember it."""
        last = self._last_report
        turned = moved = False
        if last is not None:
            lat, lon, course, _at = last
            moved = distance_m(lat, lon, fix.lat, fix.lon) >= self.config.min_distance_m
            turned = course is not None and fix.course_deg is not None and \
                heading_change_deg(course, fix.course_deg) >= self.config.heading_change_deg
        if last is None or moved or turned or now_s - last[3] >= self.config.max_interval_s:
            self._last_report = (fix.lat, fix.lon, fix.course_deg, now_s)
            return True
        return False
