"""Load devices.yaml with a line number for every problem, all problems at once.

``ruamel.yaml`` keeps the line of every node; each pydantic error ``loc`` and each
cross-check path is mapped back to the line a technician must edit::

    devices.yaml:14: devices[2].unit_id: must be <= 247 (got 300)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from edge.config import (
    DEFAULT_ASSET_CLASSES,
    DEVICE_MODELS,
    AnyDevice,
    Bus,
    Device,
    EdgeConfig,
    ModbusRtuBus,
    ModbusTcpBus,
    is_loopback,
)
from edge.config_file import LoadedConfig
from edge.drivers._codecs.plans import READ_PLANS
from edge.errors import ConfigError
from edge.kinds.device import (
    NAME_PATTERN,
    SERIAL_DEFAULT_BAUD,
    TOPIC_FILTER_PATTERN,
    AssetConfig,
    FieldProblemsError,
)
from edge.light_schedule import AT_PATTERN

Loc = tuple[int | str, ...]
_MODBUS = ("modbus_rtu", "modbus_tcp")
_TRANSPORT_NAMES = (*_MODBUS, "serial", "mqtt")
_BUS_MODELS: dict[str, type[Any]] = {"modbus_rtu": ModbusRtuBus, "modbus_tcp": ModbusTcpBus}
T = TypeVar("T")


# ---- pydantic over the config's dataclasses (edge.shapes; only the validating step) --------


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    # building one costs milliseconds (the whole config: ~100 ms): once per type
    adapter = _ADAPTERS.get(tp)
    if adapter is None:
        adapter = _ADAPTERS[tp] = TypeAdapter(tp)
    return adapter


def validate(cls: type[T], data: Any) -> T:
    """Return ``data`` (dicts, lists, scalars) validated as the config shape ``cls``.

    Raises pydantic's ValidationError. The shapes are strict, and strict pydantic takes a
    dataclass from JSON only, so ``data`` goes through JSON.
    """
    result: T = _adapter(cls).validate_json(json.dumps(data))
    return result


def dump(shape: Any, *, exclude_none: bool = False) -> Any:
    """Return a config shape as JSON values, keys as written in devices.yaml (``class``)."""
    return _adapter(type(shape)).dump_python(shape, mode="json", by_alias=True,
                                              exclude_none=exclude_none)


def _json_text(data: Any) -> tuple[str, list[ErrorDetails]]:
    """Return ``data`` as JSON for pydantic, and an error for each key JSON cannot carry.

    A YAML key written as a number (``2105:``) would silently become text in JSON; the file
    is refused for it as before (the entry itself is still checked, under its text).
    """
    problems: list[ErrorDetails] = []

    def keys_as_text(value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):  # in a loc as pydantic puts it: int or str
                    at = int(key) if isinstance(key, int) else str(key)
                    problems.append({"type": "string_type", "loc": (*loc, at, "[key]"),
                                     "msg": "Input should be a valid string", "input": key})
                out.setdefault(str(key), keys_as_text(item, (*loc, key)))
            return out
        if isinstance(value, list):
            return [keys_as_text(item, (*loc, i)) for i, item in enumerate(value)]
        return value

    return json.dumps(keys_as_text(data, ())), problems


def _loc_in(data: Any, loc: Sequence[int | str]) -> Loc:
    """Return a pydantic ``loc`` with each key JSON turned to text (``_json_text``) as written."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(data, dict):
            key = part if part in data else next(
                (k for k in data if not isinstance(k, str) and str(k) == part), part)
            out.append(key)
            data = data.get(key, data)  # not a key: a union's tag, the same dict below it
        else:
            out.append(part)
            fits = isinstance(data, list) and isinstance(part, int) and part < len(data)
            data = data[part] if fits else None
    return tuple(out)


def _fields(cls: type[Any]) -> dict[str, Any]:
    """Return a config shape's fields as written in the file (aliases) and their types."""
    hints = typing.get_type_hints(cls, include_extras=True)
    aliases: dict[str, str] = getattr(cls, "_ALIASES", {})
    return {aliases.get(f.name, f.name): hints[f.name] for f in dataclasses.fields(cls)}


def load_config(path: Path) -> LoadedConfig:
    """Parse and validate ``path``; raise ConfigError listing every problem with its line."""
    try:
        size_bytes = path.stat().st_size
        if size_bytes > MAX_CONFIG_BYTES:  # refused unread: parsing is ~20 s per MiB
            raise ConfigError([_too_big(path.name, size_bytes)])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> LoadedConfig:
    """Validate YAML ``text`` as if read from ``path``; raise ConfigError with every problem."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([_too_big(path.name, len(text.encode()))])
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer  # bounds nodes, depth and alias fan-out while composing
    try:
        tree = yaml.load(text)
    except _ConfigTooBigError as exc:
        raise ConfigError([f"{path.name}:{exc.line}: {exc}"]) from None
    except MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(path.name, text, exc)]) from exc
    except RecursionError:  # ruamel's parser recurses per level: "[[[[..." ran out of stack
        raise ConfigError([f"{path.name}: nested too deeply to be a devices.yaml"]) from None
    if not isinstance(tree, CommentedMap):
        raise ConfigError([f"{path.name}:1: the file must be a mapping with gateway, uplink, "
                           "buses and devices"])
    data = _plain(tree)
    text, errors = _json_text(data)
    try:
        config = _adapter(EdgeConfig).validate_json(text)
    except ValidationError as exc:
        errors += [{**err, "loc": _loc_in(data, err["loc"])} for err in exc.errors()]
    if errors:
        errors += _unmasked_by_unknown_keys(data, errors)
        # every mistake in one pass: the parts that did validate are still cross-checked, so a
        # bus-name typo shows up beside a unit id out of range, not after it is fixed
        problems = [found for err in errors for found in _problems(path.name, tree, err)]
        config, partial = _partial_config(data)
        problems += _cross_problems(path.name, tree, config, partial)
        raise ConfigError(_by_line(problems)) from None
    found = _cross_problems(path.name, tree, config, None)
    if found:
        raise ConfigError(_by_line(found))
    return LoadedConfig(config, path, tree, _line_of)


_UNKNOWN_KEY = frozenset({"extra_forbidden", "unexpected_keyword_argument"})


def _unmasked_by_unknown_keys(data: Any, errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Return the errors an unknown key hid: a block's own checks run only once its keys fit.

    A lamp with a misspelt key and a class code that does not fit it was reported for the key
    alone; the class came up only after the key was fixed. Validating again without the
    unknown keys shows both in one pass (list positions are unchanged, so lines still fit).
    """
    unknown = [err["loc"] for err in errors if err["type"] in _UNKNOWN_KEY]
    if not unknown:
        return []
    mended = _mend_unknown_keys(json.loads(_json_text(data)[0]), unknown)
    try:
        _adapter(EdgeConfig).validate_json(json.dumps(mended))
    except ValidationError as exc:
        return [{**err, "loc": _loc_in(data, err["loc"])} for err in exc.errors()
                if err["type"] not in _UNKNOWN_KEY]
    return []


def _mend_unknown_keys(doc: Any, unknown: Sequence[Loc], prefix: Loc = ()) -> Any:
    """Return ``doc`` (JSON values, changed in place) with each unknown key mended.

    A key that misspells a field the block does not also hold takes that field's place (the
    "did you mean" of its message); any other is dropped. Dropped, a misspelt
    ``max_speed_kph: 30`` would leave ``max_speed_kmh`` at its default, and a check across
    fields would blame a 20 the technician never wrote. ``prefix`` is where ``doc`` sits in
    the file (a list item's ``devices``, index); a union's tag in a loc is passed over.
    """
    for loc in unknown:
        block, where = doc, list(prefix)
        for part in loc[:-1]:
            if isinstance(block, dict):
                if str(part) in block:  # else a union's tag: the same dict below it
                    block, where = block[str(part)], [*where, part]
            elif isinstance(block, list) and isinstance(part, int) and part < len(block):
                block, where = block[part], [*where, part]
            else:
                break
        key = str(loc[-1])
        if not isinstance(block, dict) or key not in block:
            continue
        value = block.pop(key)
        close = difflib.get_close_matches(key, sorted(_allowed_keys(where, None)), n=1,
                                          cutoff=0.6)
        if close and close[0] not in block:
            block[close[0]] = value
    return doc


def _cross_problems(filename: str, tree: Any, config: EdgeConfig,
                    partial: Partial | None) -> list[tuple[int, str]]:
    def line_of(loc: Loc) -> int:
        return _line_of(tree, loc)

    return [(line_of(loc), f"{filename}:{line_of(loc)}: {_dotted(loc, tree)}: {msg}")
            for loc, msg in cross_check(config, partial=partial, line_of=line_of,
                                        name_of=lambda loc: _dotted(loc, tree))]


def _by_line(problems: list[tuple[int, str]]) -> list[str]:
    """Return the messages once each, top of the file first (the order a technician edits)."""
    seen = dict.fromkeys(message for _, message in
                         sorted(problems, key=lambda item: item[0]))
    return list(seen)


@dataclass(frozen=True)
class Partial:
    """What validated of a file that did not: cross-checks run on these parts only."""

    broken: frozenset[str]  # top-level sections that did not validate
    devices: tuple[int, ...]  # file indices of the devices that validated
    buses: tuple[int, ...]
    raw_bus_names: tuple[str, ...]  # every bus name written, valid or not
    raw_devices: tuple[tuple[int, dict[str, Any]], ...]  # the devices that did not validate


def _partial_config(data: Any) -> tuple[EdgeConfig, Partial]:
    """Validate section by section and item by item; build a config of what passed."""
    data = data if isinstance(data, dict) else {}
    parts: dict[str, Any] = {}
    broken: set[str] = set()
    items: dict[str, tuple[list[Any], list[int]]] = {}
    raw_devices: list[tuple[int, dict[str, Any]]] = []
    for name, annotation in _fields(EdgeConfig).items():
        if name not in data:
            continue
        if name in ("devices", "buses") and isinstance(data[name], list):
            adapter = _adapter(Device if name == "devices" else Bus)
            good: list[Any] = []
            where: list[int] = []
            for i, raw in enumerate(data[name]):
                text, bad_keys = _json_text(raw)
                try:
                    good.append(_validate_item(adapter, text, (name, i)))
                    if bad_keys:  # valid once a number key is read as text: still not valid
                        good.pop()
                        raise ValueError  # noqa: TRY301 - the handler below counts it
                    where.append(i)
                except (ValidationError, ValueError):
                    if name == "devices" and isinstance(raw, dict):
                        raw_devices.append((i, raw))
            items[name] = (good, where)
            parts[name] = good
            continue
        text, bad_keys = _json_text(data[name])
        try:
            parts[name] = _adapter(annotation).validate_json(text)
        except ValidationError:
            broken.add(name)
        if bad_keys:
            parts.pop(name, None)
            broken.add(name)
    for name in ("gateway", "uplink"):
        if name not in parts:
            broken.add(name)
    raw_buses = data.get("buses") if isinstance(data.get("buses"), list) else []
    bus_names = tuple(str(b["name"]) for b in raw_buses if isinstance(b, dict) and "name" in b)
    partial = Partial(frozenset(broken), tuple(items.get("devices", ([], []))[1]),
                      tuple(items.get("buses", ([], []))[1]), bus_names, tuple(raw_devices))
    return _construct(EdgeConfig, parts), partial


def _validate_item(adapter: TypeAdapter[Any], text: str, prefix: Loc) -> Any:
    """Validate one list item for the cross-checks; its unknown keys (already reported) aside.

    An unknown key must not hide what the cross-checks say about the rest of the item (a class
    code that does not fit the kind, a bus that does not exist) until the key is fixed.
    """
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        unknown = [err["loc"] for err in exc.errors() if err["type"] in _UNKNOWN_KEY]
        if len(unknown) < exc.error_count():
            raise
        mended = _mend_unknown_keys(json.loads(text), unknown, prefix)
        return adapter.validate_json(json.dumps(mended))


def _construct(cls: type[T], parts: dict[str, Any]) -> T:
    """Build ``cls`` from validated ``parts`` and its defaults, unchecked.

    A field with neither stays unset (cross-checks skip those sections: ``Partial.broken``).
    """
    obj = object.__new__(cls)
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.name in parts:
            value = parts[spec.name]
        elif spec.default is not dataclasses.MISSING:
            value = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            value = spec.default_factory()
        else:
            continue
        object.__setattr__(obj, spec.name, value)  # frozen: as dataclasses' own __init__ does
    return obj


# ---- bounded YAML: time and memory for any file (issue 14 #2) ---------------------------------

# A 200-device file is ~76 KiB and ~8 k nodes, loaded in ~1.8 s on a busy 2-core VM (~5 k nodes
# a second), so 50 k nodes bound the worst file to ~10 s and < 100 MB. Aliases are shared while
# composing but expanded by _plain and pydantic: nine levels of ten ("billion laughs") would be
# 1.1e10 values and hang edge check.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_NODES = 50_000  # composed (written) nodes
MAX_EXPANDED_NODES = 200_000  # the same, every alias expanded
MAX_YAML_ALIASES = 1_000  # a `<<: *defaults` per device is 200
MAX_YAML_DEPTH = 64


def _too_big(name: str, size_bytes: int) -> str:
    return (f"{name}:1: the file is {size_bytes / 2**20:.1f} MiB; a devices.yaml is read only "
            f"up to {MAX_CONFIG_BYTES / 2**20:g} MiB")


class _ConfigTooBigError(Exception):
    """A limit of _BoundedComposer was crossed at ``line`` (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _BoundedComposer(Composer):
    """ruamel's composer, counting as it goes; refuses a document past a limit, with its line.

    Each node's expanded size (its aliases counted in full) is summed from its children's
    when it is complete, so "billion laughs" is refused at the first anchor that fans out
    too far, after composing only the few nodes it is written with.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._composed = 0
        self._aliases = 0
        self._level = 0
        self._expanded: dict[int, int] = {}  # id(node) -> size once complete

    def compose_node(self, parent: Any, index: Any) -> Any:
        line = self.parser.peek_event().start_mark.line + 1
        if self.parser.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _ConfigTooBigError(line, f"more than {MAX_YAML_ALIASES:,} aliases; "
                                               "write the values out")
            alias: Node = super().compose_node(parent, index)
            if id(alias) not in self._expanded:
                raise _ConfigTooBigError(line, "an alias refers to a node that contains it "
                                               "(aliases cannot nest into themselves)")
            return alias
        self._composed += 1
        self._level += 1
        if self._composed > MAX_YAML_NODES:
            raise _ConfigTooBigError(line, f"more than {MAX_YAML_NODES:,} nodes; a devices.yaml "
                                           "of 200 devices has about 10,000")
        if self._level > MAX_YAML_DEPTH:
            raise _ConfigTooBigError(line, f"nested too deeply (more than {MAX_YAML_DEPTH} "
                                           "levels)")
        node: Node = super().compose_node(parent, index)
        self._level -= 1
        size = 1
        if isinstance(node, MappingNode):
            size += sum(self._expanded[id(k)] + self._expanded[id(v)] for k, v in node.value)
        elif isinstance(node, SequenceNode):
            size += sum(self._expanded[id(item)] for item in node.value)
        if size > MAX_EXPANDED_NODES:
            raise _ConfigTooBigError(line, f"aliases expand to more than "
                                           f"{MAX_EXPANDED_NODES:,} values here (nested "
                                           "aliases); write the values out")
        self._expanded[id(node)] = size
        return node


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


def _dotted(loc: Loc, tree: Any = None) -> str:
    """Return ``loc`` as a technician reads it: devices and buses by name, not by index."""
    out = ""
    node = tree
    for part in loc:
        label: int | str = part
        if isinstance(part, int) and isinstance(node, CommentedSeq) and part < len(node):
            item = node[part]
            name = item.get("name") if isinstance(item, CommentedMap) else None
            if isinstance(name, str) and name and loc[0] in ("devices", "buses") and \
                    node is tree.get(loc[0]):
                label = name
        out += f"[{label}]" if isinstance(part, int) else (f".{part}" if out else part)
        if isinstance(node, CommentedMap):
            node = node.get(part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out.replace(".class_", ".class")


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(filename: str, tree: Any, err: ErrorDetails) -> list[tuple[int, str]]:
    """Return (line, message) of one pydantic error; a block's several problems each at its key.

    A model validator's FieldProblemsError (edge/kinds/device.py) names places inside its block:
    each is shown at its own line, not all as the first one at the block's line.
    """
    error = (err.get("ctx") or {}).get("error")
    if err["type"] == "value_error" and isinstance(error, FieldProblemsError):
        base = _clean_loc(tree, tuple(err["loc"]))
        out = []
        for sub, message in error.problems:
            loc = (*base, *sub)
            line = _line_of(tree, loc)
            out.append((line, f"{filename}:{line}: {_dotted(loc, tree)}: {message}"))
        return out
    return [(_line_of(tree, _clean_loc(tree, tuple(err["loc"]))),
             _format_error(filename, tree, err))]


def _format_error(filename: str, tree: Any, err: ErrorDetails) -> str:
    loc = _clean_loc(tree, tuple(err["loc"]))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind.startswith("union_tag"):
        loc = (*loc, str(ctx.get("discriminator", "kind")).strip("'"))
    messages: dict[str, Callable[[], str]] = {
        **_type_words(ctx, value),
        "less_than_equal": lambda: f"must be <= {ctx.get('le')} (got {_got(value)})",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')} (got {_got(value)})",
        "less_than": lambda: f"must be < {ctx.get('lt')} (got {_got(value)})",
        "greater_than": lambda: f"must be > {ctx.get('gt')} (got {_got(value)})",
        "missing": lambda: "required field is missing",
        "missing_keyword_only_argument": lambda: "required field is missing",
        "string_pattern_mismatch": lambda: _pattern_words(loc, str(ctx.get("pattern")), value),
        "literal_error": lambda: f"must be one of {ctx.get('expected')} (got {_got(value)})",
        "union_tag_invalid": lambda: (f"unknown value {ctx.get('tag')!r}; expected one of "
                                      f"{ctx.get('expected_tags')}"),
        "union_tag_not_found": lambda: "required field is missing",
    }
    if kind in _UNKNOWN_KEY:
        message = f"unknown key {_got(loc[-1])}{_did_you_mean(loc)}"
    elif kind in messages:
        message = messages[kind]()
    elif isinstance(value, dict | list):  # a block: its dump, cut at 60 characters, says nothing
        message = err["msg"].removeprefix("Value error, ")
    else:
        message = f"{err['msg'].removeprefix('Value error, ')} (got {_got(value)})"
    return f"{filename}:{_line_of(tree, loc)}: {_dotted(loc, tree)}: {message}"


def _type_words(ctx: dict[str, Any], value: Any) -> dict[str, Callable[[], str]]:
    """Plain words for a value of the wrong type (pydantic says 'Input should be ...')."""
    got = _got(value)
    block = "a block of 'key: value' lines indented under it"
    return {
        "int_type": lambda: f"must be a whole number (got {got})",
        "int_parsing": lambda: f"must be a whole number (got {got})",
        "int_from_float": lambda: f"must be a whole number (got {got})",
        "float_type": lambda: f"must be a number (got {got})",
        "float_parsing": lambda: f"must be a number (got {got})",
        "string_type": lambda: f"must be text; put it in quotes (got {got})",
        "bool_type": lambda: f"must be true or false (got {got})",
        "bool_parsing": lambda: f"must be true or false (got {got})",
        "list_type": lambda: f"must be a list, one '- ' line per item (got {got})",
        "model_type": lambda: f"must be {block} (got {got})",
        "model_attributes_type": lambda: f"must be {block} (got {got})",
        "dataclass_type": lambda: f"must be {block} (got {got})",
        "dataclass_exact_type": lambda: f"must be {block} (got {got})",
        "dict_type": lambda: f"must be {block} (got {got})",
        "too_short": lambda: f"needs at least {ctx.get('min_length')} items",
        "too_long": lambda: f"takes at most {ctx.get('max_length')} items",
        "string_too_short": lambda: f"must not be empty (got {got})",
        "string_too_long": lambda: f"takes at most {ctx.get('max_length')} characters",
    }


# what a pattern means, in the words a technician uses (the pattern itself is for programmers)
_PATTERN_WORDS: dict[str, str] = {
    NAME_PATTERN: "lowercase letters, digits, '-', '_' or '.', starting with a letter or "
                  "digit, at most 63 characters",
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "letters, digits, '-', '_' or '.', starting with a "
                                          "letter or digit, at most 64 characters",
    AT_PATTERN: "a time like '18:30', 'sunset+15' or 'sunrise-10'",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "a 24-hour time like '07:30'",
    r"^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$": "a range of times like '22:00-07:00'",
    r"^[^#+$][^#+]*[^/#+]$": "a topic prefix without '+' or '#', not starting with '$' or "
                             "ending with '/'",
    TOPIC_FILTER_PATTERN: "an MQTT topic: '+' only as a whole level, '#' only as the whole "
                          "last level",
}
_DIGITS = re.compile(r"\^\[0-9\]\{(\d+)(?:,(\d+))?\}\$")
_FIELD_WORDS = {"code": "asset code", "grid": "grid code", "class_": "class code",
                "class": "class code", "county_code": "county code",
                "water_event_class": "event class", "public_key_hex": "public key"}


def _pattern_words(loc: Loc, pattern: str, value: Any) -> str:
    """Say what ``pattern`` wants: "asset code must have 16 digits, you gave 15"."""
    field = str(loc[-1]) if loc and isinstance(loc[-1], str) else "value"
    what = _FIELD_WORDS.get(field, field.replace("_", " "))
    text = str(value)
    digits = _DIGITS.fullmatch(pattern)
    if digits:
        low, high = digits.groups()
        want = f"{low} or {high}" if high else low
        if text.isascii() and text.isdigit():
            return f"{what} must have {want} digits, you gave {len(text)}"
        return f"{what} must be {want} digits and nothing else (got {_got(value)})"
    if pattern == r"^[0-9a-f]{64}$":
        return (f"{what} must be 64 hex digits (0-9, a-f), you gave {len(text)} characters"
                + ("" if re.fullmatch(r"[0-9a-fA-F]*", text) else f": {_got(value)}"))
    words = _PATTERN_WORDS.get(pattern)
    if words:
        return f"{what} must be {words} (got {_got(value)})"
    return f"{what} does not have the expected form {pattern} (got {_got(value)})"


def _yaml_problem(filename: str, text: str, exc: MarkedYAMLError) -> str:
    """Say a YAML error as a technician fixes it: most of them are indentation."""
    mark = exc.problem_mark
    line = mark.line + 1 if mark is not None else 1
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    problem = str(exc.problem or "")
    if "\t" in here[: len(here) - len(here.lstrip())] or "'\\t'" in problem:
        return f"{filename}:{line}: YAML indentation: a tab; indent with spaces only"
    if problem.startswith("expected <block end>") and exc.context_mark is not None:
        # the parser's context is the outermost block it was in (the first entry of the
        # list); the technician needs the entry this line belongs to (issue 21 f5)
        owner = _owner_above(lines, line)
        where = f"the block starts on line {exc.context_mark.line + 1}" if owner is None \
            else f"it belongs to the entry that starts on line {owner[0]}: {owner[1]}" \
            if owner[1].startswith("- ") \
            else f"it belongs to the block that starts on line {owner[0]}: {owner[1]}"
        return (f"{filename}:{line}: YAML indentation: this line does not line up with the "
                f"keys above it ({where}); indent it like them")
    if problem == "mapping values are not allowed here":
        above = _line_above(lines, line)
        indent = len(here) - len(here.lstrip())
        if above is not None and indent > len(above) - len(above.lstrip()):
            return (f"{filename}:{line}: YAML indentation: this line is indented more than "
                    "the line above it, which already has a value; line them up")
        return (f"{filename}:{line}: YAML syntax: a second ':' on this line; put a value "
                "that holds ': ' in quotes")
    return f"{filename}:{line}: YAML syntax: {problem}"


def _owner_above(lines: list[str], line: int) -> tuple[int, str] | None:
    """Return (1-based line, text) of the nearest line above ``line`` indented less than it."""
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    indent = len(here) - len(here.lstrip())
    for n in range(line - 2, -1, -1):
        text = lines[n]
        if text.strip() and not text.lstrip().startswith("#") and \
                len(text) - len(text.lstrip()) < indent:
            return n + 1, text.strip().split(" #", 1)[0].rstrip()
    return None


def _line_above(lines: list[str], line: int) -> str | None:
    """Return the nearest line above ``line`` (1-based) that is not blank or a comment."""
    for candidate in reversed(lines[: line - 1]):
        if candidate.strip() and not candidate.lstrip().startswith("#"):
            return candidate
    return None


def _did_you_mean(loc: Loc) -> str:
    allowed = _allowed_keys(loc[:-1], _raw_loc_kind=None)
    close = difflib.get_close_matches(str(loc[-1]), sorted(allowed), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return _misindented(loc, allowed)


def _misindented(loc: Loc, allowed: set[str]) -> str:
    """Say where a key that is valid elsewhere belongs: a YAML indentation slip, not a typo."""
    key = str(loc[-1])
    for child in sorted(allowed):
        if key in _allowed_keys((*loc[:-1], child), _raw_loc_kind=None):
            return f" (it belongs under {child}: — indented too little?)"
    if len(loc) >= 2 and isinstance(loc[-2], str) and \
            key in _allowed_keys(loc[:-2], _raw_loc_kind=None):
        return f" (it belongs beside {loc[-2]}:, not under it — indented too far?)"
    return ""


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
                elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
                    annotation = _fields(tp).get(part)
                    if annotation is not None:
                        nxt.append(annotation)
                elif typing.get_origin(tp) is dict:
                    nxt.append(typing.get_args(tp)[1])
        candidates = nxt
    keys: set[str] = set()
    for model in candidates:
        for tp in _unwrap(model):
            if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                keys.update(_fields(tp))
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


def cross_check(config: EdgeConfig, *, partial: Partial | None = None,
                line_of: Callable[[Loc], int] | None = None,
                name_of: Callable[[Loc], str] | None = None) -> list[tuple[Loc, str]]:
    """Return (loc, message) for every problem across sections.

    With ``partial`` (the file did not validate) only the parts that did are checked, and
    devices that did not are still checked for a bus that does not exist.
    """
    broken = partial.broken if partial else frozenset()
    dev_at = partial.devices if partial else tuple(range(len(config.devices)))
    bus_at = partial.buses if partial else tuple(range(len(config.buses)))

    def where(loc: Loc) -> str:
        named = name_of(loc) if name_of else _dotted(loc)
        return f"{named} on line {line_of(loc)}" if line_of else named

    problems: list[tuple[Loc, str]] = []
    if "uplink" not in broken:
        problems += _check_uplink(config)
    problems += _check_local(config, broken)
    seen_buses: dict[str, int] = {}
    for i, bus in zip(bus_at, config.buses, strict=True):
        if bus.name in seen_buses:
            first = seen_buses[bus.name]
            problems.append((("buses", i, "name"), f"duplicate bus name {bus.name!r} (also "
                                                   f"{where(('buses', first, 'name'))})"))
        seen_buses.setdefault(bus.name, i)
    seen: dict[str, int] = {}
    unit_ids: dict[tuple[str, int], int] = {}
    classes = config.class_table() if "asset_classes" not in broken else \
        dict(DEFAULT_ASSET_CLASSES)
    bus_names = list(partial.raw_bus_names) if partial else [b.name for b in config.buses]
    for i, device in zip(dev_at, config.devices, strict=True):
        if device.name in seen:
            first = seen[device.name]
            first_at = f"line {line_of(('devices', first))}" if line_of else \
                f"devices[{first}]"
            problems.append((("devices", i, "name"), f"duplicate device name {device.name!r} "
                                                     f"(the first is at {first_at})"))
        seen.setdefault(device.name, i)
        problems += _check_transport(config, i, device, unit_ids, bus_names=bus_names,
                                     broken=broken, where=where)
        problems += _check_asset(config, i, device.kind, device.asset, classes, broken)
    for i, raw in partial.raw_devices if partial else ():
        written = raw.get("bus")
        if raw.get("transport") in _MODBUS and isinstance(written, str) and \
                written not in bus_names:
            problems.append((("devices", i, "bus"), _no_bus(written, bus_names)))
        # a device with another mistake still has its fields and asset checked
        if raw.get("transport") in _TRANSPORT_NAMES:
            problems += _foreign_fields(i, raw.get("transport"), raw)
        kind, asset = raw.get("kind"), _valid_asset(raw.get("asset"))
        if isinstance(kind, str) and kind in DEVICE_MODELS and asset is not None:
            problems += _check_asset(config, i, kind, asset, classes, broken)
    problems += _check_wire_capacity(config, bus_at)
    return problems


def _no_bus(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; buses: {', '.join(names) or 'none'}"
    return f"no bus named {name!r}{hint}"


def _check_uplink(config: EdgeConfig) -> list[tuple[Loc, str]]:
    """Check the uplink section against itself (tls, https base URL, backoff)."""
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
    if up.reconnect_base_s > up.reconnect_cap_s:
        out.append((("uplink", "reconnect_cap_s"),
                    f"must be >= reconnect_base_s ({up.reconnect_base_s})"))
    return out


def _check_local(config: EdgeConfig, broken: frozenset[str]) -> list[tuple[Loc, str]]:
    """Check the southbound broker and the local listeners."""
    out: list[tuple[Loc, str]] = []
    south = config.southbound_mqtt
    if "southbound_mqtt" not in broken and south is not None and south.tls is False and \
            not is_loopback(south.host):
        out.append((("southbound_mqtt", "tls"),
                    f"tls: false is allowed only for a loopback broker (host is {south.host!r})"))
    if "observability" in broken:
        return out
    obs = config.observability
    if obs.metrics_port is not None and not is_loopback(obs.metrics_host):
        out.append((("observability", "metrics_host"),
                    f"{obs.metrics_host} is not loopback: expose metrics through a VPN-bound "
                    "reverse proxy, not directly"))
    if obs.status_page_port is not None and obs.status_page_password_file is None:
        out.append((("observability", "status_page_password_file"),
                    "required with status_page_port: the page has no default password"))
    if obs.status_page_port is not None and not is_loopback(obs.status_page_host) and \
            not obs.status_page_plain_http:
        out.append((("observability", "status_page_host"),
                    f"{obs.status_page_host} is not loopback: the page's Basic auth would cross "
                    "the network in clear; bind 127.0.0.1 and tunnel, or set "
                    "status_page_plain_http: true for a closed service interface"))
    return out


# Each transport's own device fields. One left from another transport (a ``bus:`` on a cover
# moved to MQTT, a ``topic:`` on a Modbus one) is read by nothing: said at its line.
_TRANSPORT_FIELDS = {"bus": _MODBUS, "unit_id": _MODBUS, "port": ("serial",),
                     "baud": ("serial",), "topic": ("mqtt",), "json_map": ("mqtt",)}
_DEFAULTS_UNSAID = {"baud": SERIAL_DEFAULT_BAUD}  # a default that is not None or empty


def _foreign_fields(i: int, transport: object, values: Mapping[str, Any]
                    ) -> list[tuple[Loc, str]]:
    """Return a problem for each field of another transport that ``values`` sets.

    ``values``: a device as written (raw) or validated; a field at its default (absent, null,
    empty, the serial default baud) is not set, so both are judged alike.
    """
    if not isinstance(transport, str):
        return []
    return [(("devices", i, name), f"{name} is for transport {' or '.join(owners)}; this "
                                   f"device's is {transport} (remove it)")
            for name, owners in _TRANSPORT_FIELDS.items()
            if transport not in owners
            and values.get(name) not in (None, {}, _DEFAULTS_UNSAID.get(name))]


def _check_transport(config: EdgeConfig, i: int, device: AnyDevice,
                     unit_ids: dict[tuple[str, int], int], *, bus_names: list[str],
                     broken: frozenset[str], where: Callable[[Loc], str]
                     ) -> list[tuple[Loc, str]]:
    here: Loc = ("devices", i)
    out = _foreign_fields(i, device.transport,
                          {name: getattr(device, name) for name in _TRANSPORT_FIELDS})
    if device.transport in _MODBUS:
        if device.bus is None:
            return [*out, ((*here, "bus"), f"required for transport {device.transport}")]
        if device.unit_id is None:
            out.append(((*here, "unit_id"), f"required for transport {device.transport}"))
        if device.bus not in bus_names:
            return [*out, ((*here, "bus"), _no_bus(device.bus, bus_names))]
        try:
            bus = config.bus(device.bus)
        except KeyError:
            return out  # the bus is written but has its own mistakes, reported at its line
        if bus.type != device.transport:
            out.append(((*here, "transport"),
                        f"{device.transport} does not match bus {bus.name!r} of type {bus.type}"))
        if device.unit_id is not None:
            key = (device.bus, device.unit_id)
            if key in unit_ids:
                out.append(((*here, "unit_id"),
                            f"unit id {device.unit_id} already used on bus {device.bus!r} "
                            f"by {where(('devices', unit_ids[key]))}"))
            unit_ids.setdefault(key, i)
            if bus.allowed_unit_ids is not None and device.unit_id not in bus.allowed_unit_ids:
                out.append(((*here, "unit_id"),
                            f"unit id {device.unit_id} is not in bus {bus.name!r} "
                            f"allowed_unit_ids {bus.allowed_unit_ids}"))
    elif device.transport == "serial" and not device.port:
        out.append(((*here, "port"), "required for transport serial (a device path or URL)"))
    elif device.transport == "mqtt" and not device.topic:
        out.append(((*here, "topic"), "required for transport mqtt"))
    elif device.transport == "mqtt" and config.southbound_mqtt is None and \
            "southbound_mqtt" not in broken:
        out.append(((*here, "transport"), "mqtt needs a southbound_mqtt broker section"))
    return out


def _valid_asset(raw: Any) -> AssetConfig | None:
    text, bad_keys = _json_text(raw)
    if bad_keys:
        return None
    try:
        asset: AssetConfig = _adapter(AssetConfig).validate_json(text)
    except ValidationError:
        return None  # its own mistakes are reported where the device failed
    return asset


def _check_asset(config: EdgeConfig, i: int, kind: str, asset: AssetConfig,
                 classes: dict[str, tuple[str, tuple[str, ...]]],
                 broken: frozenset[str] = frozenset()) -> list[tuple[Loc, str]]:
    here = ("devices", i, "asset")
    out: list[tuple[Loc, str]] = []
    if asset.code[6:10] != asset.class_:
        out.append(((*here, "code"), f"digits 7-10 of {asset.code} are {asset.code[6:10]}, "
                                     f"but class is {asset.class_}"))
    if asset.code[:6] != asset.grid[:6]:
        out.append(((*here, "code"), f"county digits {asset.code[:6]} differ from the grid's "
                                     f"{asset.grid[:6]}"))
    if "gateway" not in broken and asset.code[:6] != config.gateway.county_code and \
            not DEVICE_MODELS[kind].ROAMS:
        out.append(((*here, "code"), f"county digits {asset.code[:6]} differ from "
                                     f"gateway.county_code {config.gateway.county_code}"))
    row = classes.get(asset.class_)
    if row is None:
        out.append(((*here, "class"), f"class {asset.class_} is not in the class table "
                                      "(add it under asset_classes)"))
    elif kind not in row[1]:
        out.append(((*here, "class"), f"class {asset.class_} ({row[0]}) does not fit a "
                                      f"{kind}; it holds {', '.join(row[1])}"))
    return out


def _check_wire_capacity(config: EdgeConfig, bus_at: Sequence[int]) -> list[tuple[Loc, str]]:
    """Report RS-485 buses whose poll plan needs more wire time than a second holds."""
    out: list[tuple[Loc, str]] = []
    for b, bus in zip(bus_at, config.buses, strict=True):
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
