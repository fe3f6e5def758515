"""Drivers, one module per device kind, and the registry that maps ``kind`` to a class.

Importing this package imports no protocol library: the registry lists classes only, and
``edge.drivers.factory`` builds them with their transports.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from edge.drivers.base import Driver
from edge.drivers.gps import GpsDriver
from edge.drivers.loudspeaker import LoudspeakerDriver
from edge.drivers.manhole_tilt import ManholeTiltDriver
from edge.drivers.streetlight import StreetlightDriver

DRIVERS: MappingProxyType[str, type[Driver[Any]]] = MappingProxyType({
    cls.kind: cls for cls in (ManholeTiltDriver, StreetlightDriver, LoudspeakerDriver, GpsDriver)
})
