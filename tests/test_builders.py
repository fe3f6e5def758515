"""A device built without the field its transport needs is a ConfigError naming the field, at
build time — not an assert or a KeyError in the first poll (the loader refuses it first; a
device made in code, a test or a tool, reaches the builder; edge.drivers.kind.required)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge.config_loader import load_config
from edge.drivers.factory import build_driver
from edge.drivers.transport_pool import Transports
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("kind", "changes", "missing"), [
    ("manhole_tilt", {"unit_id": None}, "unit_id"),
    ("manhole_tilt", {"bus": None}, "bus"),
    ("streetlight", {"unit_id": None}, "unit_id"),
    ("streetlight", {"bus": None}, "bus"),
    ("loudspeaker", {"port": None}, "port"),
    ("gps", {"port": None}, "port"),
])
def test_a_missing_transport_field_is_a_config_error(kind: str, changes: dict[str, None],
                                                     missing: str) -> None:
    config = load_config(ROOT / "devices.yaml").config
    device = next(d for d in config.devices if d.kind == kind and d.transport != "mqtt")
    transports = Transports(config)
    assert build_driver(device, config, transports).name == device.name  # as loaded: builds
    broken = dataclasses.replace(device, **changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"{device.name}: no {missing}"):
        build_driver(broken, config, transports)
