"""Drivers, one module per device kind, and the registry that maps ``kind`` to its classes.

``DRIVERS`` is derived from the kind table (``edge.drivers.factory.KINDS``): a kind maps to its
driver classes, one per transport (``manhole_tilt``: Modbus and MQTT).

Importing this package imports no protocol library: the registry lists classes only, and
``edge.drivers.factory`` builds them with their transports. The registry itself is built on
first use: every ``edge.drivers.*`` import (``edge check``'s read plans in
``_codecs.plans``) runs this file, and importing every driver here cost ``python -m hil
tilt`` and ``edge check`` 0.15-0.3 s of CPU for classes they never use.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.drivers.base import Driver

    DRIVERS: MappingProxyType[str, tuple[type[Driver[Any]], ...]]


def __getattr__(name: str) -> Any:  # PEP 562: the lazy registry
    if name != "DRIVERS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from edge.drivers.factory import KINDS  # noqa: PLC0415

    drivers: MappingProxyType[str, tuple[type[Driver[Any]], ...]] = MappingProxyType({
        name: kind.drivers for name, kind in KINDS.items()})
    globals()["DRIVERS"] = drivers
    return drivers
