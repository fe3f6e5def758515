"""The kind table, and drivers built from it with their transports injected (issue 13)."""

from __future__ import annotations

from importlib import import_module
from types import MappingProxyType
from typing import Any

from edge.config import AnyDevice, EdgeConfig
from edge.drivers.base import Driver
from edge.drivers.kind import Kind
from edge.drivers.transport_pool import Transports
from edge.kinds import NAMES

__all__ = ["KINDS", "Transports", "build_driver"]



def _kind(name: str) -> Kind:
    kind = import_module(f"edge.drivers.{name}").KIND
    if not isinstance(kind, Kind) or kind.name != name:
        raise TypeError(f"edge.drivers.{name} must end with KIND = Kind(name={name!r}, ...)")
    return kind


# Every kind (edge.kinds.NAMES), in the order the command catalogue lists their actions
# (command.schema.json): each from its own module's KIND
KINDS: MappingProxyType[str, Kind] = MappingProxyType({name: _kind(name) for name in NAMES})


def build_driver(device: AnyDevice, config: EdgeConfig, transports: Transports) -> Driver[Any]:
    """Return the driver for ``device`` with its transport injected."""
    return KINDS[device.kind].build(device, config, transports)
