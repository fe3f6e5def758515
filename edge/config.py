"""devices.yaml: the pydantic models a technician's file must satisfy.

The models are strict, frozen and ``extra="forbid"``; devices are a union discriminated on
``kind``. ``edge.config_loader.load_config`` parses the YAML with line numbers, validates with
these models, runs the cross-checks below, and reports every problem at once as
``file:line: field: message``.
"""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.drivers.geo import distance_m
from edge.light_schedule import AT_PATTERN

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
# an MQTT topic filter: '+' only as a whole level, '#' only as the whole last level (paho
# refuses anything else at subscribe time: the device would restart forever)
TOPIC_FILTER_PATTERN = r"^(?:(?:[^/#+\x00]*|\+)/)*(?:[^/#+\x00]*|\+|#)$"
# Default class table (design/devices.md §1.3); a city overrides it under asset_classes.
DEFAULT_ASSET_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "0101": ("上水井盖", ("manhole_tilt",)),
    "0102": ("污水井盖", ("manhole_tilt",)),
    "0103": ("雨水井盖", ("manhole_tilt",)),
    "0104": ("雨水箅子", ("manhole_tilt",)),
    "0105": ("电力井盖", ("manhole_tilt",)),
    "0106": ("路灯井盖", ("manhole_tilt",)),
    "0107": ("通讯井盖", ("manhole_tilt",)),
    "0108": ("电视井盖", ("manhole_tilt",)),
    "0109": ("网络井盖", ("manhole_tilt",)),
    "0110": ("热力井盖", ("manhole_tilt",)),
    "0111": ("燃气井盖", ("manhole_tilt",)),
    "0112": ("公安井盖", ("manhole_tilt",)),
    "0114": ("无主井盖", ("manhole_tilt",)),
    "0127": ("中水井盖", ("manhole_tilt",)),
    "0117": ("立杆", ("streetlight", "loudspeaker")),
    "0118": ("路灯", ("streetlight",)),
    "0119": ("地灯", ("streetlight",)),
    "0120": ("景观灯", ("streetlight",)),
    "0124": ("信息亭", ("loudspeaker",)),
    # Loudspeakers have no national class: a local 21xx extension (devices.md §1.3).
    "2105": ("广播音柱 (local extension)", ("loudspeaker",)),
    # Vehicles carry their registry id; a local class keeps the 16-digit layout.
    "2190": ("作业车辆 (local extension)", ("gps",)),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _digits_from_int(value: Any) -> Any:
    # An unquoted 16-digit code parses as an int; county codes never start with 0, so no
    # leading zero can be lost and the technician's file is accepted as written.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _class_code(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        msg = "write class codes as quoted strings, e.g. '0106' (an unquoted 0106 loses its 0)"
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns ValueError into a field error
    return value


class TlsConfig(_Model):
    """TLS to the platform: always verified; a private CA pins the server."""

    ca_file: str | None = None  # None: the system trust store
    cert_file: str | None = None  # client certificate (mTLS)
    key_file: str | None = None


class UplinkConfig(_Model):
    """How events reach the platform: MQTT 3.1.1/5 or HTTPS."""

    kind: Literal["mqtt", "https"] = "mqtt"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "5"
    # ``false`` only for a loopback broker, and ``edge check`` warns; never a silent fallback.
    tls: TlsConfig | Literal[False]
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    topic_prefix: str = Field(default="edge/v1", pattern=r"^[^#+$][^#+]*[^/#+]$")
    base_url: str | None = None  # HTTPS
    keepalive_s: int = Field(default=30, ge=5, le=30)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_inflight: int = Field(default=20, ge=1, le=1000)
    batch_max_events: int = Field(default=200, ge=1, le=10_000)
    batch_max_bytes: int = Field(default=128 * 1024, ge=1024, le=16 * 1024 * 1024)
    reconnect_base_s: float = Field(default=1.0, gt=0, le=60)
    reconnect_cap_s: float = Field(default=300.0, gt=0, le=3600)
    stable_after_s: float = Field(default=60.0, ge=0, le=3600)
    # a stable connection lost may be the whole fleet's (a broker restart): until it is back,
    # retries are spread over at least this window (capped by reconnect_cap_s); 20 s keeps the
    # busiest second of a fleet under 10 % of it (bench fleet, docs/scale.md)
    reconnect_spread_s: float = Field(default=20.0, ge=0, le=600)
    boot_delay_max_s: float = Field(default=30.0, ge=0, le=600)
    replay_events_per_s: float = Field(default=0.0, ge=0)  # 0: 10x the live rate
    max_attempts: int = Field(default=5, ge=1, le=1000)
    # ``state`` goes at connect, on a change (active alarms, time quality) and on this
    # heartbeat, which also refreshes its outbox depth and seq baseline (issue 20 #5, D57)
    state_heartbeat_s: float = Field(default=900.0, ge=1, le=86_400)

    @field_validator("base_url")
    @classmethod
    def _plain_base_url(cls, value: str | None) -> str | None:
        # credentials in a URL end up in logs, status and error text: they belong in
        # password_file (security review 19 #5)
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry a user or password (use password_file)")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value

    def connect_host(self) -> str:
        """Return the host the uplink actually connects to (``base_url``'s for HTTPS).

        ``host`` is only the MQTT broker: the HTTPS uplink connects to ``base_url`` (security
        review 19 #6: ``tls: false`` passed on a loopback ``host`` with a remote ``base_url``).
        An HTTPS URL without a host returns "" (not loopback).
        """
        if self.kind == "https":
            return urlsplit(self.base_url or "").hostname or ""
        return self.host


class SouthboundMqttConfig(_Model):
    """The broker MQTT devices (NB-IoT covers, IP speakers, trackers) report to."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: TlsConfig | Literal[False]  # false only for a loopback broker
    username: str | None = None
    password_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=120)


class OutboxConfig(_Model):
    """The durable outbox (edge/buffer)."""

    path: str = "outbox.db"  # relative to gateway.state_dir
    quota_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    commit_max_events: int = Field(default=100, ge=1, le=10_000)
    commit_max_wait_s: float = Field(default=0.05, gt=0, le=5)
    alarm_retention_s: float = Field(default=7 * 86400, ge=3600)
    telemetry_retention_s: float = Field(default=72 * 3600, ge=600)
    # positions are personal data (reliability.md S12): kept no longer than this, even unsent
    position_retention_s: float = Field(default=24 * 3600, ge=600)
    max_attempts: int = Field(default=5, ge=1, le=1000)


# Every role a platform key may hold (what each allows: edge.commands.processor.role_catalogue()).
Role = Literal["lighting", "broadcast", "broadcast-emergency", "config", "read"]
ROLES: tuple[str, ...] = get_args(Role)


class PlatformKey(_Model):
    """A platform public key allowed to sign commands, with the roles it may use."""

    public_key_hex: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: list[Role]


class ObservabilityConfig(_Model):
    """Local observability; off by default (no listening port unless configured)."""

    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # Prometheus, e.g. 9108
    metrics_host: str = "127.0.0.1"
    # the technicians' status page: loopback, or the cabinet's service interface
    status_page_port: int | None = Field(default=None, ge=1, le=65535)
    status_page_host: str = "127.0.0.1"
    status_page_password_file: str | None = None  # required with a port: no default password
    # Basic auth sends the password in clear: off loopback only when set (docs/decisions.md)
    status_page_plain_http: bool = False


class GatewayConfig(_Model):
    """The gateway itself."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    county_code: str = Field(pattern=r"^\d{6}$")
    time_source: Literal["ntp", "gnss", "system"] = "ntp"
    key_file: str
    state_dir: str
    platform_keys: dict[str, PlatformKey] = Field(default_factory=dict)
    # keys provisioned apart from the device list (JSON: {kid: {public_key_hex, roles}})
    platform_keys_file: str | None = None
    utc_offset_h: int = Field(default=8, ge=-12, le=14)  # local time for quiet hours, schedules

    _county = field_validator("county_code", mode="before")(_digits_from_int)




class ModbusRtuBus(_Model):
    """An RS-485 line (or a serial server speaking RTU over TCP via ``socket://``)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["modbus_rtu"]
    port: str = Field(min_length=1)  # /dev/ttyUSB0, or socket://host:port for RTU over TCP
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stop_bits: Literal[1, 2] = 1
    timeout_s: float = Field(default=0.5, ge=0.02, le=10)
    retries: int = Field(default=1, ge=0, le=5)
    inter_frame_gap_s: float | None = Field(default=None, ge=0, le=1)  # None: 3.5 chars
    allowed_unit_ids: list[Annotated[int, Field(ge=1, le=247)]] | None = None

    @property
    def char_s(self) -> float:
        """Return the wire time of one character (start + 8 data + parity + stop bits)."""
        bits = 1 + 8 + (0 if self.parity == "N" else 1) + self.stop_bits
        return bits / self.baud

    @property
    def gap_s(self) -> float:
        """Return the inter-frame gap: configured, or 3.5 characters (Modbus over serial)."""
        if self.inter_frame_gap_s is not None:
            return self.inter_frame_gap_s
        return max(3.5 * self.char_s, 0.00175)  # spec: fixed 1.75 ms above 19,200 baud


class ModbusTcpBus(_Model):
    """A Modbus TCP endpoint (a device or a gateway in front of several unit ids)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, ge=0.02, le=10)
    retries: int = Field(default=1, ge=0, le=5)
    allowed_unit_ids: list[Annotated[int, Field(ge=0, le=255)]] | None = None


Bus = Annotated[ModbusRtuBus | ModbusTcpBus, Field(discriminator="type")]


class AssetConfig(_Model):
    """The street asset: its 16-digit component code, class, grid cell, name and position."""

    code: str = Field(pattern=r"^\d{16}$")
    class_: str = Field(alias="class", pattern=r"^\d{4}$")
    grid: str = Field(pattern=r"^\d{14,15}$")
    name: str = Field(min_length=1, max_length=120)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    _codes = field_validator("code", "grid", mode="before")(_digits_from_int)
    _cls = field_validator("class_", mode="before")(_class_code)


class DebouncedThreshold(_Model):
    """A debounced threshold with hysteresis.

    Raise after ``raise_after`` samples at or over ``threshold``; clear after ``clear_after``
    samples below ``clear_below``.
    """

    threshold: float
    clear_below: float
    raise_after: int = Field(default=3, ge=1, le=1000)
    clear_after: int = Field(default=3, ge=1, le=1000)


class _DeviceBase(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    asset: AssetConfig
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=86_400)
    timeout_s: float | None = Field(default=None, ge=0.02, le=30)  # None: the bus's
    enabled: bool = True
    # Modbus transports
    bus: str | None = None
    unit_id: int | None = Field(default=None, ge=1, le=247)
    # serial transport
    port: str | None = None
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    # mqtt transport (the southbound broker); JSON fields by dotted path, e.g. {"lat": "gps.lat"}
    topic: str | None = Field(default=None, min_length=1, max_length=256,
                              pattern=TOPIC_FILTER_PATTERN)
    json_map: dict[str, str] = Field(default_factory=dict)


class TiltAlarms(_Model):
    """Manhole-cover alarm rules (design/devices.md §2.1, cover rules).

    ``cover_open`` (prio 0): tilt past 15° held 3 samples (rejects a passing truck's shock).
    ``cover_displaced``: tilt past 60° or gravity flipped — the cover is off its seat.
    ``water_level_high`` / ``battery_low`` need a cover that reports them (the MQTT variant);
    ``battery_low`` alarms *below* its threshold and clears above ``clear_below``.
    """

    cover_open: DebouncedThreshold = DebouncedThreshold(
        threshold=15.0, clear_below=10.0, raise_after=3, clear_after=3)
    cover_displaced: DebouncedThreshold = DebouncedThreshold(
        threshold=60.0, clear_below=45.0, raise_after=3, clear_after=3)
    water_level_high: DebouncedThreshold | None = None  # metres in the well
    # CJ/T 214 event class of a flooding alarm (0406 road flooding; some cities file 0404)
    water_event_class: str | None = Field(default="0406", pattern=r"^\d{4}$")
    battery_low: DebouncedThreshold | None = None  # volts; raised when *below* threshold

    @model_validator(mode="after")
    def _bounds(self) -> TiltAlarms:
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
        return self


class ManholeTiltDevice(_DeviceBase):
    """A manhole-cover tilt sensor (Modbus inclinometer, or an NB-IoT/LoRa cover over MQTT)."""

    kind: Literal["manhole_tilt"]
    transport: Literal["modbus_rtu", "modbus_tcp", "mqtt"]
    model: Literal["witmotion", "sunspec304", "mqtt_json"] = "witmotion"
    baseline_deg: float = Field(default=0.0, ge=-180, le=180)
    alarms: TiltAlarms = TiltAlarms()
    # SunSpec: where the "SunS" marker sits; None walks 40000, 0 and 50000 in that order
    sunspec_base: int | None = Field(default=None, ge=0, le=65_535)


class StreetlightAlarms(_Model):
    """Streetlight alarm thresholds."""

    lamp_out_below_w: float = Field(default=5.0, ge=0)
    power_loss_below_v: float = Field(default=180.0, ge=0)
    overcurrent_a: float = Field(default=2.0, gt=0)  # a 150 W LED lamp draws ~0.7 A
    # day_burn: lit (power over lamp_out_below_w) while the sun is up by more than this margin,
    # so dawn and dusk switching jitter never alarms; needs the asset's lat/lon
    day_burn_margin_min: float = Field(default=30.0, ge=0, le=240)
    raise_after: int = Field(default=3, ge=1, le=1000)
    clear_after: int = Field(default=3, ge=1, le=1000)


class LightStep(_Model):
    """A stored light schedule entry: at a local or astronomical time, take this state."""

    at: str = Field(pattern=AT_PATTERN)  # "18:30", "sunset+15", "sunrise-10" (minutes)
    on: bool
    dim_pct: int = Field(default=100, ge=0, le=100)


class StreetlightDevice(_DeviceBase):
    """A streetlight controller with a meter (relay, dimming, power)."""

    max_switches_per_min: int = Field(default=4, ge=1, le=60)  # relay wear and flicker
    # the lowest dim level the LED driver holds without flicker (many stop below 10 %)
    min_dim_pct: int = Field(default=0, ge=0, le=100)
    # the schedule the lamp runs on the gateway, also while the uplink is down; a
    # light.schedule command replaces it (kept in gateway.state_dir across restarts)
    schedule: list[LightStep] = Field(default_factory=list, max_length=24)

    kind: Literal["streetlight"]
    transport: Literal["modbus_rtu", "modbus_tcp"]
    model: Literal["lamp_controller", "sdm120", "pzem004t"] = "lamp_controller"
    alarms: StreetlightAlarms = StreetlightAlarms()


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BroadcastSchedule(_Model):
    """A fixed announcement stored on the gateway: it plays even while the uplink is down."""

    at: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # local time (gateway.utc_offset_h)
    text: str = Field(min_length=1, max_length=200)
    volume: int = Field(default=8, ge=0, le=16)
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))


class LoudspeakerDevice(_DeviceBase):
    """A loudspeaker broadcast unit (serial TTS or IP speaker)."""

    schedules: list[BroadcastSchedule] = Field(default_factory=list)
    clips: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=dict)  # clip name -> SHA-256: the only audio that may be played

    kind: Literal["loudspeaker"]
    transport: Literal["serial", "mqtt"]
    model: Literal["syn6288", "ip_speaker"] = "syn6288"
    max_volume: int = Field(default=12, ge=0, le=16)
    quiet_hours: str | None = Field(default="22:00-07:00", pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    # SYN6288 boards take GB2312, GBK, BIG5 or UTF-16 (firmware_notes/syn6288-tts.md)
    text_encoding: Literal["gb2312", "gbk", "big5", "utf-16be"] = "gbk"
    max_text_chars: int = Field(default=100, ge=1, le=200)

    @model_validator(mode="before")
    @classmethod
    def _model_from_transport(cls, data: object) -> object:
        # the transport says which unit is built (a SYN6288 board on a port, an IP speaker on
        # the broker): an unstated model follows it, so a clip check by model cannot disagree
        if isinstance(data, dict) and "model" not in data and data.get("transport") == "mqtt":
            return {**data, "model": "ip_speaker"}
        return data

    @model_validator(mode="after")
    def _model_fits_transport(self) -> LoudspeakerDevice:
        wanted = "ip_speaker" if self.transport == "mqtt" else "syn6288"
        if self.model != wanted:
            raise FieldProblemsError([(("model",), f"{self.model} does not speak over "
                                       f"transport {self.transport}: use {wanted}")])
        return self


class Geofence(_Model):
    """A polygon the vehicle must stay in (``alarm_on: exit``) or keep out of (``enter``)."""

    name: str = Field(min_length=1, max_length=60)
    polygon: list[Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(min_length=3)
    alarm_on: Literal["exit", "enter"] = "exit"


LatLon = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]],
                   Field(min_length=2, max_length=2)]
# a truck's work roads are discretised into units at load (edge/drivers/coverage.py); this
# bounds the memory and the time of that (200 km of road at 5 m, or 5 km² of squares)
WORK_MAX_UNITS = 40_000
WORK_MAX_SPAN_M = 50_000.0  # one city: the local plane projection stays within 0.1 %


def _point_error(point: list[float]) -> str | None:
    lat, lon = point
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return f"[{lat}, {lon}] is not a [lat, lon] position"
    return None


class FieldProblemsError(ValueError):
    """Several problems of one block, each at a place inside it (``loc`` below the block).

    A model validator raises it instead of one ValueError so that ``edge check`` shows every
    problem on its own line in words (edge/config_loader.py expands it), not the first one at
    the block's line with a dump of the block.
    """

    def __init__(self, problems: list[tuple[tuple[int | str, ...], str]]) -> None:
        super().__init__("; ".join(
            f"{'.'.join(str(p) for p in loc)}: {msg}" if loc else msg for loc, msg in problems))
        self.problems = problems


class WorkShift(_Model):
    """A shift in local time (``gateway.utc_offset_h``); an end before the start is overnight."""

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))  # the start's day

    @model_validator(mode="after")
    def _length(self) -> WorkShift:
        if self.start == self.end:
            raise FieldProblemsError([(("end",), f"start and end are both {self.start}: a shift "
                                            "has a length")])
        return self


class WorkRoad(_Model):
    """A work road: a centreline ``line`` ``width_m`` wide, or an area (``polygon``).

    An area (a square, a plaza) is swept in passes ``width_m`` wide. Points are [lat, lon].
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    width_m: float = Field(gt=0, le=60, allow_inf_nan=False)
    line: list[LatLon] | None = Field(default=None, min_length=2, max_length=2000)
    polygon: list[LatLon] | None = Field(default=None, min_length=3, max_length=2000)

    @model_validator(mode="after")
    def _shape(self) -> WorkRoad:
        if (self.line is None) == (self.polygon is None):
            raise FieldProblemsError([((), "give exactly one of line (a centreline) or polygon "
                                      "(an area)")])
        field = "line" if self.line is not None else "polygon"
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for i, point in enumerate(self.line or self.polygon or []):
            why = _point_error(point)
            if why is not None:
                problems.append(((field, i), why))
        if problems:
            raise FieldProblemsError(problems)
        return self


class WorkConfig(_Model):
    """Work coverage of a sanitation truck (作业面考核; docs/work-coverage.md)."""

    shift: WorkShift
    roads: list[WorkRoad] = Field(min_length=1, max_length=100)  # one event: < 64 KiB
    # working speed: a sweeper or washer works at walking to cycling pace; faster is transit
    min_speed_kmh: float = Field(default=2.0, ge=0, le=60, allow_inf_nan=False)
    max_speed_kmh: float = Field(default=20.0, gt=0, le=60, allow_inf_nan=False)
    # fixes further apart than this: the stretch between them is unknown, not missed
    max_gap_s: float = Field(default=10.0, ge=1, le=600, allow_inf_nan=False)
    segment_m: float = Field(default=5.0, ge=1, le=50, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> WorkConfig:
        # every problem of the block at once, each at its own key (edge check's lines)
        problems: list[tuple[tuple[int | str, ...], str]] = []
        if self.min_speed_kmh >= self.max_speed_kmh:
            problems.append((("min_speed_kmh",), f"{self.min_speed_kmh:g} must be below "
                             f"max_speed_kmh {self.max_speed_kmh:g}"))
        first: dict[str, int] = {}
        for i, road in enumerate(self.roads):
            if road.id in first:
                problems.append((("roads", i, "id"), f"{road.id!r} is already the id of "
                                 f"road {first[road.id] + 1}: road ids must be unique"))
            first.setdefault(road.id, i)
        units = sum(road_units(road, self.segment_m) for road in self.roads)
        if units > WORK_MAX_UNITS:
            problems.append((("roads",), f"roads too long or areas too large for "
                             f"segment_m {self.segment_m:g}: {units} pieces "
                             f"(at most {WORK_MAX_UNITS})"))
        lat0, lon0 = (self.roads[0].line or self.roads[0].polygon or [[0.0, 0.0]])[0]
        for i, road in enumerate(self.roads):
            far = max(distance_m(lat0, lon0, lat, lon)
                      for lat, lon in (road.line or road.polygon or []))
            if far > WORK_MAX_SPAN_M:
                problems.append((("roads", i), f"{far / 1000:.0f} km from the first road's "
                                 f"first point: one truck's roads must lie within "
                                 f"{WORK_MAX_SPAN_M / 1000:.0f} km of it"))
        if problems:
            raise FieldProblemsError(problems)
        return self


def road_units(road: WorkRoad, segment_m: float) -> int:
    """Return how many pieces ``road`` is cut into (lines: ``segment_m`` long; areas: cells)."""
    if road.line is not None:
        length_m = sum(distance_m(a[0], a[1], b[0], b[1])
                       for a, b in itertools.pairwise(road.line))
        return int(length_m / segment_m) + len(road.line)
    assert road.polygon is not None
    lats = [p[0] for p in road.polygon]
    lons = [p[1] for p in road.polygon]
    height_m = distance_m(min(lats), min(lons), max(lats), min(lons))
    width_m = distance_m(min(lats), min(lons), min(lats), max(lons))
    cell_m = min(segment_m, road.width_m)
    return (int(height_m / cell_m) + 1) * (int(width_m / cell_m) + 1)


class GpsDevice(_DeviceBase):
    """A GPS tracker (NMEA over serial, or JSON over MQTT)."""

    overspeed_kmh: float | None = Field(default=None, gt=0, le=300)
    stopped_too_long_s: float | None = Field(default=None, ge=60)
    no_fix_s: float = Field(default=60.0, ge=5)
    heading_change_deg: float = Field(default=30.0, gt=0, le=180)
    geofences: list[Geofence] = Field(default_factory=list)

    kind: Literal["gps"]
    transport: Literal["serial", "mqtt"]
    model: Literal["nmea", "mqtt_json"] = "nmea"
    min_distance_m: float = Field(default=20.0, ge=0)
    max_interval_s: float = Field(default=60.0, ge=1)
    position_decimals: int = Field(default=6, ge=2, le=7)
    work: WorkConfig | None = None  # shift, roads and speeds of a sanitation truck


Device = Annotated[
    ManholeTiltDevice | StreetlightDevice | LoudspeakerDevice | GpsDevice,
    Field(discriminator="kind"),
]
DEVICE_MODELS: dict[str, type[_DeviceBase]] = {
    "manhole_tilt": ManholeTiltDevice, "streetlight": StreetlightDevice,
    "loudspeaker": LoudspeakerDevice, "gps": GpsDevice,
}
AnyDevice = ManholeTiltDevice | StreetlightDevice | LoudspeakerDevice | GpsDevice


class AssetClass(_Model):
    """One row of the class table: display name and the device kinds it may hold."""

    name: str
    kinds: list[Literal["manhole_tilt", "streetlight", "loudspeaker", "gps"]]


class EdgeConfig(_Model):
    """The whole devices.yaml."""

    gateway: GatewayConfig
    uplink: UplinkConfig
    outbox: OutboxConfig = OutboxConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    southbound_mqtt: SouthboundMqttConfig | None = None
    buses: list[Bus] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)
    asset_classes: dict[str, AssetClass] = Field(default_factory=dict)

    def class_table(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Return the default class table overridden by the file's ``asset_classes``."""
        table = dict(DEFAULT_ASSET_CLASSES)
        for code, row in self.asset_classes.items():
            table[code] = (row.name, tuple(row.kinds))
        return table

    def bus(self, name: str) -> ModbusRtuBus | ModbusTcpBus:
        """Return the bus called ``name``; KeyError if none (the loader checked)."""
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)

    def device(self, name: str) -> AnyDevice:
        """Return the device called ``name``; KeyError if none."""
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names this machine (``tls: false`` is allowed only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_path(base_dir: Path, value: str) -> Path:
    """Resolve a path from devices.yaml relative to the file's own folder."""
    path = Path(value)
    return path if path.is_absolute() else base_dir / path
