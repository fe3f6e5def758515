"""Hardware in the loop: every enabled device of a rig answers and decodes plausibly.

Run with ``pytest tests/test_hil_rig.py --hil-rig rig.yaml``; skipped without it (CI has no
street furniture). The rig's devices.yaml is an ordinary one pointing at real ports.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge.config_loader import load_config
from edge.drivers.factory import Transports, build_driver


async def test_every_modbus_device_of_the_rig_answers(hil_rig: Path) -> None:
    loaded = load_config(hil_rig)
    cfg = loaded.config
    transports = Transports(cfg, base_dir=loaded.base_dir)
    failures: list[str] = []
    probed = 0
    try:
        for device in cfg.devices:
            if not device.enabled or device.bus is None:
                continue
            driver = build_driver(device, cfg, transports)
            try:
                values = await driver.probe()
            except Exception as exc:
                failures.append(f"{device.name}: {exc}")
                continue
            probed += 1
            numbers = [v for v in values.values() if isinstance(v, float)]
            if not numbers or not all(math.isfinite(v) for v in numbers):
                failures.append(f"{device.name}: implausible values {values}")
            if device.kind == "manhole_tilt" and not 0 <= float(values["tilt_deg"]) <= 180:  # type: ignore[arg-type]
                failures.append(f"{device.name}: tilt {values['tilt_deg']} out of range")
    finally:
        await transports.close()
    if probed == 0 and not failures:
        pytest.fail("the rig config has no enabled Modbus device")
    assert not failures, "\n".join(failures)
