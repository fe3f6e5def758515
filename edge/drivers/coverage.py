"""Work coverage of a sanitation truck (作业面考核), from every raw fix (pure: no I/O, stdlib).

At construction every work road is cut into *units*: a centreline (``line``) into pieces of at
most ``segment_m`` along each edge, an area (``polygon``) into square cells of
``min(segment_m, width_m)``. Units sit in a coarse grid (``GRID_M``) so that a fix looks only
at the units near it: the per-fix cost is O(units nearby), whatever the length of the roads.

Per pair of consecutive fixes inside the shift, both at working speed and at most
``max_gap_s`` apart, the straight path between them sweeps:

* a line piece whose midpoint lies within ``hypot(width_m/2, piece/2)`` of the path, when the
  path runs along the piece (within ~45°): crossing a street at a junction does not sweep it;
* an area cell whose centre lies within ``width_m/2`` of the path.

Fixes further apart than ``max_gap_s`` are an outage: on a line road with both ends of the
outage on it, the units between are *unknown* (not missed) unless both ends are on the same
unit; in an area, the cells within the circle over the outage's two ends (plus the sweep
width) are unknown. A covered unit stays covered. The report format is documented in
docs/work-coverage.md and ``edge.wire.WireWorkCoverage``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from edge.drivers.geo import EARTH_M, distance_m, inside
from edge.kinds.gps import WorkConfig, WorkRoad

MISSED, UNKNOWN, COVERED = 0, 1, 2
STATE_NAMES = ("missed", "unknown", "covered")
GRID_M = 25.0  # grid cell: a few pieces per road per cell, a path touches 1-4 cells
# a pass sweeps a piece only when it runs along it: |cos(angle)| >= 0.7 is within ~45°
ALIGN_COS2 = 0.7 * 0.7
STILL_M2 = 0.25  # paths shorter than 0.5 m have no usable direction: sweep around the point
# stretches in one report (all roads, all states): with 100 roads a report stays < 64 KiB
MAX_RANGES_TOTAL = 1000
JUMP_FACTOR = 1.5  # a path may be this much longer than max speed allows (speed is averaged)
JUMP_SLACK_M = 20.0  # and this much (two fixes' scatter)
BOX_CELLS_MAX = 16  # past this, a path's cells are walked along it, not boxed
DAY_S = 86_400
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (mon = 0)
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RoadPlan:
    """One road's units: ``first``..``stop`` (exclusive) in the plan's flat arrays."""

    id: str
    shape: str  # "line" | "area"
    first: int
    stop: int
    size: float  # metres of centreline, or cells of area
    # areas: the cell grid, so a map can draw cell i = (row i // cols, col i % cols)
    grid: dict[str, float] | None = None


@dataclass(slots=True)
class Plan:
    """Every unit of one truck's roads in flat arrays, with the grid index over them."""

    lat0: float
    lon0: float
    kx: float  # metres per degree of longitude at lat0
    ky: float  # metres per degree of latitude
    roads: list[RoadPlan] = field(default_factory=list)
    mid_x: list[float] = field(default_factory=list)
    mid_y: list[float] = field(default_factory=list)
    dir_x: list[float] = field(default_factory=list)  # unit vector; 0, 0 for area cells
    dir_y: list[float] = field(default_factory=list)
    reach2: list[float] = field(default_factory=list)
    road_of: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)  # chainage m (lines), cell index (areas)
    end: list[float] = field(default_factory=list)
    grid: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    # the same units with what a sweep reads, one tuple each (unpacking beats 6 lookups):
    # unit, midpoint x and y, direction x and y, reach squared, road
    cells: dict[tuple[int, int], list[tuple[int, float, float, float, float, float, int]]] = \
        field(default_factory=dict)
    max_reach_m: float = 0.0

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        """Project to local metres (equirectangular: within 0.1 % over a city)."""
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky

    def _add(self, road: int, x: float, y: float, direction: tuple[float, float],
             reach_m: float, span: tuple[float, float]) -> None:
        unit = len(self.mid_x)
        self.mid_x.append(x)
        self.mid_y.append(y)
        self.dir_x.append(direction[0])
        self.dir_y.append(direction[1])
        self.reach2.append(reach_m * reach_m)
        self.road_of.append(road)
        self.start.append(span[0])
        self.end.append(span[1])
        self.max_reach_m = max(self.max_reach_m, reach_m)
        key = (int(x // GRID_M), int(y // GRID_M))
        self.grid.setdefault(key, []).append(unit)
        self.cells.setdefault(key, []).append(
            (unit, x, y, direction[0], direction[1], reach_m * reach_m, road))


def plan_units(work: WorkConfig) -> Plan:
    """Cut ``work``'s roads into units and index them (done once, when the driver is built)."""
    first = (work.roads[0].line or work.roads[0].polygon or [[0.0, 0.0]])[0]
    lat0, lon0 = first[0], first[1]
    ky = EARTH_M * math.pi / 180
    plan = Plan(lat0, lon0, ky * math.cos(math.radians(lat0)), ky)
    for index, road in enumerate(work.roads):
        begin = len(plan.mid_x)
        if road.line is not None:
            size, grid = _plan_line(plan, index, road, work.segment_m), None
        else:
            size, grid = _plan_area(plan, index, road, work.segment_m)
        plan.roads.append(RoadPlan(road.id, "line" if road.line is not None else "area",
                                   begin, len(plan.mid_x), size, grid))
    return plan


def _plan_line(plan: Plan, index: int, road: WorkRoad, segment_m: float) -> float:
    assert road.line is not None
    chainage = 0.0
    for (lat0, lon0), (lat1, lon1) in itertools.pairwise(road.line):
        (x0, y0), (x1, y1) = plan.xy(lat0, lon0), plan.xy(lat1, lon1)
        length = math.hypot(x1 - x0, y1 - y0)
        if length < 1e-6:
            continue  # a repeated point
        # chainage in true metres along the road (a map measures it the same way from the
        # road's own points), whatever the plane's distortion away from its origin
        true_m = distance_m(lat0, lon0, lat1, lon1)
        pieces = max(1, math.ceil(true_m / segment_m))
        piece, true_piece = length / pieces, true_m / pieces
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        reach = math.hypot(road.width_m / 2, piece / 2)
        for k in range(pieces):
            along = (k + 0.5) * piece
            plan._add(index, x0 + ux * along, y0 + uy * along, (ux, uy), reach,  # noqa: SLF001
                      (chainage + k * true_piece, chainage + (k + 1) * true_piece))
        chainage += true_m
    return chainage


def _plan_area(plan: Plan, index: int, road: WorkRoad,
               segment_m: float) -> tuple[float, dict[str, float]]:
    assert road.polygon is not None
    cell = min(segment_m, road.width_m)
    # the grid is laid from the area's own south-west corner, in metres at its latitude, so
    # a map draws cell i from ``grid`` alone (docs/work-coverage.md)
    south = min(lat for lat, _ in road.polygon)
    west = min(lon for _, lon in road.polygon)
    north = max(lat for lat, _ in road.polygon)
    east = max(lon for _, lon in road.polygon)
    d_lat = cell / plan.ky
    d_lon = cell / (plan.ky * math.cos(math.radians(south)))
    rows = int((north - south) / d_lat) + 1
    cols = int((east - west) / d_lon) + 1
    cells = 0
    for row in range(rows):
        for col in range(cols):
            lat, lon = south + (row + 0.5) * d_lat, west + (col + 0.5) * d_lon
            if inside(lat, lon, road.polygon):
                number = row * cols + col
                x, y = plan.xy(lat, lon)
                plan._add(index, x, y, (0.0, 0.0), road.width_m / 2,  # noqa: SLF001
                          (number, number + 1))
                cells += 1
    return float(cells), {"origin_lat": south, "origin_lon": west, "cell_m": cell,
                          "cols": cols, "rows": rows}


def _iso(at_s: float) -> str:
    return dt.datetime.fromtimestamp(at_s, dt.UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class _Shift:
    start_s: float
    end_s: float
    state: bytearray
    first_pass: list[float | None]
    last_pass: list[float | None]
    trusted: bool = True
    fixes: int = 0
    working_fixes: int = 0
    gaps: int = 0
    gap_s: float = 0.0
    prev: tuple[float, float, float, bool] | None = None  # x, y, at_s, at working speed


class CoverageTracker:
    """Coverage of one truck's shifts; times are UTC epoch seconds from the trusted clock.

    ``on_fix`` and ``tick`` return the report of a shift that has just ended (once), else
    None; ``report`` returns the running shift's report, or the last ended one.
    """

    def __init__(self, work: WorkConfig, *, utc_offset_h: int) -> None:
        self.work = work
        self.plan = plan_units(work)
        self.utc_offset_s = utc_offset_h * 3600
        self._start_min = _minutes(work.shift.start)
        self._end_min = _minutes(work.shift.end)
        self._days = {WEEKDAY_NAMES.index(d) for d in work.shift.days}
        self._shift: _Shift | None = None
        self._idle_until_s = -math.inf  # no shift before this (saves the window search)
        self._last_now_s = -math.inf
        self.last_report: dict[str, Any] | None = None
        self._min_mps = work.min_speed_kmh / 3.6
        self._max_mps = work.max_speed_kmh / 3.6
        self._max_gap_s = work.max_gap_s

    # -- shifts -------------------------------------------------------------------------

    def window(self, now_s: float) -> tuple[float, float] | None:
        """Return the (start, end) UTC seconds of the shift running at ``now_s``, if any."""
        local = now_s + self.utc_offset_s
        today = local - local % DAY_S
        for day in (today, today - DAY_S):
            start = day + self._start_min * 60
            end = day + self._end_min * 60 + (DAY_S if self._end_min <= self._start_min else 0)
            weekday = (int(day // DAY_S) + EPOCH_WEEKDAY) % 7
            if weekday in self._days and start <= local < end:
                return start - self.utc_offset_s, end - self.utc_offset_s
        return None

    def _next_start(self, now_s: float) -> float:
        local = now_s + self.utc_offset_s
        today = local - local % DAY_S
        for day in (today, today + DAY_S):
            start = day + self._start_min * 60
            if start > local:
                return start - self.utc_offset_s
        return now_s + 60  # not reached: tomorrow's start is always ahead

    def tick(self, now_s: float, *, trusted: bool) -> dict[str, Any] | None:
        """Advance the shift clock; return the report of a shift that ended before ``now_s``."""
        shift = self._shift
        if shift is not None and shift.start_s <= now_s < shift.end_s:
            shift.trusted = shift.trusted and trusted
            return None
        if now_s < self._last_now_s:
            self._idle_until_s = -math.inf  # the clock stepped back (a sync): look again
        self._last_now_s = now_s
        done = None
        if shift is not None:  # ended, or the clock stepped out of it (a sync): close it
            done = self._report(shift, final=True)
            self.last_report = done
            self._shift = None
        if now_s >= self._idle_until_s:
            window = self.window(now_s)
            if window is None:
                self._idle_until_s = self._next_start(now_s)
            else:
                n = len(self.plan.mid_x)
                roads = len(self.plan.roads)
                self._shift = _Shift(window[0], window[1], bytearray(n), [None] * roads,
                                     [None] * roads, trusted=trusted)
        return done

    # -- fixes ---------------------------------------------------------------------------

    def on_fix(self, lat: float, lon: float, speed_kmh: float | None, now_s: float, *,
               trusted: bool, fix_s: float | None = None) -> dict[str, Any] | None:
        """Feed one raw fix (before thinning); return an ended shift's report, if any.

        ``now_s`` (the trusted clock) places the fix in a shift; ``fix_s``, the fix's own
        time (default ``now_s``), measures the time between fixes and stamps passes: a
        receiver's cycle, not when the line happened to arrive.
        """
        shift = self._shift
        if shift is not None and shift.start_s <= now_s < shift.end_s:  # tick's fast path
            done = None
            if not trusted:
                shift.trusted = False
        else:
            done = self.tick(now_s, trusted=trusted)
            shift = self._shift
            if shift is None:
                return done
        plan = self.plan
        at_s = now_s if fix_s is None else fix_s
        x, y = (lon - plan.lon0) * plan.kx, (lat - plan.lat0) * plan.ky
        shift.fixes += 1
        prev = shift.prev
        speed_mps = None if speed_kmh is None else speed_kmh / 3.6
        if prev is None:
            working = speed_mps is not None and self._min_mps <= speed_mps <= self._max_mps
        else:
            px, py, pat, pworking = prev
            dt_s = at_s - pat
            if dt_s > self._max_gap_s:
                shift.gaps += 1
                shift.gap_s += dt_s
                limit = self._max_mps * dt_s * JUMP_FACTOR + JUMP_SLACK_M
                if (x - px) ** 2 + (y - py) ** 2 <= limit * limit:  # else it jumped: no
                    self._unknown(shift, px, py, x, y)  # sign it passed what lies between
            if speed_mps is None and dt_s > 0:  # a GGA-only cycle: speed from the track
                speed_mps = math.hypot(x - px, y - py) / dt_s
            working = speed_mps is not None and self._min_mps <= speed_mps <= self._max_mps
            if working and pworking and 0 < dt_s <= self._max_gap_s:
                # a path longer than working speed allows is a jump (multipath, a tracker's
                # bad fix, a forged report), not a pass: it sweeps nothing
                limit = self._max_mps * dt_s * JUMP_FACTOR + JUMP_SLACK_M
                if (x - px) ** 2 + (y - py) ** 2 <= limit * limit:
                    self._sweep(shift, px, py, x, y, at_s)
        if working:
            shift.working_fixes += 1
        shift.prev = (x, y, at_s, working)
        return done

    def _sweep(self, shift: _Shift, x0: float, y0: float, x1: float, y1: float,
               at_s: float) -> None:
        plan = self.plan
        reach = plan.max_reach_m
        dx, dy = x1 - x0, y1 - y0
        l2 = dx * dx + dy * dy
        cells = plan.cells
        state, first, last = shift.state, shift.first_pass, shift.last_pass
        moving = l2 > STILL_M2
        align = ALIGN_COS2 * l2
        inv_l2 = 1 / l2 if l2 > 0 else 0.0
        for key in _cells_near(x0, y0, x1, y1, reach):
            units = cells.get(key)
            if units is None:
                continue
            for u, mx, my, ux, uy, reach2, road in units:
                ex, ey = mx - x0, my - y0
                t = (ex * dx + ey * dy) * inv_l2
                if t > 0:
                    if t > 1:
                        t = 1.0
                    ex -= t * dx
                    ey -= t * dy
                if ex * ex + ey * ey > reach2:
                    continue
                if moving and (ux != 0 or uy != 0):
                    along = dx * ux + dy * uy
                    if along * along < align:
                        continue  # crossing, not sweeping
                state[u] = COVERED
                if first[road] is None:
                    first[road] = at_s
                last[road] = at_s

    def _nearest(self, x: float, y: float) -> dict[int, int]:
        """Return, per road, its unit nearest to (x, y) within that unit's reach."""
        plan = self.plan
        best: dict[int, tuple[float, int]] = {}
        gx, gy = int(x // GRID_M), int(y // GRID_M)
        span = int(plan.max_reach_m // GRID_M) + 1
        for cx in range(gx - span, gx + span + 1):
            for cy in range(gy - span, gy + span + 1):
                for u in plan.grid.get((cx, cy), ()):
                    d2 = (plan.mid_x[u] - x) ** 2 + (plan.mid_y[u] - y) ** 2
                    road = plan.road_of[u]
                    if d2 <= plan.reach2[u] and (road not in best or d2 < best[road][0]):
                        best[road] = (d2, u)
        return {road: unit for road, (_d2, unit) in best.items()}

    def _unknown(self, shift: _Shift, x0: float, y0: float, x1: float, y1: float) -> None:
        """Mark what an outage between two fixes may have passed unknown (not missed)."""
        plan = self.plan
        before, after = self._nearest(x0, y0), self._nearest(x1, y1)
        for road in before.keys() & after.keys():
            a, b = before[road], after[road]
            if a == b:
                continue  # stood on one piece through the outage: nothing passed unseen
            spec = plan.roads[road]
            if spec.shape == "line":
                units: range | list[int] = range(min(a, b), max(a, b) + 1)
            else:  # an area: the cells the truck could have crossed on its way
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                r = math.hypot(x1 - x0, y1 - y0) / 2 + math.sqrt(plan.reach2[a])
                units = [u for u in range(spec.first, spec.stop)
                         if (plan.mid_x[u] - cx) ** 2 + (plan.mid_y[u] - cy) ** 2 <= r * r]
            for u in units:
                if shift.state[u] == MISSED:
                    shift.state[u] = UNKNOWN

    # -- persistence (the driver writes and reads the file; this is the pure part) -------

    def fingerprint(self) -> str:
        """Return a digest of what the pieces depend on: a saved shift fits only its config."""
        # the JSON pydantic wrote when the config was a model: a saved shift stays valid
        work = json.dumps(asdict(self.work), separators=(",", ":"),
                          ensure_ascii=False)
        text = work + f"|{self.utc_offset_s}|{GRID_M}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def snapshot(self) -> dict[str, Any] | None:
        """Return the running shift as JSON values (None: no shift to keep)."""
        shift = self._shift
        if shift is None:
            return None
        return {"v": SNAPSHOT_VERSION, "fp": self.fingerprint(), "start_s": shift.start_s,
                "end_s": shift.end_s, "state": base64.b64encode(shift.state).decode(),
                "first": shift.first_pass, "last": shift.last_pass, "trusted": shift.trusted,
                "fixes": shift.fixes, "working_fixes": shift.working_fixes, "gaps": shift.gaps,
                "gap_s": shift.gap_s}

    def restore(self, doc: object, now_s: float) -> str | None:
        """Take back a saved shift; return why not (None: restored).

        Only a shift of this very config (``fingerprint``), that has started by ``now_s`` and
        ended less than a day ago, with every field of the right type and size; one that has
        ended is reported at the next ``tick``. The fix before the restart is not kept: the
        time the agent was down is an outage of unknown length, not a pass.
        """
        if not isinstance(doc, dict) or type(doc.get("v")) is not int or \
                doc["v"] != SNAPSHOT_VERSION:
            return "not a saved shift"
        if doc.get("fp") != self.fingerprint():
            return "saved for other roads or another shift"
        try:
            start_s, end_s = _finite(doc["start_s"]), _finite(doc["end_s"])
            state = bytearray(base64.b64decode(str(doc["state"]), validate=True))
            first = [None if v is None else _finite(v) for v in doc["first"]]
            last = [None if v is None else _finite(v) for v in doc["last"]]
            counts = [doc[k] for k in ("fixes", "working_fixes", "gaps")]
            gap_s = _finite(doc["gap_s"])
            trusted = doc["trusted"]
        except (KeyError, TypeError, ValueError, binascii.Error):
            return "damaged"
        roads = len(self.plan.roads)
        if len(state) != len(self.plan.mid_x) or max(state, default=0) > COVERED or \
                len(first) != roads or len(last) != roads or not isinstance(trusted, bool) or \
                not all(type(c) is int and c >= 0 for c in counts) or gap_s < 0:
            return "damaged"
        if not start_s <= now_s < end_s + DAY_S or end_s <= start_s or \
                end_s - start_s > DAY_S:
            return "from another shift"
        self._shift = _Shift(start_s, end_s, state, first, last, trusted=trusted,
                             fixes=counts[0], working_fixes=counts[1], gaps=counts[2],
                             gap_s=gap_s)
        return None

    # -- reports -------------------------------------------------------------------------

    def report(self, now_s: float) -> dict[str, Any] | None:
        """Return the current shift's report, else the last ended one (None before any).

        A shift whose end has passed before a tick reported it reads ``ended`` already.
        """
        if self._shift is not None:  # ended but not ticked yet: as it will be reported
            return self._report(self._shift, final=now_s >= self._shift.end_s)
        return self.last_report

    def _report(self, shift: _Shift, *, final: bool) -> dict[str, Any]:
        plan = self.plan
        state = shift.state
        if shift.fixes == 0:  # no fix (yet): nothing is known to be missed
            state = bytearray(UNKNOWN if value == MISSED else value for value in state)
        cap = max(2, MAX_RANGES_TOTAL // (3 * len(plan.roads)))
        roads = [self._road_report(shift, state, index, spec, cap)
                 for index, spec in enumerate(plan.roads)]
        work = self.work
        return {
            "shift": {"start": _iso(shift.start_s), "end": _iso(shift.end_s),
                      "state": "ended" if final else "in_progress"},
            "clock": "trusted" if shift.trusted else "untrusted",
            "min_speed_kmh": work.min_speed_kmh, "max_speed_kmh": work.max_speed_kmh,
            "segment_m": work.segment_m, "max_gap_s": work.max_gap_s,
            "fixes": shift.fixes, "working_fixes": shift.working_fixes,
            "gaps": shift.gaps, "gap_s": round(shift.gap_s, 1),
            "roads": roads,
        }

    def _road_report(self, shift: _Shift, state: bytearray, index: int, spec: RoadPlan,
                     cap: int) -> dict[str, Any]:
        plan = self.plan
        totals = [0.0, 0.0, 0.0]
        ranges: list[list[list[float]]] = [[], [], []]
        truncated = False
        run_state, run_start, run_end = -1, 0.0, 0.0
        for u in range(spec.first, spec.stop):
            value = state[u]
            start, end = plan.start[u], plan.end[u]
            totals[value] += end - start
            if value == run_state and start <= run_end + 1e-6:
                run_end = end
                continue
            if run_state >= 0:
                truncated |= _append(ranges[run_state], run_start, run_end, cap)
            run_state, run_start, run_end = value, start, end
        if run_state >= 0:
            truncated |= _append(ranges[run_state], run_start, run_end, cap)
        size = sum(totals) or 1.0
        first, last = shift.first_pass[index], shift.last_pass[index]
        out: dict[str, Any] = {
            "id": spec.id, "shape": spec.shape,
            ("length_m" if spec.shape == "line" else "cells"): round(spec.size, 1),
            "covered_pct": round(100 * totals[COVERED] / size, 1),
            "unknown_pct": round(100 * totals[UNKNOWN] / size, 1),
            "missed_pct": round(100 * totals[MISSED] / size, 1),
            "first_pass": None if first is None else _iso(first),
            "last_pass": None if last is None else _iso(last),
            "covered": ranges[COVERED], "unknown": ranges[UNKNOWN], "missed": ranges[MISSED],
            "truncated": truncated,
        }
        if spec.grid is not None:
            out["grid"] = spec.grid
        return out


def _append(ranges: list[list[float]], start: float, end: float, cap: int) -> bool:
    """Add [start, end] (0.1 m); past ``cap``, widen the last range and say so."""
    if len(ranges) >= cap:
        ranges[-1][1] = round(end, 1)
        return True
    ranges.append([round(start, 1), round(end, 1)])
    return False


def _cells_near(x0: float, y0: float, x1: float, y1: float,
                reach: float) -> Iterable[tuple[int, int]]:
    """Return the grid cells within ``reach`` of the path (x0, y0) -> (x1, y1).

    A short path (every pass at working speed): its bounding box, 1-4 cells. A long one:
    only the corridor along it, so a diagonal kilometre costs O(length), not O(length²).
    """
    gx0, gx1 = int((min(x0, x1) - reach) // GRID_M), int((max(x0, x1) + reach) // GRID_M)
    gy0, gy1 = int((min(y0, y1) - reach) // GRID_M), int((max(y0, y1) + reach) // GRID_M)
    if (gx1 - gx0 + 1) * (gy1 - gy0 + 1) <= BOX_CELLS_MAX:
        return itertools.product(range(gx0, gx1 + 1), range(gy0, gy1 + 1))
    span = int(reach // GRID_M) + 1
    steps = math.ceil(math.hypot(x1 - x0, y1 - y0) / (GRID_M / 2))
    out: set[tuple[int, int]] = set()
    for k in range(steps + 1):
        gx = int((x0 + (x1 - x0) * k / steps) // GRID_M)
        gy = int((y0 + (y1 - y0) * k / steps) // GRID_M)
        out.update((gx + i, gy + j) for i in range(-span, span + 1)
                   for j in range(-span, span + 1))
    return out


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value):
        raise ValueError("not a finite number")
    return float(value)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)
