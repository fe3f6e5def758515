"""A GPS tracker's devices.yaml shape, work coverage and asset class (design/devices.md §2.4)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from edge.drivers.geo import distance_m
from edge.kinds.device import WEEKDAYS, DeviceBase, FieldProblemsError, Weekday
from edge.shapes import Finite, Ge, Gt, Le, MaxLen, MinLen, Pattern, shape


@shape
class Geofence:
    """A polygon the vehicle must stay in (``alarm_on: exit``) or keep out of (``enter``)."""

    name: Annotated[str, MinLen(1), MaxLen(60)]
    polygon: Annotated[list[Annotated[list[float], MinLen(2), MaxLen(2)]], MinLen(3)]
    alarm_on: Literal["exit", "enter"] = "exit"


LatLon = Annotated[list[Annotated[float, Finite()]], MinLen(2), MaxLen(2)]
# a truck's work roads are discretised into units at load (edge/drivers/coverage.py); this
# bounds the memory and the time of that (200 km of road at 5 m, or 5 km² of squares)
WORK_MAX_UNITS = 40_000
WORK_MAX_SPAN_M = 50_000.0  # one city: the local plane projection stays within 0.1 %


def _point_error(point: list[float]) -> str | None:
    lat, lon = point
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return f"[{lat}, {lon}] is not a [lat, lon] position"
    return None


@shape
class WorkShift:
    """A shift in local time (``gateway.utc_offset_h``); an end before the start is overnight."""

    start: Annotated[str, Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    end: Annotated[str, Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    days: list[Weekday] = field(default_factory=lambda: list(WEEKDAYS))  # the start's day

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise FieldProblemsError([(("end",), f"start and end are both {self.start}: a shift "
                                            "has a length")])


@shape
class WorkRoad:
    """A work road: a centreline ``line`` ``width_m`` wide, or an area (``polygon``).

    An area (a square, a plaza) is swept in passes ``width_m`` wide. Points are [lat, lon].
    """

    id: Annotated[str, Pattern(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    width_m: Annotated[float, Gt(0), Le(60), Finite()]
    line: Annotated[list[LatLon], MinLen(2), MaxLen(2000)] | None = None
    polygon: Annotated[list[LatLon], MinLen(3), MaxLen(2000)] | None = None

    def __post_init__(self) -> None:
        if (self.line is None) == (self.polygon is None):
            raise FieldProblemsError([((), "give exactly one of line (a centreline) or polygon "
                                      "(an area)")])
        field = "line" if self.line is not None else "polygon"
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for i, point in enumerate(self.line or self.polygon or []):
            why = _point_error(point)
            if why is not None:
                problems.append(((field, i), why))
        if problems:
            raise FieldProblemsError(problems)


@shape
class WorkConfig:
    """Work coverage of a sanitation truck (作业面考核; docs/work-coverage.md)."""

    shift: WorkShift
    roads: Annotated[list[WorkRoad], MinLen(1), MaxLen(100)]  # one event: < 64 KiB
    # working speed: a sweeper or washer works at walking to cycling pace; faster is transit
    min_speed_kmh: Annotated[float, Ge(0), Le(60), Finite()] = 2.0
    max_speed_kmh: Annotated[float, Gt(0), Le(60), Finite()] = 20.0
    # fixes further apart than this: the stretch between them is unknown, not missed
    max_gap_s: Annotated[float, Ge(1), Le(600), Finite()] = 10.0
    segment_m: Annotated[float, Ge(1), Le(50), Finite()] = 5.0

    def __post_init__(self) -> None:
        # every problem of the block at once, each at its own key (edge check's lines)
        problems: list[tuple[tuple[int | str, ...], str]] = []
        if self.min_speed_kmh >= self.max_speed_kmh:
            problems.append((("min_speed_kmh",), f"{self.min_speed_kmh:g} must be below "
                             f"max_speed_kmh {self.max_speed_kmh:g}"))
        first: dict[str, int] = {}
        for i, road in enumerate(self.roads):
            if road.id in first:
                problems.append((("roads", i, "id"), f"{road.id!r} is already the id of "
                                 f"road {first[road.id] + 1}: road ids must be unique"))
            first.setdefault(road.id, i)
        units = sum(road_units(road, self.segment_m) for road in self.roads)
        if units > WORK_MAX_UNITS:
            problems.append((("roads",), f"roads too long or areas too large for "
                             f"segment_m {self.segment_m:g}: {units} pieces "
                             f"(at most {WORK_MAX_UNITS})"))
        lat0, lon0 = (self.roads[0].line or self.roads[0].polygon or [[0.0, 0.0]])[0]
        for i, road in enumerate(self.roads):
            far = max(distance_m(lat0, lon0, lat, lon)
                      for lat, lon in (road.line or road.polygon or []))
            if far > WORK_MAX_SPAN_M:
                problems.append((("roads", i), f"{far / 1000:.0f} km from the first road's "
                                 f"first point: one truck's roads must lie within "
                                 f"{WORK_MAX_SPAN_M / 1000:.0f} km of it"))
        if problems:
            raise FieldProblemsError(problems)


def road_units(road: WorkRoad, segment_m: float) -> int:
    """Return how many pieces ``road`` is cut into (lines: ``segment_m`` long; areas: cells)."""
    if road.line is not None:
        length_m = sum(distance_m(a[0], a[1], b[0], b[1])
                       for a, b in itertools.pairwise(road.line))
        return int(length_m / segment_m) + len(road.line)
    assert road.polygon is not None
    lats = [p[0] for p in road.polygon]
    lons = [p[1] for p in road.polygon]
    height_m = distance_m(min(lats), min(lons), max(lats), min(lons))
    width_m = distance_m(min(lats), min(lons), min(lats), max(lons))
    cell_m = min(segment_m, road.width_m)
    return (int(height_m / cell_m) + 1) * (int(width_m / cell_m) + 1)


@shape
class GpsDevice(DeviceBase):
    """A GPS tracker (NMEA over serial, or JSON over MQTT)."""

    overspeed_kmh: Annotated[float, Gt(0), Le(300)] | None = None
    stopped_too_long_s: Annotated[float, Ge(60)] | None = None
    no_fix_s: Annotated[float, Ge(5)] = 60.0
    heading_change_deg: Annotated[float, Gt(0), Le(180)] = 30.0
    geofences: list[Geofence] = field(default_factory=list)

    kind: Literal["gps"]
    transport: Literal["serial", "mqtt"]
    model: Literal["nmea", "mqtt_json"] = "nmea"
    MODELS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "serial": ("nmea",), "mqtt": ("mqtt_json",)})
    ROAMS: ClassVar[bool] = True
    min_distance_m: Annotated[float, Ge(0)] = 20.0
    max_interval_s: Annotated[float, Ge(1)] = 60.0
    position_decimals: Annotated[int, Ge(2), Le(7)] = 6
    work: WorkConfig | None = None  # shift, roads and speeds of a sanitation truck


# vehicles carry their registry id; a local class keeps the 16-digit layout (devices.md §1.3)
ASSET_CLASSES: Mapping[str, str] = MappingProxyType({"2190": "作业车辆 (local extension)"})
DEVICE = GpsDevice
