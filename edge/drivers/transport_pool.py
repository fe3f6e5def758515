"""What drivers share (a ModbusBus per bus, the southbound broker, the state stores)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.config import EdgeConfig
from edge.drivers._mqtt_device import DeviceBroker
from edge.transports.modbus import ModbusBus

if TYPE_CHECKING:
    from edge.drivers.base import StateFolder


class Transports:
    """Owns the buses and ports drivers share; closes them at the end."""

    def __init__(self, config: EdgeConfig, *, base_dir: Path | None = None,
                 state: StateFolder | None = None) -> None:
        # the agent's edge.buffer.device_state stores, one folder per use; None: nothing
        # is kept across restarts (a lamp runs devices.yaml's schedule, a shift starts afresh)
        self.state = state
        self.buses = {bus.name: ModbusBus(bus) for bus in config.buses}
        self.broker = None if config.southbound_mqtt is None else DeviceBroker(
            config.southbound_mqtt, base_dir=base_dir or Path(), gateway_id=config.gateway.id)

    async def update(self, config: EdgeConfig, changed: list[str]) -> None:
        """Replace the buses whose settings changed (their devices are restarted too)."""
        wanted = {bus.name: bus for bus in config.buses}
        for name in changed:
            old = self.buses.pop(name, None)
            if old is not None:
                await old.close()
            if name in wanted:
                self.buses[name] = ModbusBus(wanted[name])

    def bus_timeout_s(self, config: EdgeConfig, bus: str, device_timeout_s: float | None
                      ) -> float:
        """Return how long one poll on ``bus`` may take: every retry, plus a second."""
        settings = config.bus(bus)
        return (device_timeout_s or settings.timeout_s) * (settings.retries + 1) + 1.0

    async def close(self) -> None:
        """Close every bus."""
        for bus in self.buses.values():
            await bus.close()
