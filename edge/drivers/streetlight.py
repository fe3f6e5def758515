"""Streetlight controller: relay, dimming, SDM120-style meter (firmware_notes/sdm120.md)."""

from __future__ import annotations

import time
from typing import ClassVar

from typing_extensions import override

from edge.alarms import Debounced
from edge.config import StreetlightDevice
from edge.drivers._codecs import pzem004t, sdm120
from edge.drivers._codecs.plans import READ_PLANS
from edge.drivers._modbus import ModbusBus
from edge.drivers.base import AlarmChange, PollingDriver, Reading, Sink
from edge.errors import DeviceProtocolError, DeviceRejectedError

LAMP_OUT = "lamp_out"
POWER_LOSS = "power_loss"


class StreetlightDriver(PollingDriver[StreetlightDevice]):
    """Poll relay state and meter; raise ``lamp_out`` (on but dark) and ``power_loss``."""

    kind: ClassVar[str] = "streetlight"

    def __init__(self, config: StreetlightDevice, bus: ModbusBus, *, timeout_s: float) -> None:
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=timeout_s)
        self._bus = bus
        rules = config.alarms
        # lamp_out: a value of 1 means "commanded on and drawing less than the threshold"
        self.lamp_out = Debounced(1.0, 0.0, rules.raise_after, rules.clear_after)
        self.power_loss = Debounced(rules.power_loss_below_v, rules.power_loss_below_v + 10,
                                    rules.raise_after, rules.clear_after, below=True)

    @override
    async def poll(self) -> Reading:
        cfg = self.config
        assert cfg.unit_id is not None
        block = READ_PLANS[cfg.model][0]
        words = await self._bus.read(cfg.name, cfg.unit_id, block.function, block.address,
                                     block.count, timeout_s=cfg.timeout_s)
        at_ns, mono_ns = time.time_ns(), time.monotonic_ns()
        try:
            values: dict[str, float | bool] = dict(
                pzem004t.decode(words) if cfg.model == "pzem004t" else sdm120.decode_meter(words))
        except ValueError as exc:
            raise DeviceProtocolError(cfg.name, str(exc)) from exc
        if cfg.model == "lamp_controller":
            relay = await self._bus.read(cfg.name, cfg.unit_id, 1, sdm120.RELAY_COIL, 1,
                                         timeout_s=cfg.timeout_s)
            dim = await self._bus.read(cfg.name, cfg.unit_id, 3, sdm120.DIM_REGISTER, 1,
                                       timeout_s=cfg.timeout_s)
            values["relay_on"] = bool(relay[0])
            values["dim_pct"] = dim[0]
        return Reading(cfg.name, values, at_ns, mono_ns)

    async def set_light(self, *, on: bool, dim_pct: int) -> dict[str, object]:
        """Switch and dim, then read back; raise DeviceError if the controller disagrees."""
        cfg = self.config
        assert cfg.unit_id is not None
        if cfg.model != "lamp_controller":
            raise DeviceRejectedError(cfg.name, unit_id=cfg.unit_id, address=sdm120.RELAY_COIL,
                                      exception_code=1)
        await self._bus.write_register(cfg.name, cfg.unit_id, sdm120.DIM_REGISTER, dim_pct)
        await self._bus.write_coil(cfg.name, cfg.unit_id, sdm120.RELAY_COIL, on)
        relay = await self._bus.read(cfg.name, cfg.unit_id, 1, sdm120.RELAY_COIL, 1)
        dim = await self._bus.read(cfg.name, cfg.unit_id, 3, sdm120.DIM_REGISTER, 1)
        if bool(relay[0]) != on or dim[0] != dim_pct:
            raise DeviceProtocolError(cfg.name, f"read back relay={bool(relay[0])} dim={dim[0]}"
                                                f", wrote relay={on} dim={dim_pct}")
        return {"relay_on": on, "dim_pct": dim_pct, "verified": True}

    @override
    async def on_reading(self, reading: Reading, sink: Sink) -> None:
        await sink.reading(reading)
        values = reading.values
        power_w = float(values["power_w"])  # type: ignore[arg-type]
        voltage_v = float(values["voltage_v"])  # type: ignore[arg-type]
        rules = self.config.alarms
        dark = bool(values.get("relay_on")) and power_w < rules.lamp_out_below_w
        for kind, tracker, sample, value, threshold, unit in (
            (LAMP_OUT, self.lamp_out, 1.0 if dark else -1.0, power_w, rules.lamp_out_below_w, "W"),
            (POWER_LOSS, self.power_loss, voltage_v, voltage_v, rules.power_loss_below_v, "V"),
        ):
            change = tracker.update(sample)
            if change is not None:
                await sink.alarm(AlarmChange(self.name, kind, change, prio=1, severity=2,
                                             value=value, threshold=threshold, unit=unit))

