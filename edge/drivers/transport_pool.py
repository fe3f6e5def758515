"""The transports drivers share (a ModbusBus per bus, the southbound broker), owned in one place."""

from __future__ import annotations

from pathlib import Path

from edge.config import EdgeConfig
from edge.drivers._mqtt_device import DeviceBroker
from edge.transports.modbus import ModbusBus


class Transports:
    """Owns the buses and ports drivers share; closes them at the end."""

    def __init__(self, config: EdgeConfig, *, base_dir: Path | None = None,
                 state_dir: Path | None = None) -> None:
        self.state_dir = state_dir  # where drivers keep state (stored light schedules)
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
