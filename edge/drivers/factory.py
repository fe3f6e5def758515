"""Build drivers from config, injecting their transports (one ModbusBus per bus)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.config import (
    AnyDevice,
    EdgeConfig,
    GpsDevice,
    LoudspeakerDevice,
    ManholeTiltDevice,
    StreetlightDevice,
)
from edge.drivers._mqtt_device import DeviceBroker
from edge.drivers.base import Driver
from edge.drivers.gps import GpsDriver
from edge.drivers.loudspeaker import LoudspeakerDriver
from edge.drivers.manhole_tilt import ManholeTiltDriver
from edge.drivers.speaker_units import IpSpeakerUnit, SpeakerUnit, Syn6288Unit
from edge.drivers.streetlight import StreetlightDriver
from edge.transports.modbus import ModbusBus
from edge.transports.serial import SerialPort


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

    async def close(self) -> None:
        """Close every bus."""
        for bus in self.buses.values():
            await bus.close()


def build_driver(device: AnyDevice, config: EdgeConfig, transports: Transports) -> Driver[Any]:
    """Return the driver for ``device`` with its transport injected."""
    if isinstance(device, ManholeTiltDevice) and device.transport == "mqtt":
        assert transports.broker is not None  # the loader checked
        return ManholeTiltDriver(device, timeout_s=device.poll_interval_s,
                                 broker=transports.broker)
    if isinstance(device, ManholeTiltDevice | StreetlightDevice):
        assert device.bus is not None
        bus = transports.buses[device.bus]
        timeout_s = (device.timeout_s or config.bus(device.bus).timeout_s) * \
            (config.bus(device.bus).retries + 1) + 1.0
        if isinstance(device, ManholeTiltDevice):
            return ManholeTiltDriver(device, bus, timeout_s=timeout_s)
        light = StreetlightDriver(device, bus, timeout_s=timeout_s)
        light.utc_offset_h = config.gateway.utc_offset_h  # schedules are local time
        if transports.state_dir is not None:
            light.schedule_dir = transports.state_dir / "schedules"
        return light
    if isinstance(device, GpsDevice):
        offset_h = config.gateway.utc_offset_h  # work shifts are local time
        if device.transport == "mqtt":
            gps = GpsDriver(device, broker=transports.broker, utc_offset_h=offset_h)
        else:
            assert device.port is not None
            gps = GpsDriver(device, SerialPort(device.port, device.baud), utc_offset_h=offset_h)
        if transports.state_dir is not None:
            gps.coverage_dir = transports.state_dir / "coverage"
        return gps
    if isinstance(device, LoudspeakerDevice):
        unit: SpeakerUnit
        if device.transport == "mqtt":
            assert device.topic is not None
            assert transports.broker is not None  # the loader checked
            unit = IpSpeakerUnit(device.name, transports.broker, device.topic,
                                 stale_after_s=3 * device.poll_interval_s + 5)
        else:
            assert device.port is not None
            unit = Syn6288Unit(device.name, SerialPort(device.port, device.baud),
                               device.timeout_s or 1.0, device.text_encoding)
        driver = LoudspeakerDriver(device, unit)
        driver.utc_offset_h = config.gateway.utc_offset_h  # schedules are local time
        return driver
    raise TypeError(f"no driver for {device!r}")  # unreachable: the config union is closed
