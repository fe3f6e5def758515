"""The asset-event model: what the agent records and what travels (design/events.md, v1).

Two views of one contract:

* ``Event`` (a frozen dataclass) is what drivers and the agent build on the hot path, turned
  into compact JSON by ``encode_event`` once the outbox has given it its ``seq``.
* ``edge.wire``'s ``WireEvent`` / ``WireBatch`` / ``Envelope`` (pydantic) are the typed wire
  view receivers and tests validate with; the published JSON Schemas (``edge schema``) are files
  in edge/contract/schemas, checked against them. The agent never imports them (D86).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Literal

from edge.clock import TimeQuality, rfc3339_ms
from edge.ids import uuid7

WIRE_VERSION = 1
UUID7_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


class EventType(StrEnum):
    """``type`` of an event."""

    READING = "reading"
    ALARM = "alarm"
    STATE = "state"
    POSITION = "position"
    COMMAND_RESULT = "command_result"
    GAP = "gap"
    HEARTBEAT = "heartbeat"
    WORK_COVERAGE = "work_coverage"  # a sanitation truck's shift (WireWorkCoverage)


class Prio(IntEnum):
    """Drain lowest first, evict highest first (design/events.md)."""

    CRITICAL = 0  # cover open, cabinet power loss, emergency broadcast result, gap
    ALARM = 1  # other alarms, clears, command results
    STATE = 2  # device state, positions
    TELEMETRY = 3  # periodic readings


# never evicted, kept by alarm retention, committed at once (the outbox's contract)
ALARM_PRIOS = (Prio.CRITICAL, Prio.ALARM)


@dataclass(frozen=True, slots=True)
class Asset:
    """The street asset a device watches (from devices.yaml)."""

    code: str
    cls: str
    grid: str
    name: str
    lat: float | None = None
    lon: float | None = None

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON object of the ``asset`` block."""
        return {"code": self.code, "class": self.cls, "grid": self.grid, "name": self.name,
                "lat": self.lat, "lon": self.lon}


@dataclass(frozen=True, slots=True)
class Alarm:
    """The ``alarm`` block: a raise and its clear share ``alarm_id``."""

    kind: str
    state: Literal["raised", "cleared"]
    alarm_id: str
    severity: int
    value: float | None = None
    threshold: float | None = None
    unit: str | None = None
    event_class: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON object of the ``alarm`` block."""
        return {"kind": self.kind, "state": self.state, "alarm_id": self.alarm_id,
                "severity": self.severity, "event_class": self.event_class,
                "value": self.value, "threshold": self.threshold, "unit": self.unit}


@dataclass(frozen=True, slots=True)
class Event:
    """One asset event before it has a ``seq``; ``ts_ns`` is read time, not send time."""

    type: EventType
    prio: int
    ts_ns: int
    time_quality: TimeQuality
    device: str | None = None
    asset: Asset | None = None
    data: dict[str, Any] = field(default_factory=dict)
    alarm: Alarm | None = None
    mono: tuple[str, int] | None = None  # (boot_id, monotonic ms) while the clock is unsynced
    id: str = field(default_factory=lambda: str(uuid7()))

    def to_wire(self, seq: int) -> dict[str, Any]:
        """Return the JSON object of this event with its outbox ``seq``."""
        wire: dict[str, Any] = {
            "id": self.id, "seq": seq, "type": self.type.value, "prio": self.prio,
            "ts": rfc3339_ms(self.ts_ns), "time_quality": self.time_quality.value,
        }
        if self.mono is not None:
            wire["mono"] = {"boot_id": self.mono[0], "ms": self.mono[1]}
        if self.asset is not None:
            wire["asset"] = self.asset.to_wire()
        if self.device is not None:
            wire["device"] = self.device
        if self.alarm is not None:
            wire["alarm"] = self.alarm.to_wire()
        wire["data"] = self.data
        return wire


def dumps(value: Any) -> bytes:
    """Serialise compactly as UTF-8 (Chinese asset names stay readable, not escaped)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def encode_event(event: Event, seq: int) -> bytes:
    """Return the compact JSON bytes of ``event`` with ``seq``, as stored and sent."""
    return dumps(event.to_wire(seq))


def encode_batch(gateway_id: str, batch_id: str | int, sent_at_ns: int,
                 events: list[bytes]) -> bytes:
    """Return the batch body; stored event bytes are spliced in, never re-parsed."""
    head = dumps({"v": WIRE_VERSION, "gw": gateway_id, "batch": batch_id,
                  "sent_at": rfc3339_ms(sent_at_ns)})
    return head[:-1] + b',"events":[' + b",".join(events) + b"]}"


def json_schemas() -> dict[str, Any]:
    """Return the published JSON Schemas by name (edge/contract/schemas, the single source).

    The models in ``edge.wire`` validate at receivers; what a platform is given, and what
    ``edge schema`` prints, are the shipped files (tests/test_contract.py keeps them in step).
    """
    from edge.contract import schemas  # noqa: PLC0415 - only `edge schema` and tests need it

    return schemas()
