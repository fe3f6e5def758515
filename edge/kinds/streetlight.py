"""A streetlight controller's devices.yaml shape and asset classes (design/devices.md §2.2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from edge.kinds.device import DeviceBase, FieldProblemsError
from edge.light_schedule import AT_PATTERN, is_astronomical
from edge.shapes import Ge, Gt, Le, MaxLen, Pattern, shape


@shape
class StreetlightAlarms:
    """Streetlight alarm thresholds."""

    lamp_out_below_w: Annotated[float, Ge(0)] = 5.0
    power_loss_below_v: Annotated[float, Ge(0)] = 180.0
    overcurrent_a: Annotated[float, Gt(0)] = 2.0  # a 150 W LED lamp draws ~0.7 A
    # day_burn: lit (power over lamp_out_below_w) while the sun is up by more than this margin,
    # so dawn and dusk switching jitter never alarms; needs the asset's lat/lon
    day_burn_margin_min: Annotated[float, Ge(0), Le(240)] = 30.0
    raise_after: Annotated[int, Ge(1), Le(1000)] = 3
    clear_after: Annotated[int, Ge(1), Le(1000)] = 3


@shape
class LightStep:
    """A stored light schedule entry: at a local or astronomical time, take this state."""

    at: Annotated[str, Pattern(AT_PATTERN)]  # "18:30", "sunset+15", "sunrise-10" (minutes)
    on: bool
    dim_pct: Annotated[int, Ge(0), Le(100)] = 100


@shape
class StreetlightDevice(DeviceBase):
    """A streetlight controller with a meter (relay, dimming, power)."""

    max_switches_per_min: Annotated[int, Ge(1), Le(60)] = 4  # relay wear and flicker
    # the lowest dim level the LED driver holds without flicker (many stop below 10 %)
    min_dim_pct: Annotated[int, Ge(0), Le(100)] = 0
    # the schedule the lamp runs on the gateway, also while the uplink is down; a
    # light.schedule command replaces it (kept in gateway.state_dir across restarts)
    schedule: Annotated[list[LightStep], MaxLen(24)] = field(default_factory=list)

    kind: Literal["streetlight"]
    transport: Literal["modbus_rtu", "modbus_tcp"]
    model: Literal["lamp_controller", "sdm120", "pzem004t"] = "lamp_controller"
    MODELS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "modbus_rtu": ("lamp_controller", "sdm120", "pzem004t"),
        "modbus_tcp": ("lamp_controller", "sdm120", "pzem004t")})
    # the models with a relay coil and a dim register (light.set, light.schedule, a schedule in
    # devices.yaml); sdm120 and pzem004t are meters only (firmware_notes/sdm120.md)
    SWITCHABLE: ClassVar[frozenset[str]] = frozenset({"lamp_controller"})
    alarms: StreetlightAlarms = field(default_factory=StreetlightAlarms)

    def __post_init__(self) -> None:
        DeviceBase.__post_init__(self)  # not super(): a slotted dataclass is a new class
        if self.schedule and self.model not in self.SWITCHABLE:  # a relay to switch
            runs = " or ".join(sorted(self.SWITCHABLE))
            raise FieldProblemsError([(("schedule",), f"model {self.model} is a meter without "
                                       f"a relay; only {runs} runs a schedule")])
        if self.asset.lat is None or self.asset.lon is None:  # sunrise and sunset are local
            problems: list[tuple[tuple[int | str, ...], str]] = [
                (("schedule", j, "at"), f"{step.at!r} needs asset.lat and asset.lon (sunrise "
                                        "and sunset are local)")
                for j, step in enumerate(self.schedule) if is_astronomical(step.at)]
            if problems:
                raise FieldProblemsError(problems)


# CJ/T 214 classes a lamp may be filed under (design/devices.md §1.3); a pole (0117) may
# carry a loudspeaker too
ASSET_CLASSES: Mapping[str, str] = MappingProxyType({
    "0117": "立杆", "0118": "路灯", "0119": "地灯", "0120": "景观灯"})
DEVICE = StreetlightDevice
