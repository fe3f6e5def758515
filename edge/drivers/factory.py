"""The kind table, and drivers built from it with their transports injected (issue 13)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from edge.config import AnyDevice, EdgeConfig
from edge.drivers.base import Driver
from edge.drivers.gps import KIND as GPS
from edge.drivers.kind import Kind
from edge.drivers.loudspeaker import KIND as LOUDSPEAKER
from edge.drivers.manhole_tilt import KIND as MANHOLE_TILT
from edge.drivers.streetlight import KIND as STREETLIGHT
from edge.drivers.transport_pool import Transports

__all__ = ["KINDS", "Transports", "build_driver"]

# Every kind, in the order the command catalogue lists their actions (command.schema.json).
KINDS: MappingProxyType[str, Kind] = MappingProxyType({
    kind.name: kind for kind in (MANHOLE_TILT, STREETLIGHT, LOUDSPEAKER, GPS)
})


def build_driver(device: AnyDevice, config: EdgeConfig, transports: Transports) -> Driver[Any]:
    """Return the driver for ``device`` with its transport injected."""
    return KINDS[device.kind].build(device, config, transports)
