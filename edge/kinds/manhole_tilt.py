"""A manhole-cover tilt sensor's devices.yaml shape and asset classes (design/devices.md §2.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from edge.kinds.device import DebouncedThreshold, DeviceBase
from edge.shapes import Ge, Le, Pattern, shape


@shape
class TiltAlarms:
    """Manhole-cover alarm rules (design/devices.md §2.1, cover rules).

    ``cover_open`` (prio 0): tilt past 15° held 3 samples (rejects a passing truck's shock).
    ``cover_displaced``: tilt past 60° or gravity flipped — the cover is off its seat.
    ``water_level_high`` / ``battery_low`` need a cover that reports them (the MQTT variant);
    ``battery_low`` alarms *below* its threshold and clears above ``clear_below``.
    """

    cover_open: DebouncedThreshold = field(default_factory=lambda: DebouncedThreshold(
        threshold=15.0, clear_below=10.0, raise_after=3, clear_after=3))
    cover_displaced: DebouncedThreshold = field(default_factory=lambda: DebouncedThreshold(
        threshold=60.0, clear_below=45.0, raise_after=3, clear_after=3))
    water_level_high: DebouncedThreshold | None = None  # metres in the well
    # CJ/T 214 event class of a flooding alarm (0406 road flooding; some cities file 0404)
    water_event_class: Annotated[str, Pattern(r"^[0-9]{4}$")] | None = "0406"
    battery_low: DebouncedThreshold | None = None  # volts; raised when *below* threshold

    def __post_init__(self) -> None:
        for name in ("cover_open", "cover_displaced", "water_level_high"):
            rule = getattr(self, name)
            if rule is not None and rule.clear_below > rule.threshold:
                raise ValueError(f"{name}: clear_below {rule.clear_below} must not exceed "
                                 f"threshold {rule.threshold}")
        low = self.battery_low
        if low is not None and low.clear_below < low.threshold:
            raise ValueError(f"battery_low alarms below {low.threshold} V and clears above "
                             f"clear_below, so clear_below ({low.clear_below}) must be at "
                             "least the threshold")


@shape
class ManholeTiltDevice(DeviceBase):
    """A manhole-cover tilt sensor (Modbus inclinometer, or an NB-IoT/LoRa cover over MQTT)."""

    kind: Literal["manhole_tilt"]
    transport: Literal["modbus_rtu", "modbus_tcp", "mqtt"]
    model: Literal["witmotion", "sunspec304", "mqtt_json"] = "witmotion"
    MODELS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "modbus_rtu": ("witmotion", "sunspec304"), "modbus_tcp": ("witmotion", "sunspec304"),
        "mqtt": ("mqtt_json",)})
    baseline_deg: Annotated[float, Ge(-180), Le(180)] = 0.0
    alarms: TiltAlarms = field(default_factory=TiltAlarms)
    # SunSpec: where the "SunS" marker sits; None walks 40000, 0 and 50000 in that order
    sunspec_base: Annotated[int, Ge(0), Le(65_535)] | None = None


# CJ/T 214 classes a cover may be filed under (design/devices.md §1.3)
ASSET_CLASSES: Mapping[str, str] = MappingProxyType({
    "0101": "上水井盖", "0102": "污水井盖", "0103": "雨水井盖", "0104": "雨水箅子",
    "0105": "电力井盖", "0106": "路灯井盖", "0107": "通讯井盖", "0108": "电视井盖",
    "0109": "网络井盖", "0110": "热力井盖", "0111": "燃气井盖", "0112": "公安井盖",
    "0114": "无主井盖", "0127": "中水井盖"})
DEVICE = ManholeTiltDevice
