"""A loudspeaker broadcast unit's devices.yaml shape and asset classes (design/devices.md §2.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from edge.kinds.device import WEEKDAYS, DeviceBase, Weekday
from edge.shapes import Ge, Le, MaxLen, MinLen, Pattern, shape


@shape
class BroadcastSchedule:
    """A fixed announcement stored on the gateway: it plays even while the uplink is down."""

    # local time (gateway.utc_offset_h); [0-9], not \d: ASCII digits only (\d takes any script's)
    at: Annotated[str, Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    text: Annotated[str, MinLen(1), MaxLen(200)]
    volume: Annotated[int, Ge(0), Le(16)] = 8
    days: list[Weekday] = field(default_factory=lambda: list(WEEKDAYS))


@shape
class LoudspeakerDevice(DeviceBase):
    """A loudspeaker broadcast unit (serial TTS or IP speaker)."""

    schedules: list[BroadcastSchedule] = field(default_factory=list)
    # clip name -> SHA-256: the only audio that may be played
    clips: dict[str, Annotated[str, Pattern(r"^[0-9a-f]{64}$")]] = field(default_factory=dict)

    kind: Literal["loudspeaker"]
    transport: Literal["serial", "mqtt"]
    model: Literal["syn6288", "ip_speaker"] = "syn6288"
    MODELS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "serial": ("syn6288",), "mqtt": ("ip_speaker",)})
    max_volume: Annotated[int, Ge(0), Le(16)] = 12
    quiet_hours: Annotated[str, Pattern(r"^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$")] | None = \
        "22:00-07:00"
    # SYN6288 boards take GB2312, GBK, BIG5 or UTF-16 (firmware_notes/syn6288-tts.md)
    text_encoding: Literal["gb2312", "gbk", "big5", "utf-16be"] = "gbk"
    max_text_chars: Annotated[int, Ge(1), Le(200)] = 100


# classes a loudspeaker may be filed under (design/devices.md §1.3): loudspeakers have no
# national class, 2105 is a local 21xx extension
ASSET_CLASSES: Mapping[str, str] = MappingProxyType({
    "0117": "立杆", "0124": "信息亭", "2105": "广播音柱 (local extension)"})
DEVICE = LoudspeakerDevice
