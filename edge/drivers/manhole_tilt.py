"""Manhole-cover tilt sensors: Modbus inclinometers and MQTT covers.

A WitMotion-style or SunSpec 304 inclinometer over Modbus, or an NB-IoT/LoRa cover that reports
JSON over MQTT (firmware_notes/witmotion-inclinometer.md, firmware_notes/sunspec304.md,
firmware_notes/mqtt-cover.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from edge.drivers._codecs import json_doc, sunspec304, witmotion
from edge.drivers._codecs.plans import READ_PLANS
from edge.drivers._mqtt_device import DeviceBroker, next_report, parse_json, pick
from edge.drivers.base import COMM_LOST, PollingDriver, Reading, Sink, Value, override
from edge.drivers.cover_rules import (
    BATTERY_LOW,
    COVER_DISPLACED,
    COVER_OPEN,
    WATER_LEVEL_HIGH,
    CoverRules,
)
from edge.drivers.kind import NO_BROKER, Kind, required
from edge.errors import ConfigError, DeviceError, DeviceProtocolError, DeviceUnavailableError
from edge.kinds.manhole_tilt import ManholeTiltDevice
from edge.transports.modbus import ModbusBus

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.drivers.transport_pool import Transports

# JSON paths of an MQTT cover's report, overridable per device with json_map
JSON_DEFAULTS = {"tilt_deg": "tilt", "tilt_x_deg": "tilt_x", "tilt_y_deg": "tilt_y",
                 "water_level_m": "water_level", "battery_v": "battery", "signal_dbm": "rssi"}
SUNSPEC_BASES = (40000, 0, 50000)  # where a SunSpec map may start (design/devices.md §2.2)
SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = 0xFFFF
SUNSPEC_MAX_MODELS = 32  # a walk longer than this is a broken map, not a long one


@dataclasses.dataclass(frozen=True)
class TiltMap:
    """What one inclinometer model's register map gives; its block is READ_PLANS[model]."""

    decode: Callable[[list[int]], Mapping[str, Value]]  # -> roll/pitch (or X/Y/Z) in degrees
    discovered: bool  # the block sits where a SunSpec walk finds model 304, not at a fixed address


# Each Modbus model declared once (firmware_notes/witmotion-inclinometer.md, sunspec304.md)
TILT_MAPS: Mapping[str, TiltMap] = MappingProxyType({
    "witmotion": TiltMap(witmotion.decode_angles, discovered=False),
    "sunspec304": TiltMap(sunspec304.decode, discovered=True),
})


class ManholeTiltDriver(PollingDriver[ManholeTiltDevice]):
    """What both transports share: the cover's alarm rules, evaluated on each reading.

    Abstract: ``ManholeTiltModbusDriver`` polls an inclinometer, ``ManholeTiltMqttDriver``
    takes a cover's reports. A comm loss raises ``comm_lost`` and freezes the other alarms:
    silence never fakes a clear.
    """

    kind: ClassVar[str] = "manhole_tilt"

    def __init__(self, config: ManholeTiltDevice, *, timeout_s: float) -> None:
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=timeout_s)
        self.rules = CoverRules(config.name, config.alarms)

    @override
    async def on_reading(self, reading: Reading, sink: Sink) -> None:
        if not self.rules.restored:  # once, not a call up into the sink on every poll
            self.rules.restore(sink.active_alarms(self.name))
        await sink.reading(reading)
        for change in self.rules.evaluate(reading.values):
            await sink.alarm(change)


class ManholeTiltModbusDriver(ManholeTiltDriver):
    """Poll a Modbus inclinometer (WitMotion-style or SunSpec 304) for its tilt.

    Raises ``ConfigError`` at construction for a device without ``unit_id`` (the loader
    refuses one first).
    """

    def __init__(self, config: ManholeTiltDevice, bus: ModbusBus, *, timeout_s: float
                 ) -> None:
        super().__init__(config, timeout_s=timeout_s)
        self._unit_id = required(config.name, "unit_id", config.unit_id)
        self._bus = bus  # injected, shared by every device on the line
        self._sunspec_addr: int | None = None  # model 304's address, found by discovery

    async def _read(self, function: int, address: int, count: int) -> list[int]:
        return await self._bus.read(self.name, self._unit_id, function, address, count,
                                    timeout_s=self.config.timeout_s)

    async def discover_sunspec(self) -> int:
        """Walk the SunSpec model chain to model 304; return its address (cached)."""
        bases = (self.config.sunspec_base,) if self.config.sunspec_base is not None \
            else SUNSPEC_BASES
        for base in bases:
            try:
                marker = await self._read(3, base, 2)
            except DeviceProtocolError:
                continue
            except DeviceError as exc:
                if exc.code == "device.rejected":  # illegal address: no map here
                    continue
                raise
            if tuple(marker) != SUNSPEC_MARKER:
                continue
            address = base + 2
            for _ in range(SUNSPEC_MAX_MODELS):
                model_id, length = await self._read(3, address, 2)
                if model_id == sunspec304.MODEL_ID:
                    self._sunspec_addr = address
                    return address
                if model_id == SUNSPEC_END:
                    break
                address += 2 + length
            raise DeviceProtocolError(self.name, f"SunSpec map at {base} has no model 304")
        raise DeviceProtocolError(self.name, f"no SunSpec marker at {list(bases)}")

    @override
    async def poll(self) -> Reading:
        cfg = self.config
        tilt_map = TILT_MAPS[cfg.model]
        (block,) = READ_PLANS[cfg.model]  # one block: relative to the map found, if it moves
        base = (self._sunspec_addr or await self.discover_sunspec()) if tilt_map.discovered \
            else 0
        words = await self._read(block.function, base + block.address, block.count)
        at_ns, mono_ns = time.time_ns(), time.monotonic_ns()
        try:
            values: dict[str, Value] = dict(tilt_map.decode(words))
        except ValueError as exc:  # codecs don't know device names
            self._sunspec_addr = None  # a map that moved (firmware update): walk again
            raise DeviceProtocolError(cfg.name, str(exc)) from exc
        values["tilt_deg"] = round(witmotion.tilt_deg(values, cfg.baseline_deg), 2)  # type: ignore[arg-type]
        return Reading(cfg.name, values, at_ns, mono_ns)


class ManholeTiltMqttDriver(ManholeTiltDriver):
    """Take an NB-IoT/LoRa cover's JSON reports from the southbound broker.

    Raises ``ConfigError`` at construction for a device without ``topic`` (the loader
    refuses one first).
    """

    def __init__(self, config: ManholeTiltDevice, broker: DeviceBroker, *, timeout_s: float
                 ) -> None:
        super().__init__(config, timeout_s=timeout_s)
        self._topic = required(config.name, "topic", config.topic)
        self._broker = broker
        self._json_map = {**JSON_DEFAULTS, **config.json_map}

    @override
    async def poll(self) -> Reading:
        """Refuse: a cover reports when it wakes, it cannot be read on demand."""
        raise DeviceError(self.name, "an MQTT cover reports when it wakes; see its last "
                                     "values")

    def values_from_json(self, doc: dict[str, Any]) -> dict[str, Value]:
        """Map a cover's JSON report to values (json_map); ValueError when it holds no tilt.

        A mapped value that is present but not a finite number (NaN, 1e400, a string, a
        list, a bool) is refused on its own and counted (``bad_values``); absent or null is
        no sample (firmware_notes/mqtt-cover.md).
        """
        values: dict[str, Value] = {}
        for key, path in self._json_map.items():
            value = pick(doc, path)
            if value is None:
                continue
            try:
                values[key] = json_doc.finite_number(value)
            except ValueError as exc:
                self.bad_value(key, str(exc))
        if "tilt_deg" in values:
            values["tilt_deg"] = round(abs(float(values["tilt_deg"]) -  # type: ignore[arg-type]
                                           self.config.baseline_deg), 2)
        elif "tilt_x_deg" in values and "tilt_y_deg" in values:
            values["tilt_deg"] = round(witmotion.tilt_deg(
                values, self.config.baseline_deg), 2)  # type: ignore[arg-type]
        else:
            raise ValueError(f"no tilt in a report with keys {sorted(doc)}")
        return values

    @override
    async def run(self, sink: Sink) -> None:
        """Take the cover's reports as they come.

        A report period (plus up to 5 s of grace) without one is a failed poll: degraded after
        one, offline (``comm_lost``) after three, as for a polled device.
        """
        link = await self._broker.connect(self.name, [self._topic])
        silence_s = self.poll_interval_s + min(5.0, self.poll_interval_s)
        try:
            while True:
                item = await next_report(link, self.name, silence_s)
                if item is None:
                    await self._failed(DeviceUnavailableError(
                        self.name, f"no report in {silence_s:g} s"), sink)
                    continue
                at_ns, mono_ns = time.time_ns(), time.monotonic_ns()
                try:
                    values = self.values_from_json(parse_json(self.name, item))
                except (DeviceError, ValueError) as exc:
                    self.refused(str(exc)[:200])
                    continue
                await self._succeeded(Reading(self.name, values, at_ns, mono_ns), sink)
        finally:
            await link.close()


def _build(device: ManholeTiltDevice, config: EdgeConfig, transports: Transports
           ) -> ManholeTiltDriver:
    if device.transport == "mqtt":
        if transports.broker is None:  # added by a reload: the broker starts at a restart
            raise ConfigError([f"{device.name}: {NO_BROKER}"])
        return ManholeTiltMqttDriver(device, transports.broker,
                                     timeout_s=device.poll_interval_s)
    bus = required(device.name, "bus", device.bus)
    return ManholeTiltModbusDriver(device, transports.buses[bus], timeout_s=transports
                                   .bus_timeout_s(config, bus, device.timeout_s))


# one class per transport; _build picks it by the device's transport (issue 13)
KIND = Kind(
    "manhole_tilt", (ManholeTiltModbusDriver, ManholeTiltMqttDriver), _build,
    fields=frozenset({"tilt_deg", "tilt_x_deg", "tilt_y_deg", "tilt_z_deg", "yaw_deg",
                      "temperature_c", "water_level_m", "battery_v", "signal_dbm"}),
    alarms=(COVER_OPEN, COVER_DISPLACED, WATER_LEVEL_HIGH, BATTERY_LOW,
            COMM_LOST))  # no actions of its own
