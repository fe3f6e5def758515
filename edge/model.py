"""The asset-event model: what the agent records and what travels (design/events.md, v1).

Two views of one contract:

* ``Event`` (a frozen dataclass) is what drivers and the agent build on the hot path, turned
  into compact JSON by ``encode_event`` once the outbox has given it its ``seq``.
* ``WireEvent`` / ``WireBatch`` / ``Envelope`` (pydantic) are the typed wire view; the published
  JSON Schemas (``edge schema``) are files in edge/contract/schemas, checked against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


# ---- the wire contract, validated at receivers and exported as JSON Schema ----------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireAsset(_Strict):
    """``asset`` block."""

    code: str = Field(pattern=r"^\d{16}$")
    class_: str = Field(alias="class", pattern=r"^\d{4}$")
    grid: str = Field(pattern=r"^\d{14,15}$")
    name: str
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class WireAlarm(_Strict):
    """``alarm`` block."""

    kind: str
    state: Literal["raised", "cleared"]
    alarm_id: str = Field(min_length=1)
    severity: int = Field(ge=0, le=5)
    event_class: str | None = Field(default=None, pattern=r"^\d{4}$")
    value: float | None = None
    threshold: float | None = None
    unit: str | None = None


class WireMono(_Strict):
    """Boot id + monotonic ms of an event stamped before the clock synced."""

    boot_id: str
    ms: int = Field(ge=0)


class WireEvent(_Strict):
    """One event as it travels."""

    id: str = Field(pattern=UUID7_PATTERN)
    seq: int = Field(ge=1)
    type: EventType
    prio: int = Field(ge=0, le=3)
    ts: str
    time_quality: TimeQuality
    mono: WireMono | None = None
    asset: WireAsset | None = None
    device: str | None = None
    alarm: WireAlarm | None = None
    data: dict[str, Any]


class WireBatch(_Strict):
    """The signed body: a bounded batch of events."""

    v: Literal[1]
    gw: str
    # a UUIDv7, unique per gateway for ever (D57); agents before it sent a counter that
    # restarted at 1 with the agent: still accepted, never an idempotency key
    batch: Annotated[str, Field(pattern=UUID7_PATTERN)] | Annotated[int, Field(ge=0)]
    sent_at: str
    events: list[WireEvent] = Field(min_length=1)


class Envelope(_Strict):
    """The detached-signature envelope that is published (also for commands)."""

    kid: str = Field(pattern=r"^[0-9a-f]{16}$")
    alg: Literal["Ed25519"]
    sig: str
    body: str


class WireCoverageShift(_Strict):
    """The shift a coverage report is about (UTC, RFC 3339)."""

    start: str
    end: str
    state: Literal["ended", "in_progress"]


class WireCoverageGrid(_Strict):
    """An area's cell grid of ``cell_m`` squares from its south-west corner.

    Cell ``i`` is row ``i // cols`` (counted north) and column ``i % cols`` (counted east).
    """

    origin_lat: float = Field(ge=-90, le=90)
    origin_lon: float = Field(ge=-180, le=180)
    cell_m: float = Field(gt=0)
    cols: int = Field(ge=1)
    rows: int = Field(ge=1)


Stretch = tuple[float, float]


class WireRoadCoverage(_Strict):
    """One work road of a ``work_coverage`` event.

    ``covered``/``unknown``/``missed`` are ``[start, end]`` stretches in order: chainage in
    metres from the first point of a ``line`` road, or ``[first, end)`` cell numbers of an
    ``area`` (its ``grid``). Together they tile the road; ``truncated``: a list hit its cap
    and its last stretch was widened to the end of the ones left out.
    """

    id: str
    shape: Literal["line", "area"]
    length_m: float | None = Field(default=None, ge=0)  # lines
    cells: float | None = Field(default=None, ge=0)  # areas
    covered_pct: float = Field(ge=0, le=100)
    unknown_pct: float = Field(ge=0, le=100)
    missed_pct: float = Field(ge=0, le=100)
    first_pass: str | None
    last_pass: str | None
    covered: list[Stretch]
    unknown: list[Stretch]
    missed: list[Stretch]
    truncated: bool
    grid: WireCoverageGrid | None = None


class WireWorkCoverage(_Strict):
    """``data`` of a ``work_coverage`` event (prio 1): a truck's shift, road by road.

    Sent when the shift ends; ``device.read`` answers the running shift (``in_progress``).
    A stretch swept at working speed (``min_speed_kmh``..``max_speed_kmh``) is covered; one
    a fix outage (fixes more than ``max_gap_s`` apart) may have passed is unknown, not
    missed. ``clock: untrusted``: the shift's boundaries came from an unsynced clock.
    Format and method: docs/work-coverage.md.
    """

    shift: WireCoverageShift
    clock: Literal["trusted", "untrusted"]
    min_speed_kmh: float
    max_speed_kmh: float
    segment_m: float
    max_gap_s: float
    fixes: int = Field(ge=0)
    working_fixes: int = Field(ge=0)
    gaps: int = Field(ge=0)
    gap_s: float = Field(ge=0)
    roads: list[WireRoadCoverage]


def json_schemas() -> dict[str, Any]:
    """Return the published JSON Schemas by name (edge/contract/schemas, the single source).

    The models above validate at run time; what a platform is given, and what ``edge schema``
    prints, are the shipped files (tests/test_contract.py keeps the two in step).
    """
    from edge.contract import schemas  # noqa: PLC0415 - only `edge schema` and tests need it

    return schemas()
