"""Load devices.yaml with a line number for every problem, all problems at once.

``ruamel.yaml`` keeps the line of every node; each pydantic error ``loc`` and each
cross-check path is mapped back to the line a technician must edit::

    devices.yaml:14: devices[2].unit_id: must be <= 247 (got 300)
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from edge.config import (
    DEVICE_MODELS,
    AnyDevice,
    EdgeConfig,
    ModbusRtuBus,
    ModbusTcpBus,
    StreetlightDevice,
    is_loopback,
)
from edge.drivers._codecs.plans import READ_PLANS
from edge.errors import ConfigError
from edge.light_schedule import is_astronomical

Loc = tuple[int | str, ...]
_MODBUS = ("modbus_rtu", "modbus_tcp")
_BUS_MODELS: dict[str, type[BaseModel]] = {"modbus_rtu": ModbusRtuBus, "modbus_tcp": ModbusTcpBus}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from (paths in it are relative to ``base_dir``)."""

    config: EdgeConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        """Return the folder the file lives in."""
        return self.path.resolve().parent

    def resolve(self, value: str) -> Path:
        """Resolve a path written in the file, relative to the file's folder."""
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    @property
    def state_dir(self) -> Path:
        """Return the agent's state folder (outbox, journals, status)."""
        return self.resolve(self.config.gateway.state_dir)


def load_config(path: Path) -> LoadedConfig:
    """Parse and validate ``path``; raise ConfigError listing every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> LoadedConfig:
    """Validate YAML ``text`` as if read from ``path``; raise ConfigError with every problem."""
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{path.name}:{line}: YAML syntax: {exc.problem}"]) from exc
    if not isinstance(tree, CommentedMap):
        raise ConfigError([f"{path.name}:1: the file must be a mapping with gateway, uplink, "
                           "buses and devices"])
    data = _plain(tree)
    try:
        config = EdgeConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_format_error(path.name, tree, err) for err in exc.errors()]
        raise ConfigError(_unique(problems)) from None
    problems = [f"{path.name}:{_line_of(tree, loc)}: {_dotted(loc)}: {msg}"
                for loc, msg in cross_check(config)]
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(config, path)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _plain(node: Any) -> Any:
    """Turn ruamel's round-trip nodes into plain dicts, lists and scalars for pydantic."""
    if isinstance(node, CommentedMap):
        return {str(k) if not isinstance(k, (int, float)) else k: _plain(v)
                for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    for plain in (bool, int, float, str):  # ruamel's ScalarInt etc. become plain values
        if isinstance(node, plain):
            return plain(node)
    if node is None:
        return None
    return str(node)


def _walk(tree: Any, loc: Loc) -> Iterator[tuple[Any, int | str]]:
    """Yield (container, key) along ``loc``, skipping pydantic's union-tag elements."""
    node = tree
    for part in loc:
        if isinstance(node, CommentedMap):
            if part not in node:
                if (isinstance(part, str) and node.get("kind") == part) or node.get("type") == part:
                    continue  # a discriminator tag in the loc, not a key in the file
                yield node, part
                return
            yield node, part
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            yield node, part
            node = node[part]
        else:
            return


def _line_of(tree: Any, loc: Loc) -> int:
    """Return the 1-based line of ``loc``: its key, or the nearest enclosing node."""
    line = 1
    for container, key in _walk(tree, loc):
        try:
            if isinstance(container, CommentedMap):
                line = (container.lc.key(key)[0] if key in container else container.lc.line) + 1
            else:
                line = container.lc.item(key)[0] + 1
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line


def _clean_loc(tree: Any, loc: Loc) -> Loc:
    """Drop discriminator tags and pydantic's internal union labels from ``loc``."""
    keep: list[int | str] = []
    walked = {id(key) for _, key in _walk(tree, loc)}
    node_keys = [key for _, key in _walk(tree, loc)]
    for part in loc:
        if part in node_keys or id(part) in walked:
            keep.append(part)
        elif isinstance(part, str) and (part in DEVICE_MODELS or part in _BUS_MODELS
                                        or "[" in part or part.startswith("function-")):
            continue
        else:
            keep.append(part)
    return tuple(keep)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out.replace(".class_", ".class")


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(filename: str, tree: Any, err: ErrorDetails) -> str:
    loc = _clean_loc(tree, tuple(err["loc"]))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind.startswith("union_tag"):
        loc = (*loc, str(ctx.get("discriminator", "kind")).strip("'"))
    messages: dict[str, Callable[[], str]] = {
        "less_than_equal": lambda: f"must be <= {ctx.get('le')} (got {_got(value)})",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')} (got {_got(value)})",
        "less_than": lambda: f"must be < {ctx.get('lt')} (got {_got(value)})",
        "greater_than": lambda: f"must be > {ctx.get('gt')} (got {_got(value)})",
        "missing": lambda: "required field is missing",
        "string_pattern_mismatch": lambda: f"must match {ctx.get('pattern')} (got {_got(value)})",
        "literal_error": lambda: f"must be one of {ctx.get('expected')} (got {_got(value)})",
        "union_tag_invalid": lambda: (f"unknown value {ctx.get('tag')!r}; expected one of "
                                      f"{ctx.get('expected_tags')}"),
        "union_tag_not_found": lambda: "required field is missing",
    }
    if kind == "extra_forbidden":
        message = f"unknown key {_got(loc[-1])}{_did_you_mean(loc)}"
    elif kind in messages:
        message = messages[kind]()
    else:
        message = f"{err['msg'].removeprefix('Value error, ')} (got {_got(value)})"
    return f"{filename}:{_line_of(tree, loc)}: {_dotted(loc)}: {message}"


def _did_you_mean(loc: Loc) -> str:
    allowed = _allowed_keys(loc[:-1], _raw_loc_kind=None)
    close = difflib.get_close_matches(str(loc[-1]), sorted(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed_keys(loc: Sequence[int | str], _raw_loc_kind: str | None) -> set[str]:
    """Return the keys the model at ``loc`` accepts (by walking the model types)."""
    candidates: list[Any] = [EdgeConfig]
    for part in loc:
        nxt: list[Any] = []
        for model in candidates:
            for tp in _unwrap(model):
                if isinstance(part, int):
                    origin = typing.get_origin(tp)
                    if origin is list:
                        nxt.extend(typing.get_args(tp))
                elif isinstance(tp, type) and issubclass(tp, BaseModel):
                    field = tp.model_fields.get(part) or next(
                        (f for f in tp.model_fields.values() if f.alias == part), None)
                    if field is not None:
                        nxt.append(field.annotation)
                elif typing.get_origin(tp) is dict:
                    nxt.append(typing.get_args(tp)[1])
        candidates = nxt
    keys: set[str] = set()
    for model in candidates:
        for tp in _unwrap(model):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                keys.update(f.alias or name for name, f in tp.model_fields.items())
    return keys


def _unwrap(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_unwrap(arg))
        return out
    return [tp]


# ---- cross-checks: run once the structure is valid -----------------------------------------


def cross_check(config: EdgeConfig) -> list[tuple[Loc, str]]:
    """Return (loc, message) for every problem across sections."""
    problems: list[tuple[Loc, str]] = []
    problems += _check_uplink(config)
    seen_buses: dict[str, int] = {}
    for i, bus in enumerate(config.buses):
        if bus.name in seen_buses:
            first = seen_buses[bus.name]
            problems.append((("buses", i, "name"),
                             f"duplicate bus name {bus.name!r} (also buses[{first}])"))
        seen_buses.setdefault(bus.name, i)
    seen: dict[str, int] = {}
    unit_ids: dict[tuple[str, int], int] = {}
    classes = config.class_table()
    for i, device in enumerate(config.devices):
        if device.name in seen:
            first = seen[device.name]
            problems.append((("devices", i, "name"),
                             f"duplicate device name {device.name!r} (also devices[{first}])"))
        seen.setdefault(device.name, i)
        problems += _check_transport(config, i, device, unit_ids)
        problems += _check_asset(config, i, device, classes)
        problems += _check_schedule(i, device)
    problems += _check_wire_capacity(config)
    return problems


def _check_schedule(i: int, device: AnyDevice) -> list[tuple[Loc, str]]:
    """Check a lamp schedule: a relay to switch, and a position for sunset steps."""
    if not isinstance(device, StreetlightDevice) or not device.schedule:
        return []
    if device.model != "lamp_controller":
        return [(("devices", i, "schedule"), f"model {device.model} is a meter without a relay; "
                                             "only a lamp_controller runs a schedule")]
    if device.asset.lat is not None and device.asset.lon is not None:
        return []
    return [(("devices", i, "schedule", j, "at"),
             f"{step.at!r} needs asset.lat and asset.lon (sunrise and sunset are local)")
            for j, step in enumerate(device.schedule) if is_astronomical(step.at)]


def _check_uplink(config: EdgeConfig) -> list[tuple[Loc, str]]:
    up = config.uplink
    out: list[tuple[Loc, str]] = []
    if up.tls is False and not is_loopback(up.connect_host()):
        peer = f"base_url host is {up.connect_host()!r}" if up.kind == "https" else \
            f"host is {up.host!r}"
        out.append((("uplink", "tls"), f"tls: false is allowed only for a loopback broker "
                                       f"({peer})"))
    if isinstance(up.tls, object) and up.tls is not False and \
            (up.tls.cert_file is None) != (up.tls.key_file is None):
        out.append((("uplink", "tls"), "cert_file and key_file go together (mTLS)"))
    if up.kind == "https" and not up.base_url:
        out.append((("uplink", "base_url"), "required when kind is https"))
    elif up.kind == "https" and up.base_url:
        scheme = "http://" if up.tls is False else "https://"
        if not up.base_url.startswith(scheme):
            out.append((("uplink", "base_url"), f"must start with {scheme} (tls is "
                                                f"{'off' if up.tls is False else 'on'})"))
    south = config.southbound_mqtt
    if south is not None and south.tls is False and not is_loopback(south.host):
        out.append((("southbound_mqtt", "tls"),
                    f"tls: false is allowed only for a loopback broker (host is {south.host!r})"))
    obs = config.observability
    if obs.metrics_port is not None and not is_loopback(obs.metrics_host):
        out.append((("observability", "metrics_host"),
                    f"{obs.metrics_host} is not loopback: expose metrics through a VPN-bound "
                    "reverse proxy, not directly"))
    if obs.status_page_port is not None and obs.status_page_password_file is None:
        out.append((("observability", "status_page_password_file"),
                    "required with status_page_port: the page has no default password"))
    if up.reconnect_base_s > up.reconnect_cap_s:
        out.append((("uplink", "reconnect_cap_s"),
                    f"must be >= reconnect_base_s ({up.reconnect_base_s})"))
    return out


def _check_transport(config: EdgeConfig, i: int, device: AnyDevice,
                     unit_ids: dict[tuple[str, int], int]) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    here: Loc = ("devices", i)
    if device.transport in _MODBUS:
        if device.bus is None:
            return [((*here, "bus"), f"required for transport {device.transport}")]
        if device.unit_id is None:
            out.append(((*here, "unit_id"), f"required for transport {device.transport}"))
        names = [b.name for b in config.buses]
        if device.bus not in names:
            close = difflib.get_close_matches(device.bus, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; buses: {names}"
            return [*out, ((*here, "bus"), f"no bus named {device.bus!r}{hint}")]
        bus = config.bus(device.bus)
        if bus.type != device.transport:
            out.append(((*here, "transport"),
                        f"{device.transport} does not match bus {bus.name!r} of type {bus.type}"))
        if device.unit_id is not None:
            key = (device.bus, device.unit_id)
            if key in unit_ids:
                out.append(((*here, "unit_id"),
                            f"unit id {device.unit_id} already used on bus {device.bus!r} "
                            f"by devices[{unit_ids[key]}]"))
            unit_ids.setdefault(key, i)
            if bus.allowed_unit_ids is not None and device.unit_id not in bus.allowed_unit_ids:
                out.append(((*here, "unit_id"),
                            f"unit id {device.unit_id} is not in bus {bus.name!r} "
                            f"allowed_unit_ids {bus.allowed_unit_ids}"))
        if device.model not in READ_PLANS:
            out.append(((*here, "model"), f"model {device.model} is not a Modbus model"))
    elif device.transport == "serial" and not device.port:
        out.append(((*here, "port"), "required for transport serial (a device path or URL)"))
    elif device.transport == "mqtt" and device.kind == "manhole_tilt" and \
            device.model != "mqtt_json":
        out.append(((*here, "model"), f"model {device.model} is a Modbus map; an MQTT cover "
                                      "is model mqtt_json"))
    elif device.transport == "mqtt" and not device.topic:
        out.append(((*here, "topic"), "required for transport mqtt"))
    elif device.transport == "mqtt" and config.southbound_mqtt is None:
        out.append(((*here, "transport"), "mqtt needs a southbound_mqtt broker section"))
    return out


def _check_asset(config: EdgeConfig, i: int, device: AnyDevice,
                 classes: dict[str, tuple[str, tuple[str, ...]]]) -> list[tuple[Loc, str]]:
    asset, here = device.asset, ("devices", i, "asset")
    out: list[tuple[Loc, str]] = []
    if asset.code[6:10] != asset.class_:
        out.append(((*here, "code"), f"digits 7-10 of {asset.code} are {asset.code[6:10]}, "
                                     f"but class is {asset.class_}"))
    if asset.code[:6] != asset.grid[:6]:
        out.append(((*here, "code"), f"county digits {asset.code[:6]} differ from the grid's "
                                     f"{asset.grid[:6]}"))
    if asset.code[:6] != config.gateway.county_code and device.kind != "gps":
        out.append(((*here, "code"), f"county digits {asset.code[:6]} differ from "
                                     f"gateway.county_code {config.gateway.county_code}"))
    row = classes.get(asset.class_)
    if row is None:
        out.append(((*here, "class"), f"class {asset.class_} is not in the class table "
                                      "(add it under asset_classes)"))
    elif device.kind not in row[1]:
        out.append(((*here, "class"), f"class {asset.class_} ({row[0]}) does not fit a "
                                      f"{device.kind}; it holds {list(row[1])}"))
    return out


def _check_wire_capacity(config: EdgeConfig) -> list[tuple[Loc, str]]:
    """Report RS-485 buses whose poll plan needs more wire time than a second holds."""
    out: list[tuple[Loc, str]] = []
    for b, bus in enumerate(config.buses):
        if not isinstance(bus, ModbusRtuBus):
            continue
        busy_s_per_s, count = 0.0, 0
        for device in config.devices:
            if device.bus != bus.name or not device.enabled or device.model not in READ_PLANS:
                continue
            count += 1
            per_poll = sum((blk.request_bytes + blk.response_bytes) * bus.char_s + 2 * bus.gap_s
                           for blk in READ_PLANS[device.model])
            busy_s_per_s += per_poll / device.poll_interval_s
        if busy_s_per_s > 1.0:
            out.append((("buses", b), f"poll plan needs {busy_s_per_s:.0%} of the wire at "
                                      f"{bus.baud} baud ({count} devices, {busy_s_per_s:.2f} s of "
                                      "wire time per second): raise poll_interval_s or split "
                                      "the bus"))
    return out
