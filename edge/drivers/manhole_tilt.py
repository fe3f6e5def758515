"""Manhole-cover tilt sensor over Modbus (firmware_notes/witmotion-inclinometer.md)."""

from __future__ import annotations

import time
from typing import ClassVar

from typing_extensions import override

from edge.alarms import Debounced
from edge.config import ManholeTiltDevice
from edge.drivers._codecs import witmotion
from edge.drivers._modbus import ModbusBus
from edge.drivers.base import AlarmChange, PollingDriver, Reading, Sink
from edge.errors import DeviceProtocolError

COVER_OPEN = "cover_open"


class ManholeTiltDriver(PollingDriver[ManholeTiltDevice]):
    """Poll tilt; raise ``cover_open`` (prio 0) when the cover tilts past the threshold.

    A comm loss raises ``comm_lost`` and freezes the tilt alarm: silence never fakes a clear.
    """

    kind: ClassVar[str] = "manhole_tilt"

    def __init__(self, config: ManholeTiltDevice, bus: ModbusBus, *,
                 timeout_s: float) -> None:
        super().__init__(config, config.name, poll_interval_s=config.poll_interval_s,
                         timeout_s=timeout_s)
        self._bus = bus  # injected, shared by every device on the line
        rule = config.alarms.cover_open
        self.cover_open = Debounced(rule.threshold, rule.clear_below, rule.raise_after,
                                    rule.clear_after)
        self._restored = False

    @override
    async def poll(self) -> Reading:
        cfg = self.config
        assert cfg.unit_id is not None  # the loader checked
        block = witmotion.BLOCKS[0]
        words = await self._bus.read(cfg.name, cfg.unit_id, block.function, block.address,
                                     block.count, timeout_s=cfg.timeout_s)
        at_ns, mono_ns = time.time_ns(), time.monotonic_ns()
        try:
            values = witmotion.decode_angles(words)
        except ValueError as exc:  # codecs don't know device names
            raise DeviceProtocolError(cfg.name, str(exc)) from exc
        values["tilt_deg"] = round(witmotion.tilt_deg(values, cfg.baseline_deg), 2)
        return Reading(cfg.name, values, at_ns, mono_ns)

    @override
    async def on_reading(self, reading: Reading, sink: Sink) -> None:
        if not self._restored:  # an alarm active before a restart keeps its case open
            self.cover_open.active = COVER_OPEN in sink.active_alarms(self.name)
            self._restored = True
        await sink.reading(reading)
        tilt = float(reading.values["tilt_deg"])  # type: ignore[arg-type]
        change = self.cover_open.update(tilt)
        if change is not None:
            rule = self.config.alarms.cover_open
            await sink.alarm(AlarmChange(self.name, COVER_OPEN, change, prio=0, severity=1,
                                         value=tilt, threshold=rule.threshold, unit="deg",
                                         data=dict(reading.values)))

