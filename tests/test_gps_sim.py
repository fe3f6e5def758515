"""The GPS simulator's course is the compass bearing of its direction of travel (issue 18 #8)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from hil.sims.serial_sims import GpsSim


def _rmc(text: str) -> tuple[float, float, float]:
    """Return (lat, lon, course) of the RMC in a burst (ddmm.mmmm fields, N/E only here)."""
    fields = next(line for line in text.split("\r\n") if line[3:6] == "RMC").split(",")
    lat = int(fields[3][:2]) + float(fields[3][2:]) / 60
    lon = int(fields[5][:3]) + float(fields[5][3:]) / 60
    return lat, lon, float(fields[8])


def _bearing_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = b[0] - a[0]
    east = (b[1] - a[1]) * math.cos(math.radians(a[0]))
    return math.degrees(math.atan2(east, north)) % 360


@pytest.mark.parametrize("t_s", [0.0, 20.0, 56.5, 90.0, 150.0, 200.0])
def test_the_course_is_the_bearing_of_travel(t_s: float) -> None:
    sim = GpsSim(1, speed_kmh=30.0)
    now = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)
    before = _rmc(sim.sentences(t_s - 2.0, now))
    lat, lon, course = _rmc(sim.sentences(t_s, now))
    after = _rmc(sim.sentences(t_s + 2.0, now))
    travel = _bearing_deg(before[:2], after[:2])
    off = abs((course - travel + 180) % 360 - 180)
    assert off < 2.0, f"course {course} but travelling {travel:.1f} at {lat:.5f},{lon:.5f}"
