"""devices.yaml: the shapes a technician's file must satisfy.

The shapes are frozen stdlib dataclasses (``edge.shapes``): the running agent holds them without
importing pydantic (docs/decisions.md D86). Their constraints are ``Annotated`` metadata that
pydantic reads, strictly and refusing unknown keys, only where the file is validated:
``edge.config_loader.load_config`` parses the YAML with line numbers, validates with these shapes
(devices are a union tagged by ``kind``), runs the cross-checks there, and reports every problem
at once as ``file:line: field: message``.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Final,
    Literal,
    get_args,
    get_type_hints,
)
from urllib.parse import urlsplit

from edge.shapes import Before, Finite, Ge, Gt, Le, MaxLen, MinLen, Pattern, Tagged, shape

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

from edge.drivers.geo import distance_m
from edge.light_schedule import AT_PATTERN

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
SERIAL_DEFAULT_BAUD: Final = 9600  # a serial device's; a Modbus RTU device has its bus's
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


def _digits_from_int(value: Any) -> Any:
    # An unquoted 16-digit code parses as an int; county codes never start with 0, so no
    # leading zero can be lost and the technician's file is accepted as written.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _class_code(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        msg = "write class codes as quoted strings, e.g. '0106' (an unquoted 0106 loses its 0)"
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns ValueError into a field error
    return value


def _plain_base_url(value: Any) -> Any:
    # credentials in a URL end up in logs, status and error text: they belong in
    # password_file (security review 19 #5); not text: the str check says so
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user or password (use password_file)")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return value


@shape
class TlsConfig:
    """TLS to the platform: always verified; a private CA pins the server."""

    ca_file: str | None = None  # None: the system trust store
    cert_file: str | None = None  # client certificate (mTLS)
    key_file: str | None = None


@shape
class UplinkConfig:
    """How events reach the platform: MQTT 3.1.1/5 or HTTPS."""

    kind: Literal["mqtt", "https"] = "mqtt"
    host: Annotated[str, MinLen(1)]
    port: Annotated[int, Ge(1), Le(65535)]
    protocol: Literal["3.1.1", "5"] = "5"
    # ``false`` only for a loopback broker, and ``edge check`` warns; never a silent fallback.
    tls: TlsConfig | Literal[False]
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    topic_prefix: Annotated[str, Pattern(r"^[^#+$][^#+]*[^/#+]$")] = "edge/v1"
    base_url: Annotated[str | None, Before(_plain_base_url)] = None  # HTTPS
    keepalive_s: Annotated[int, Ge(5), Le(30)] = 30
    connect_timeout_s: Annotated[float, Gt(0), Le(120)] = 10.0
    max_inflight: Annotated[int, Ge(1), Le(1000)] = 20
    batch_max_events: Annotated[int, Ge(1), Le(10_000)] = 200
    batch_max_bytes: Annotated[int, Ge(1024), Le(16 * 1024 * 1024)] = 128 * 1024
    reconnect_base_s: Annotated[float, Gt(0), Le(60)] = 1.0
    reconnect_cap_s: Annotated[float, Gt(0), Le(3600)] = 300.0
    stable_after_s: Annotated[float, Ge(0), Le(3600)] = 60.0
    # a stable connection lost may be the whole fleet's (a broker restart): until it is back,
    # retries are spread over at least this window (capped by reconnect_cap_s); 20 s keeps the
    # busiest second of a fleet under 10 % of it (bench fleet, docs/scale.md)
    reconnect_spread_s: Annotated[float, Ge(0), Le(600)] = 20.0
    boot_delay_max_s: Annotated[float, Ge(0), Le(600)] = 30.0
    replay_events_per_s: Annotated[float, Ge(0)] = 0.0  # 0: 10x the live rate
    max_attempts: Annotated[int, Ge(1), Le(1000)] = 5
    # ``state`` goes at connect, on a change (active alarms, time quality) and on this
    # heartbeat, which also refreshes its outbox depth and seq baseline (issue 20 #5, D57)
    state_heartbeat_s: Annotated[float, Ge(1), Le(86_400)] = 900.0

    def connect_host(self) -> str:
        """Return the host the uplink actually connects to (``base_url``'s for HTTPS).

        ``host`` is only the MQTT broker: the HTTPS uplink connects to ``base_url`` (security
        review 19 #6: ``tls: false`` passed on a loopback ``host`` with a remote ``base_url``).
        An HTTPS URL without a host returns "" (not loopback).
        """
        if self.kind == "https":
            return urlsplit(self.base_url or "").hostname or ""
        return self.host


@shape
class SouthboundMqttConfig:
    """The broker MQTT devices (NB-IoT covers, IP speakers, trackers) report to."""

    host: Annotated[str, MinLen(1)]
    port: Annotated[int, Ge(1), Le(65535)]
    tls: TlsConfig | Literal[False]  # false only for a loopback broker
    username: str | None = None
    password_file: str | None = None
    keepalive_s: Annotated[int, Ge(5), Le(120)] = 30


@shape
class OutboxConfig:
    """The durable outbox (edge/buffer)."""

    path: str = "outbox.db"  # relative to gateway.state_dir
    quota_bytes: Annotated[int, Ge(1024 * 1024)] = 256 * 1024 * 1024
    commit_max_events: Annotated[int, Ge(1), Le(10_000)] = 100
    commit_max_wait_s: Annotated[float, Gt(0), Le(5)] = 0.05
    alarm_retention_s: Annotated[float, Ge(3600)] = 7 * 86400
    telemetry_retention_s: Annotated[float, Ge(600)] = 72 * 3600
    # positions are personal data (reliability.md S12): kept no longer than this, even unsent
    position_retention_s: Annotated[float, Ge(600)] = 24 * 3600
    max_attempts: Annotated[int, Ge(1), Le(1000)] = 5


# Every role a platform key may hold (what each allows: edge.commands.catalogue.role_catalogue()).
Role = Literal["lighting", "broadcast", "broadcast-emergency", "config", "read"]
ROLES: tuple[str, ...] = get_args(Role)


@shape
class PlatformKey:
    """A platform public key allowed to sign commands, with the roles it may use."""

    public_key_hex: Annotated[str, Pattern(r"^[0-9a-f]{64}$")]
    roles: list[Role]


@shape
class ObservabilityConfig:
    """Local observability; off by default (no listening port unless configured)."""

    metrics_port: Annotated[int, Ge(1), Le(65535)] | None = None  # Prometheus, e.g. 9108
    metrics_host: str = "127.0.0.1"
    # the technicians' status page: loopback, or the cabinet's service interface
    status_page_port: Annotated[int, Ge(1), Le(65535)] | None = None
    status_page_host: str = "127.0.0.1"
    status_page_password_file: str | None = None  # required with a port: no default password
    # Basic auth sends the password in clear: off loopback only when set (docs/decisions.md)
    status_page_plain_http: bool = False


@shape
class GatewayConfig:
    """The gateway itself."""

    id: Annotated[str, Pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    county_code: Annotated[str, Pattern(r"^[0-9]{6}$"), Before(_digits_from_int)]
    time_source: Literal["ntp", "gnss", "system"] = "ntp"
    key_file: str
    state_dir: str
    platform_keys: dict[str, PlatformKey] = field(default_factory=dict)
    # keys provisioned apart from the device list (JSON: {kid: {public_key_hex, roles}})
    platform_keys_file: str | None = None
    utc_offset_h: Annotated[int, Ge(-12), Le(14)] = 8  # local time for quiet hours, schedules



@shape
class ModbusRtuBus:
    """An RS-485 line (or a serial server speaking RTU over TCP via ``socket://``)."""

    name: Annotated[str, Pattern(NAME_PATTERN)]
    type: Literal["modbus_rtu"]
    port: Annotated[str, MinLen(1)]  # /dev/ttyUSB0, or socket://host:port for RTU over TCP
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stop_bits: Literal[1, 2] = 1
    timeout_s: Annotated[float, Ge(0.02), Le(10)] = 0.5
    retries: Annotated[int, Ge(0), Le(5)] = 1
    inter_frame_gap_s: Annotated[float, Ge(0), Le(1)] | None = None  # None: 3.5 chars
    allowed_unit_ids: list[Annotated[int, Ge(1), Le(247)]] | None = None

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


@shape
class ModbusTcpBus:
    """A Modbus TCP endpoint (a device or a gateway in front of several unit ids)."""

    name: Annotated[str, Pattern(NAME_PATTERN)]
    type: Literal["modbus_tcp"]
    host: Annotated[str, MinLen(1)]
    port: Annotated[int, Ge(1), Le(65535)] = 502
    timeout_s: Annotated[float, Ge(0.02), Le(10)] = 1.0
    retries: Annotated[int, Ge(0), Le(5)] = 1
    allowed_unit_ids: list[Annotated[int, Ge(0), Le(255)]] | None = None


Bus = Annotated[ModbusRtuBus | ModbusTcpBus, Tagged("type")]


@shape
class AssetConfig:
    """The street asset: its 16-digit component code, class, grid cell, name and position."""

    code: Annotated[str, Pattern(r"^[0-9]{16}$"), Before(_digits_from_int)]
    class_: Annotated[str, Pattern(r"^[0-9]{4}$"), Before(_class_code)]
    grid: Annotated[str, Pattern(r"^[0-9]{14,15}$"), Before(_digits_from_int)]
    name: Annotated[str, MinLen(1), MaxLen(120)]
    lat: Annotated[float, Ge(-90), Le(90)] | None = None
    lon: Annotated[float, Ge(-180), Le(180)] | None = None

    # ``class`` is a Python keyword: the field is class_, the file's key is its alias
    _ALIASES: ClassVar[dict[str, str]] = {"class_": "class"}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        # only where pydantic validates: the dataclass's own schema, its fields renamed
        schema = handler(source)
        fields = handler.resolve_ref_schema(schema)["schema"]["fields"]
        for spec in fields:
            if spec["name"] in cls._ALIASES:
                spec["validation_alias"] = spec["serialization_alias"] = cls._ALIASES[spec["name"]]
        return schema


@shape
class DebouncedThreshold:
    """A debounced threshold with hysteresis.

    Raise after ``raise_after`` samples at or over ``threshold``; clear after ``clear_after``
    samples below ``clear_below``.
    """

    threshold: float
    clear_below: float
    raise_after: Annotated[int, Ge(1), Le(1000)] = 3
    clear_after: Annotated[int, Ge(1), Le(1000)] = 3


@shape
class _DeviceBase:
    name: Annotated[str, Pattern(NAME_PATTERN)]
    asset: AssetConfig
    poll_interval_s: Annotated[float, Ge(0.05), Le(86_400)] = 1.0
    timeout_s: Annotated[float, Ge(0.02), Le(30)] | None = None  # None: the bus's
    enabled: bool = True
    # Modbus transports
    bus: str | None = None
    unit_id: Annotated[int, Ge(1), Le(247)] | None = None
    # serial transport
    port: str | None = None
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = SERIAL_DEFAULT_BAUD
    # mqtt transport (the southbound broker); JSON fields by dotted path, e.g. {"lat": "gps.lat"}
    topic: Annotated[str, MinLen(1), MaxLen(256), Pattern(TOPIC_FILTER_PATTERN)] | None = None
    json_map: dict[str, str] = field(default_factory=dict)

    # Each kind declares, once: which models speak over which transport (the first is the one
    # a device that names none gets where pydantic validates; the ``model`` field's default
    # is the first transport's, so code that builds or replaces a device for another transport
    # names its model), and whether it roams (a vehicle: its readings are positions, its asset
    # code's county is its registry's, not the gateway's)
    MODELS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({})
    ROAMS: ClassVar[bool] = False
    if TYPE_CHECKING:  # each kind's own Literal fields; declared here for the checks below
        transport: str
        model: str

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        # only where pydantic validates: the keys are rewritten before the dataclass's own
        # schema sees them; the union still finds ``kind`` through the wrapper
        from pydantic_core import core_schema  # noqa: PLC0415

        return core_schema.no_info_before_validator_function(cls._model_from_transport,
                                                             handler(source))

    @classmethod
    def _model_from_transport(cls, data: object) -> object:
        # the transport says which unit is built (a SYN6288 board on a port, an IP speaker on
        # the broker): an unstated model follows it, so a check by model cannot disagree
        if isinstance(data, dict) and "model" not in data:
            models = cls.MODELS.get(str(data.get("transport")))
            if models:
                return {**data, "model": models[0]}
        return data

    def __post_init__(self) -> None:
        models = self.MODELS.get(self.transport, ())
        if self.model not in models:
            use = f"use {' or '.join(models)}" if models else \
                f"a {type(self).__name__} has no model for it"
            raise FieldProblemsError([(("model",), f"{self.model} does not speak over "
                                       f"transport {self.transport}: {use}")])


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
class ManholeTiltDevice(_DeviceBase):
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
class StreetlightDevice(_DeviceBase):
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


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@shape
class BroadcastSchedule:
    """A fixed announcement stored on the gateway: it plays even while the uplink is down."""

    # local time (gateway.utc_offset_h); [0-9], not \d: ASCII digits only (\d takes any script's)
    at: Annotated[str, Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    text: Annotated[str, MinLen(1), MaxLen(200)]
    volume: Annotated[int, Ge(0), Le(16)] = 8
    days: list[Weekday] = field(default_factory=lambda: list(WEEKDAYS))


@shape
class LoudspeakerDevice(_DeviceBase):
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


@shape
class Geofence:
    """A polygon the vehicle must stay in (``alarm_on: exit``) or keep out of (``enter``)."""

    name: Annotated[str, MinLen(1), MaxLen(60)]
    polygon: Annotated[list[Annotated[list[float], MinLen(2), MaxLen(2)]], MinLen(3)]
    alarm_on: Literal["exit", "enter"] = "exit"


LatLon = Annotated[list[Annotated[float, Finite()]], MinLen(2), MaxLen(2)]
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

    A ``__post_init__`` raises it instead of one ValueError so that ``edge check`` shows every
    problem on its own line in words (edge/config_loader.py expands it), not the first one at
    the block's line with a dump of the block.
    """

    def __init__(self, problems: list[tuple[tuple[int | str, ...], str]]) -> None:
        super().__init__("; ".join(
            f"{'.'.join(str(p) for p in loc)}: {msg}" if loc else msg for loc, msg in problems))
        self.problems = problems


@shape
class WorkShift:
    """A shift in local time (``gateway.utc_offset_h``); an end before the start is overnight."""

    start: Annotated[str, Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    end: Annotated[str, Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    days: list[Weekday] = field(default_factory=lambda: list(WEEKDAYS))  # the start's day

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise FieldProblemsError([(("end",), f"start and end are both {self.start}: a shift "
                                            "has a length")])


@shape
class WorkRoad:
    """A work road: a centreline ``line`` ``width_m`` wide, or an area (``polygon``).

    An area (a square, a plaza) is swept in passes ``width_m`` wide. Points are [lat, lon].
    """

    id: Annotated[str, Pattern(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    width_m: Annotated[float, Gt(0), Le(60), Finite()]
    line: Annotated[list[LatLon], MinLen(2), MaxLen(2000)] | None = None
    polygon: Annotated[list[LatLon], MinLen(3), MaxLen(2000)] | None = None

    def __post_init__(self) -> None:
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


@shape
class WorkConfig:
    """Work coverage of a sanitation truck (作业面考核; docs/work-coverage.md)."""

    shift: WorkShift
    roads: Annotated[list[WorkRoad], MinLen(1), MaxLen(100)]  # one event: < 64 KiB
    # working speed: a sweeper or washer works at walking to cycling pace; faster is transit
    min_speed_kmh: Annotated[float, Ge(0), Le(60), Finite()] = 2.0
    max_speed_kmh: Annotated[float, Gt(0), Le(60), Finite()] = 20.0
    # fixes further apart than this: the stretch between them is unknown, not missed
    max_gap_s: Annotated[float, Ge(1), Le(600), Finite()] = 10.0
    segment_m: Annotated[float, Ge(1), Le(50), Finite()] = 5.0

    def __post_init__(self) -> None:
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


@shape
class GpsDevice(_DeviceBase):
    """A GPS tracker (NMEA over serial, or JSON over MQTT)."""

    overspeed_kmh: Annotated[float, Gt(0), Le(300)] | None = None
    stopped_too_long_s: Annotated[float, Ge(60)] | None = None
    no_fix_s: Annotated[float, Ge(5)] = 60.0
    heading_change_deg: Annotated[float, Gt(0), Le(180)] = 30.0
    geofences: list[Geofence] = field(default_factory=list)

    kind: Literal["gps"]
    transport: Literal["serial", "mqtt"]
    model: Literal["nmea", "mqtt_json"] = "nmea"
    MODELS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "serial": ("nmea",), "mqtt": ("mqtt_json",)})
    ROAMS: ClassVar[bool] = True
    min_distance_m: Annotated[float, Ge(0)] = 20.0
    max_interval_s: Annotated[float, Ge(1)] = 60.0
    position_decimals: Annotated[int, Ge(2), Le(7)] = 6
    work: WorkConfig | None = None  # shift, roads and speeds of a sanitation truck


# Every kind's devices.yaml model, named once; the rest is derived (the order is the command
# catalogue's, edge.drivers.factory.KINDS)
AnyDevice = ManholeTiltDevice | StreetlightDevice | LoudspeakerDevice | GpsDevice
Device = Annotated[AnyDevice, Tagged("kind")]
DEVICE_MODELS: dict[str, type[_DeviceBase]] = {
    get_args(get_type_hints(cls)["kind"])[0]: cls for cls in get_args(AnyDevice)}


@shape
class AssetClass:
    """One row of the class table: display name and the device kinds it may hold."""

    name: str
    kinds: list[Literal["manhole_tilt", "streetlight", "loudspeaker", "gps"]]


@shape
class EdgeConfig:
    """The whole devices.yaml."""

    gateway: GatewayConfig
    uplink: UplinkConfig
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    southbound_mqtt: SouthboundMqttConfig | None = None
    buses: list[Bus] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    asset_classes: dict[str, AssetClass] = field(default_factory=dict)

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
