"""The agent with generic 100-register devices, for the points-per-CPU-second benchmark.

``python -m bench.block_agent --config devices.yaml``: every streetlight in the file is read as
one block of 100 holding registers (one request) and reported as 100 points — decoded, stored
in the outbox and delivered like any reading. Bench only: the product has no generic model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from typing_extensions import override

import edge.agent
from edge import cli
from edge.config import AnyDevice, EdgeConfig
from edge.drivers.base import Driver, PollingDriver, Reading, Value
from edge.drivers.factory import Transports, build_driver
from edge.kinds.streetlight import StreetlightDevice
from edge.transports.modbus import ModbusBus

POINTS = 100
NAMES = tuple(f"p{i:02d}" for i in range(POINTS))


def decode_block(words: Sequence[int]) -> dict[str, Value]:
    """Pure codec: 100 int16 registers, scale 0.1 (like most meters' tenths)."""
    if len(words) != POINTS:
        raise ValueError(f"expected {POINTS} registers, got {len(words)}")
    return {name: (w - 0x10000 if w & 0x8000 else w) / 10 for name, w in zip(NAMES, words,
                                                                             strict=True)}


class BlockDriver(PollingDriver[StreetlightDevice]):
    """One 100-register read per poll."""

    kind: ClassVar[str] = "streetlight"

    def __init__(self, config: StreetlightDevice, bus: ModbusBus) -> None:
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=2.0)
        self._bus = bus

    @override
    async def poll(self) -> Reading:
        assert self.config.unit_id is not None
        words = await self._bus.read(self.name, self.config.unit_id, 3, 0, POINTS)
        return Reading(self.name, decode_block(words), time.time_ns(), time.monotonic_ns())


def _build(device: AnyDevice, config: EdgeConfig, transports: Transports) -> Driver[Any]:
    if isinstance(device, StreetlightDevice) and device.bus is not None:
        return BlockDriver(device, transports.buses[device.bus])
    return build_driver(device, config, transports)


if __name__ == "__main__":
    edge.agent.build_driver = _build  # type: ignore[attr-defined]
    sys.argv[0] = "edge"
    sys.exit(cli.main(["run", *sys.argv[1:]]))
