"""Small geometry on WGS-84 coordinates (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

EARTH_M = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(math.sqrt(a))


def inside(lat: float, lon: float, polygon: Sequence[Sequence[float]]) -> bool:
    """Return whether (lat, lon) is inside ``polygon`` ([[lat, lon], ...]; ray casting).

    City-sized fences are small enough for the plane approximation.
    """
    result = False
    n = len(polygon)
    for i in range(n):
        y1, x1 = polygon[i][0], polygon[i][1]
        y2, x2 = polygon[(i + 1) % n][0], polygon[(i + 1) % n][1]
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_cross:
                result = not result
    return result


def heading_change_deg(a: float, b: float) -> float:
    """Return the smallest angle between two headings."""
    diff = abs(a - b) % 360
    return 360 - diff if diff > 180 else diff
