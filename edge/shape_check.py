"""Check a value against a ``@shape`` class at run time, strictly, without pydantic (D86).

What the agent checks while it runs (a command body and its params, the platform keys file, a
stored schedule) goes through here; pydantic validates the same shapes only in the validating
step. Both must say the same: every error is pydantic's error dict (``type``, ``loc``, ``msg``,
``input``, ``ctx`` where pydantic has one) for ``TypeAdapter(cls).validate_json`` of the same
JSON, strict; ``tests/test_shape_check.py`` holds the two equal on hand-picked and generated
inputs.

Supported: str, int, float (a JSON int is accepted; a bool is never a number), bool, None,
Any, Literal (str, int, bool, None values), ``X | None`` and other unions (pydantic's smart
mode: the first exact match, else the first match), a union of shapes under ``Tagged(field)``,
``list[X]``, ``dict[str, X]``, nested shapes; ``Annotated`` with ``edge.shapes``
``Ge/Gt/Le/Lt`` (numbers), ``MinLen/MaxLen`` (str, list, dict), ``Pattern`` (str), ``Finite``
(float) and ``Before(fn)`` (after the constraints of its own type). Anything else raises
TypeError when the shape is first checked: a programming error, not bad input.

Bounded: a shape that contains itself is refused (TypeError), so the checker recurses only as
deep as the annotations nest; the data's own nesting is walked without recursion and limited
as pydantic's JSON parser limits it (MAX_JSON_DEPTH non-empty containers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from edge.shapes import Before, Finite, Ge, Gt, Le, Lt, MaxLen, MinLen, Pattern, ShapeError, Tagged

__all__ = ["MAX_JSON_DEPTH", "ShapeError", "check", "check_json"]

T = TypeVar("T")

# pydantic's JSON parser (jiter) refuses more than this many non-empty arrays/objects nested
MAX_JSON_DEPTH = 200
_SURROGATE = re.compile("[\ud800-\udfff]")  # left in a parsed str only by a lone \uD8xx escape
# Result: the value, whether it matched exactly (pydantic's smart union prefers an exact match:
# a float from a JSON int, Any, an object as a dict or a shape are "strict", not exact), and
# for a shape how many of its fields the input set (the union's tie-break).
_Result = tuple[Any, bool, int | None]
_Loc = tuple[int | str, ...]


class _InvalidError(Exception):
    """Internal: the value does not fit; carries pydantic's error dicts."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(len(errors))
        self.errors = errors


def _error(kind: str, loc: _Loc, msg: str, value: Any, ctx: dict[str, Any] | None = None
           ) -> _InvalidError:
    error: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx is not None:
        error["ctx"] = ctx
    return _InvalidError([error])


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _rust_float(value: float) -> str:
    """Return ``value`` as pydantic's messages print it (Rust's f64 Display: no exponent)."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    from decimal import Decimal  # noqa: PLC0415 - 0.4 MiB, for the message of a float bound

    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class _Node:
    label = "any"  # the name pydantic gives this member in a union's error locations

    def run(self, value: Any, loc: _Loc) -> _Result:  # noqa: ARG002 - Any has no errors
        return value, False, None  # Any: "in a union, Any is preferred to lax coercions" only


class _Str(_Node):
    def __init__(self, min_len: int | None, max_len: int | None, pattern: str | None) -> None:
        self.min_len, self.max_len, self.pattern = min_len, max_len, pattern
        # pydantic matches with Rust's regex, where ``$`` is the end of the text only; in
        # Python it also matches before a final newline: ``\Z`` is Rust's ``$``
        self.regex = None if pattern is None else re.compile(_rust_dollars(pattern))
        constrained = (min_len, max_len, pattern) != (None, None, None)
        self.label = "constrained-str" if constrained else "str"

    def run(self, value: Any, loc: _Loc) -> _Result:
        if not isinstance(value, str):
            raise _error("string_type", loc, "Input should be a valid string", value)
        if self.min_len is not None and len(value) < self.min_len:
            raise _error("string_too_short", loc, "String should have at least "
                         f"{_plural(self.min_len, 'character')}", value,
                         {"min_length": self.min_len})
        if self.max_len is not None and len(value) > self.max_len:
            raise _error("string_too_long", loc, "String should have at most "
                         f"{_plural(self.max_len, 'character')}", value,
                         {"max_length": self.max_len})
        if self.regex is not None and self.regex.search(value) is None:
            raise _error("string_pattern_mismatch", loc,
                         f"String should match pattern '{self.pattern}'", value,
                         {"pattern": self.pattern})
        return value, True, None


def _rust_dollars(pattern: str) -> str:
    r"""Return ``pattern`` with each ``$`` anchor (outside a class, unescaped) as ``\Z``."""
    out: list[str] = []
    escaped = False
    class_at = -1  # where the open character class's "[" is in ``out``; -1: none open
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif class_at >= 0:
            # a "]" first in the class ("[]", "[^]") is a literal: it does not close it
            first = class_at + (2 if out[class_at + 1:class_at + 2] == ["^"] else 1)
            if char == "]" and len(out) > first:
                class_at = -1
        elif char == "[":
            class_at = len(out)
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


# (edge.shapes class name, attribute, error type, words)
_BOUNDS = (("Le", "le", "less_than_equal", "less than or equal to"),
           ("Lt", "lt", "less_than", "less than"),
           ("Ge", "ge", "greater_than_equal", "greater than or equal to"),
           ("Gt", "gt", "greater_than", "greater than"))
_HOLDS: dict[str, Callable[[Any, Any], bool]] = {
    "le": lambda v, b: bool(v <= b), "lt": lambda v, b: bool(v < b),
    "ge": lambda v, b: bool(v >= b), "gt": lambda v, b: bool(v > b)}


class _Number(_Node):
    def __init__(self, kind: type, bounds: dict[str, Any], finite: bool) -> None:
        self.kind, self.finite = kind, finite
        if kind is float:  # pydantic holds a float's bounds as floats (ctx), prints them as Rust
            bounds = {k: float(v) for k, v in bounds.items()}
        elif any(type(v) is not int for v in bounds.values()):
            raise TypeError(f"int bounds must be ints: {bounds}")
        # pydantic checks le, lt, ge, gt in this order and reports the first that fails
        self.bounds = [(attr, bounds[attr], kind_, words) for _, attr, kind_, words in _BOUNDS
                       if attr in bounds]
        self.label = f"constrained-{kind.__name__}" if bounds else kind.__name__

    def run(self, value: Any, loc: _Loc) -> _Result:
        exact, raw = True, value  # errors show the input as it came
        if isinstance(value, bool) or not isinstance(value, int | float):
            ok = False
        elif self.kind is int:
            ok = isinstance(value, int)
        else:
            ok = True
            if isinstance(value, int):  # a JSON int is a float, strictly, but not exactly
                exact = False
                try:
                    value = float(value)
                except OverflowError:
                    value = math.inf if value > 0 else -math.inf
        if not ok:
            words = "a valid integer" if self.kind is int else "a valid number"
            raise _error(f"{self.kind.__name__}_type", loc, f"Input should be {words}", raw)
        if self.finite and not math.isfinite(value):
            raise _error("finite_number", loc, "Input should be a finite number", raw)
        for attr, bound, kind, words in self.bounds:
            if not _HOLDS[attr](value, bound):
                shown = _rust_float(bound) if isinstance(bound, float) else str(bound)
                raise _error(kind, loc, f"Input should be {words} {shown}", raw, {attr: bound})
        return value, exact, None


class _Bool(_Node):
    label = "bool"

    def run(self, value: Any, loc: _Loc) -> _Result:
        if not isinstance(value, bool):
            raise _error("bool_type", loc, "Input should be a valid boolean", value)
        return value, True, None


class _None(_Node):
    label = "none"

    def run(self, value: Any, loc: _Loc) -> _Result:
        if value is not None:
            raise _error("none_required", loc, "Input should be null", value)
        return None, True, None


class _Literal(_Node):
    def __init__(self, values: tuple[Any, ...]) -> None:
        for v in values:
            if v is not None and type(v) not in (str, int, bool):
                raise TypeError(f"Literal values must be str, int, bool or None: {v!r}")
        self.values = values
        # a JSON number or bool matches an int or bool value equal to it (1 is True, 3.0 is
        # 3): pydantic looks it up in a dict of them, where an equal later value wins
        self.numbers = {v: v for v in values if type(v) in (int, bool)}
        self.has_int = any(type(v) is int for v in values)  # pydantic looks ints up as i64
        shown = [repr(v) for v in values]
        self.expected = shown[0] if len(shown) == 1 else \
            f"{', '.join(shown[:-1])} or {shown[-1]}"
        self.label = f"literal[{','.join(shown)}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        for v in self.values:  # the same type first: JSON true is True, 1 is 1
            if type(v) is type(value) and v == value:
                return v, True, None
        if self.has_int and type(value) is int and not -(2**63) <= value < 2**63:
            raise _error("int_parsing_size", loc, "Unable to parse input string as an integer, "
                         "exceeded maximum size", value)
        if isinstance(value, int | float) and value in self.numbers:
            return self.numbers[value], True, None
        raise _error("literal_error", loc, f"Input should be {self.expected}", value,
                     {"expected": self.expected})


class _List(_Node):
    def __init__(self, item: _Node, min_len: int | None, max_len: int | None) -> None:
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.label = f"list[{item.label}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        if not isinstance(value, list):
            raise _error("list_type", loc, "Input should be a valid array", value)
        if self.max_len is not None and len(value) > self.max_len:  # before any item
            raise _error("too_long", loc, f"List should have at most "
                         f"{_plural(self.max_len, 'item')} after validation, not {len(value)}",
                         value, {"field_type": "List", "max_length": self.max_len,
                                 "actual_length": len(value)})
        out, errors, exact = [], [], True
        for index, item in enumerate(value):
            try:
                checked, item_exact, _ = self.item.run(item, (*loc, index))
            except _InvalidError as exc:
                errors.extend(exc.errors)
                continue
            out.append(checked)
            exact = exact and item_exact
        if errors:
            raise _InvalidError(errors)
        if self.min_len is not None and len(out) < self.min_len:
            raise _error("too_short", loc, f"List should have at least "
                         f"{_plural(self.min_len, 'item')} after validation, not {len(out)}",
                         value, {"field_type": "List", "min_length": self.min_len,
                                 "actual_length": len(out)})
        return out, exact, None


class _Dict(_Node):
    def __init__(self, item: _Node, min_len: int | None, max_len: int | None) -> None:
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.label = f"dict[str,{item.label}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        if not isinstance(value, dict):
            raise _error("dict_type", loc, "Input should be an object", value)
        out: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(_error("string_type", (*loc, key, "[key]"),
                                     "Input should be a valid string", key).errors[0])
                continue
            try:
                out[key] = self.item.run(item, (*loc, key))[0]
            except _InvalidError as exc:
                errors.extend(exc.errors)
                continue
            if self.max_len is not None and len(out) > self.max_len:
                # pydantic counts the output as it grows: it stops here, "not more"
                raise _error("too_long", loc, f"Dictionary should have at most "
                             f"{_plural(self.max_len, 'item')} after validation, not more",
                             value, {"field_type": "Dictionary", "max_length": self.max_len,
                                     "actual_length": None})
        if errors:
            raise _InvalidError(errors)
        if self.min_len is not None and len(out) < self.min_len:
            raise _error("too_short", loc, f"Dictionary should have at least "
                         f"{_plural(self.min_len, 'item')} after validation, not {len(out)}",
                         value, {"field_type": "Dictionary", "min_length": self.min_len,
                                 "actual_length": len(out)})
        return out, False, None


@dataclasses.dataclass
class _Field:
    name: str
    node: _Node
    default: Any  # dataclasses.MISSING: none
    factory: Any  # dataclasses.MISSING: none


class _Shape(_Node):
    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.label = cls.__name__
        self.fields: list[_Field] = []  # filled by _compile_shape (a shape may nest others)
        self.names: frozenset[str] = frozenset()

    def run(self, value: Any, loc: _Loc) -> _Result:
        if not isinstance(value, dict):
            raise _error("dataclass_type", loc, "Input should be an object", value,
                         {"class_name": self.cls.__name__})
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for f in self.fields:
            if f.name in value:
                try:
                    values[f.name] = f.node.run(value[f.name], (*loc, f.name))[0]
                except _InvalidError as exc:
                    errors.extend(exc.errors)
            elif f.default is not dataclasses.MISSING:
                values[f.name] = f.default  # pydantic does not check defaults either
            elif f.factory is not dataclasses.MISSING:
                values[f.name] = f.factory()
            else:
                errors.extend(_error("missing", (*loc, f.name), "Field required",
                                     value).errors)
        errors.extend(_error("unexpected_keyword_argument", (*loc, key),
                             "Unexpected keyword argument", item).errors[0]
                      for key, item in value.items() if key not in self.names)
        if errors:
            raise _InvalidError(errors)
        try:
            made = self.cls(**values)  # __post_init__ runs: cross-field rules
        except ValueError as exc:
            raise _error("value_error", loc, f"Value error, {exc}", value,
                         {"error": exc}) from None
        except AssertionError as exc:
            raise _error("assertion_error", loc, f"Assertion failed, {exc}", value,
                         {"error": exc}) from None
        return made, False, sum(1 for name in self.names if name in value)


class _Nullable(_Node):
    def __init__(self, inner: _Node) -> None:
        self.inner = inner
        self.label = f"nullable[{inner.label}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        return (None, True, None) if value is None else self.inner.run(value, loc)


class _Union(_Node):
    def __init__(self, members: list[_Node]) -> None:
        self.members = members
        self.label = f"union[{','.join(m.label for m in members)}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        # pydantic's smart mode: an exact match without fields wins at once; else the match
        # with more fields set, else the more exact one, else the first
        best: _Result | None = None
        errors: list[dict[str, Any]] = []
        for member in self.members:
            try:
                found = member.run(value, (*loc, member.label))
            except _InvalidError as exc:
                errors.extend(exc.errors)
                continue
            if found[1] and found[2] is None:
                return found
            if best is None or _better(best, found):
                best = found
        if best is not None:
            return best
        # the members' errors carry the member's label in their loc; a success never raises
        raise _InvalidError(errors)


def _better(current: _Result, new: _Result) -> bool:
    if current[2] is not None and new[2] is not None and current[2] != new[2]:
        return current[2] < new[2]
    return not current[1] and new[1]


class _Tagged(_Node):
    def __init__(self, field: str, members: list[_Shape]) -> None:
        self.field = field
        self.members: dict[str, _Shape] = {}
        for member in members:
            hint = typing.get_type_hints(member.cls).get(field)
            if get_origin(hint) is not Literal or \
                    any(type(tag) is not str for tag in get_args(hint)):
                raise TypeError(f"Tagged({field!r}): {member.label}.{field} is no Literal of "
                                f"strings")
            for tag in get_args(hint):
                self.members[tag] = member
        self.expected = ", ".join(repr(tag) for tag in self.members)
        # one choice per tag: a shape with two tags is named twice
        self.label = f"tagged-union[{','.join(m.label for m in self.members.values())}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        if not isinstance(value, dict):
            raise _error("dict_type", loc, "Input should be an object", value)
        if self.field not in value:
            raise _error("union_tag_not_found", loc,
                         f"Unable to extract tag using discriminator '{self.field}'", value,
                         {"discriminator": f"'{self.field}'"})
        tag = value[self.field]
        member = self.members.get(tag) if isinstance(tag, str) else None
        if member is None:
            raise _error("union_tag_invalid", loc,
                         f"Input tag '{tag}' found using '{self.field}' does not match any of "
                         f"the expected tags: {self.expected}", value,
                         {"discriminator": f"'{self.field}'", "tag": str(tag),
                          "expected_tags": self.expected})
        return member.run(value, (*loc, tag))


class _Before(_Node):
    def __init__(self, fn: Callable[[Any], Any], inner: _Node) -> None:
        self.fn, self.inner = fn, inner
        self.label = f"function-before[{getattr(fn, '__name__', 'function')}(), {inner.label}]"

    def run(self, value: Any, loc: _Loc) -> _Result:
        try:
            new = self.fn(value)
        except ValueError as exc:
            raise _error("value_error", loc, f"Value error, {exc}", value,
                         {"error": exc}) from None
        except AssertionError as exc:
            raise _error("assertion_error", loc, f"Assertion failed, {exc}", value,
                         {"error": exc}) from None
        return self.inner.run(new, loc)


# ---- compiling annotations, once per shape ------------------------------------------------

_SHAPES: dict[type, _Shape] = {}
_COMPILING: set[type] = set()
_TOP: dict[Any, _Node] = {}


def _is_shape(ann: Any) -> bool:
    return isinstance(ann, type) and dataclasses.is_dataclass(ann) and \
        getattr(ann, "__pydantic_config__", None) == {"extra": "forbid", "strict": True}


def _compile_shape(cls: type) -> _Shape:
    node = _SHAPES.get(cls)
    if node is not None:
        return node
    if "__get_pydantic_core_schema__" in vars(cls):  # an alias or a before-step pydantic runs
        raise TypeError(f"{cls.__name__} has its own pydantic schema hook: not checkable here")
    if cls in _COMPILING:  # unbounded nesting: the checker recurses only as deep as types do
        raise TypeError(f"{cls.__name__} contains itself: recursive shapes are not supported")
    _COMPILING.add(cls)
    try:
        node = _Shape(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if not f.init:
                raise TypeError(f"{cls.__name__}.{f.name}: init=False is not supported")
            node.fields.append(_Field(f.name, _compile(hints[f.name]), f.default,
                                      f.default_factory))
        node.names = frozenset(f.name for f in node.fields)
    finally:
        _COMPILING.discard(cls)
    _SHAPES[cls] = node
    return node


def _compile(ann: Any) -> _Node:  # noqa: PLR0911 - one return per kind of annotation
    origin = get_origin(ann)
    if origin is Annotated:
        return _compile_annotated(ann.__origin__, list(ann.__metadata__))
    if ann is Any:
        return _Node()
    if ann is None or ann is type(None):
        return _None()
    if ann is str:
        return _Str(None, None, None)
    if ann in (int, float):
        return _Number(ann, {}, finite=False)
    if ann is bool:
        return _Bool()
    if origin is Literal:
        return _Literal(get_args(ann))
    if origin in (Union, types.UnionType):
        return _union(get_args(ann))
    if origin in (list, dict):
        return _container(ann, None, None)
    if _is_shape(ann):
        return _compile_shape(ann)
    raise TypeError(f"edge.shape_check does not support {ann!r}")


def _union(members: tuple[Any, ...]) -> _Node:
    # pydantic: None among the members makes the rest nullable, not a member of its own
    rest = [m for m in members if m is not None and m is not type(None)]
    inner = _compile(rest[0]) if len(rest) == 1 else _Union([_compile(m) for m in rest])
    return _Nullable(inner) if len(rest) < len(members) else inner


def _container(ann: Any, min_len: int | None, max_len: int | None) -> _Node:
    args = get_args(ann)
    if get_origin(ann) is list and len(args) == 1:
        return _List(_compile(args[0]), min_len, max_len)
    if get_origin(ann) is dict and len(args) == 2 and args[0] is str:
        return _Dict(_compile(args[1]), min_len, max_len)
    raise TypeError(f"edge.shape_check supports list[X] and dict[str, X], not {ann!r}")


def _compile_annotated(base: Any, metadata: list[Any]) -> _Node:
    # pydantic applies the metadata left to right, each around what came before: a Before
    # wraps everything on its left, so a constraint right of it would apply to its output
    # through another path; keep Before last
    befores = [m for m in metadata if isinstance(m, Before)]
    rest = [m for m in metadata if not isinstance(m, Before)]
    if befores and metadata[-len(befores):] != befores:
        raise TypeError(f"Before(...) must come after every constraint: {metadata!r}")
    node = _constrained(base, rest)
    for before in befores:
        node = _Before(before.fn, node)
    return node


def _constrained(base: Any, metadata: list[Any]) -> _Node:
    tagged = [m for m in metadata if isinstance(m, Tagged)]
    if tagged:
        members = get_args(base) if get_origin(base) in (Union, types.UnionType) else ()
        if len(metadata) != 1 or not members or not all(_is_shape(m) for m in members):
            raise TypeError(f"Tagged(...) stands alone on a union of shapes: {base!r}")
        return _Tagged(tagged[0].field, [_compile_shape(m) for m in members])
    if not metadata:
        return _compile(base)
    bounds: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    pattern: str | None = None
    finite = False
    for item in metadata:
        if isinstance(item, Ge | Gt | Le | Lt):
            bounds[item.key] = getattr(item, item.key)
        elif isinstance(item, MinLen | MaxLen):
            lengths[type(item).__name__] = getattr(item, item.key)
        elif isinstance(item, Pattern):
            pattern = item.regex
        elif isinstance(item, Finite):
            finite = True
        else:
            raise TypeError(f"edge.shape_check does not support the annotation {item!r}")
    min_len, max_len = lengths.get("MinLen"), lengths.get("MaxLen")
    if base in (int, float) and not lengths and pattern is None and \
            (not finite or base is float):
        return _Number(base, bounds, finite=finite)
    if base is str and not bounds and not finite:
        return _Str(min_len, max_len, pattern)
    if get_origin(base) in (list, dict) and not bounds and not finite and pattern is None:
        return _container(base, min_len, max_len)
    raise TypeError(f"edge.shape_check: {metadata!r} do not apply to {base!r}")


def _node(cls: Any) -> _Node:
    node = _TOP.get(cls)
    if node is None:
        node = _TOP[cls] = _compile(cls)
    return node


# ---- the entry points ----------------------------------------------------------------------

def _json_problem(data: Any) -> str | None:
    r"""Return what pydantic's JSON parser would refuse in ``data`` (parsed JSON), or None.

    A lone surrogate (``"\ud800"``: Python's parser keeps it) and nesting deeper than
    MAX_JSON_DEPTH non-empty containers. Walked with a stack, not recursion.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return "lone surrogate in a string"
        elif isinstance(value, dict | list) and value:
            if depth >= MAX_JSON_DEPTH:
                return "recursion limit exceeded"
            if isinstance(value, dict):
                stack.extend((key, depth + 1) for key in value)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)
    return None


def _json_invalid(why: str, raw: Any) -> ShapeError:
    return ShapeError([{"type": "json_invalid", "loc": (), "msg": f"Invalid JSON: {why}",
                        "input": raw, "ctx": {"error": why}}])


def check(cls: type[T], data: Any) -> T:
    """Return ``data`` (parsed JSON: dicts, lists, str, int, float, bool, None) as a ``cls``.

    Raises ShapeError (a ValueError) listing every problem as pydantic would for the same
    JSON; TypeError if ``cls`` uses an annotation this checker does not support.
    """
    node = _node(cls)
    problem = _json_problem(data)
    if problem is not None:
        raise _json_invalid(problem, data)
    try:
        return typing.cast("T", node.run(data, ())[0])
    except _InvalidError as exc:
        raise ShapeError(exc.errors) from None


def check_json(cls: type[T], raw: bytes) -> T:
    """Return the JSON document ``raw`` as a ``cls``; ShapeError (a ValueError) if it is not.

    Not JSON (or not UTF-8, or nested too deep) is a ``json_invalid`` error at loc ``()``;
    its message is Python's parser's, not pydantic's.
    """
    node = _node(cls)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _json_invalid(str(exc) or type(exc).__name__, raw) from None
    problem = _json_problem(data)
    if problem is not None:
        raise _json_invalid(problem, raw)
    try:
        return typing.cast("T", node.run(data, ())[0])
    except _InvalidError as exc:
        raise ShapeError(exc.errors) from None
