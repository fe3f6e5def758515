"""The typed wire view of the event contract (pydantic), for receivers and tests.

What the agent sends is built by ``edge.model`` (``encode_event``, ``encode_batch``) without
these models: the agent never imports this module, so its runtime holds no pydantic (D86).
The published JSON Schemas in edge/contract/schemas are checked against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.clock import TimeQuality
from edge.model import UUID7_PATTERN, EventType


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
