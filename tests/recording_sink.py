"""A Sink that records what drivers report (driver-level tests)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.drivers.base import AlarmChange, DeviceState, Reading


@dataclass
class RecordingSink:
    readings: list[Reading] = field(default_factory=list)
    alarms: list[AlarmChange] = field(default_factory=list)
    states: list[tuple[str, DeviceState, str]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    active: set[tuple[str, str]] = field(default_factory=set)
    gnss: list[int] = field(default_factory=list)

    async def reading(self, reading: Reading) -> None:
        self.readings.append(reading)

    async def alarm(self, change: AlarmChange) -> None:
        self.alarms.append(change)
        key = (change.device, change.kind)
        if change.state == "raised":
            self.active.add(key)
        else:
            self.active.discard(key)

    async def state(self, device: str, state: DeviceState, detail: str) -> None:
        self.states.append((device, state, detail))

    def active_alarms(self, device: str) -> set[str]:
        return {kind for dev, kind in self.active if dev == device}

    async def command_result(self, device: str, cmd_id: str | None, action: str, status: str,
                             detail: Mapping[str, Any]) -> None:
        self.results.append({"device": device, "cmd_id": cmd_id, "action": action,
                             "status": status, **detail})

    def gnss_time(self, utc_ns: int) -> None:
        self.gnss.append(utc_ns)
