"""devices.yaml: the shapes a technician's file must satisfy.

The shapes are frozen stdlib dataclasses (``edge.shapes``): the running agent holds them without
importing pydantic (docs/decisions.md D86). Their constraints are ``Annotated`` metadata that
pydantic reads, strictly and refusing unknown keys, only where the file is validated:
``edge.config_loader.load_config`` parses the YAML with line numbers, validates with these shapes
(devices are a union tagged by ``kind``), runs the cross-checks there, and reports every problem
at once as ``file:line: field: message``.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from collections.abc import Mapping
from dataclasses import field
from importlib import import_module
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args, get_type_hints
from urllib.parse import urlsplit

from edge.kinds import NAMES
from edge.kinds.device import NAME_PATTERN, DeviceBase, digits_from_int
from edge.shapes import Before, Ge, Gt, Le, MinLen, Pattern, Tagged, shape


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
    county_code: Annotated[str, Pattern(r"^[0-9]{6}$"), Before(digits_from_int)]
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


def _kind_module(name: str) -> ModuleType:
    module = import_module(f"edge.kinds.{name}")
    device = getattr(module, "DEVICE", None)
    if not (isinstance(device, type) and issubclass(device, DeviceBase)) or \
            get_args(get_type_hints(device).get("kind")) != (name,):
        raise TypeError(f"edge.kinds.{name} must define DEVICE, a DeviceBase shape with "
                        f"kind: Literal[{name!r}]")
    return module


# Every kind's devices.yaml shape, from the kind table (edge.kinds): a tagged union where the
# file is validated; to the type checker, the base every kind shares
_KIND_MODULES: tuple[ModuleType, ...] = tuple(_kind_module(name) for name in NAMES)
DEVICE_MODELS: Mapping[str, type[DeviceBase]] = MappingProxyType({
    name: module.DEVICE for name, module in zip(NAMES, _KIND_MODULES, strict=True)})
if TYPE_CHECKING:
    AnyDevice: TypeAlias = DeviceBase
    KindName: TypeAlias = str
else:
    AnyDevice = functools.reduce(operator.or_, DEVICE_MODELS.values())
    KindName = Literal[tuple(DEVICE_MODELS)]
Device = Annotated[AnyDevice, Tagged("kind")]


def _default_class_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    # each kind names the classes it may be filed under; a class two kinds share (a pole with a
    # lamp and a loudspeaker) holds both, under the one name both must give it
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for kind, module in zip(NAMES, _KIND_MODULES, strict=True):
        for code, title in module.ASSET_CLASSES.items():
            known, kinds = table.get(code, (title, ()))
            if known != title:
                raise ValueError(f"class {code}: {kind} calls it {title!r}, {kinds[0]} {known!r}")
            table[code] = (title, (*kinds, kind))
    return table


# Default class table (design/devices.md §1.3); a city overrides it under asset_classes.
DEFAULT_ASSET_CLASSES: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType(
    _default_class_table())


@shape
class AssetClass:
    """One row of the class table: display name and the device kinds it may hold."""

    name: str
    kinds: list[KindName]


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
