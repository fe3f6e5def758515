"""JSON from southbound devices, read as hostile input. Pure.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON), turns ``1e400``
into ``inf``, recurses per nesting level (``[`` × 100 000 raises RecursionError, not
ValueError) and reads a 10 MB body as readily as 100 bytes. Here: a size cap, recursion as a
ValueError, and every non-finite number replaced by ``NON_FINITE`` so the driver refuses that
one value (and counts it) instead of emitting a reading the event encoder refuses
(issue 14 #1).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

MAX_PAYLOAD_BYTES: Final = 64 * 1024  # a cover report or speaker status is < 1 KiB
MAX_ABS: Final = 1e15  # beyond any reading a street device reports; keeps float() exact-ish


class _NonFinite:
    """Marker for a number JSON cannot carry (NaN, ±Infinity, an overflowing literal)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NON_FINITE"


NON_FINITE: Final = _NonFinite()


def _float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NON_FINITE


def _constant(_name: str) -> _NonFinite:
    return NON_FINITE


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently: {"tilt": 1, "tilt": 90} would be a
    # shut or an open cover depending on the parser, so such a report is refused (f14 #9)
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r} in a JSON object")
        doc[key] = value
    return doc


# what a technician reads for a value that is not a number (never a Python type name)
_KINDS: Final = {str: "a string", list: "a list", dict: "an object", type(None): "null"}


def loads(payload: bytes) -> dict[str, Any]:
    """Return the JSON object in ``payload``; raise ValueError for anything else.

    Too large, not UTF-8 (or UTF-16/32 with a BOM), not JSON, nested too deep, not an
    object, or an object with a key twice: ValueError. Non-finite numbers come back as
    ``NON_FINITE``.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes (limit {MAX_PAYLOAD_BYTES})")
    try:
        doc = json.loads(payload, parse_float=_float, parse_constant=_constant,
                         object_pairs_hook=_object)
    except RecursionError as exc:  # the C scanner's depth guard
        raise ValueError("JSON nested too deep") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    # (int literals over 4,300 digits raise ValueError from int() on their own)
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object but {type(doc).__name__}")  # noqa: TRY004
    return doc


def finite_number(value: object) -> float:
    """Return ``value`` as a finite float; ValueError if it is not a JSON number in range.

    Booleans are not numbers here (``True`` would read as 1.0 volts). The message is what a
    technician reads in the log and in ``last_error`` (f14 #5): no internal names.
    """
    if value is NON_FINITE:
        raise ValueError("NaN or infinite")
    if isinstance(value, bool):
        raise ValueError(f"not a number: {str(value).lower()}")  # noqa: TRY004
    if not isinstance(value, int | float):
        kind = _KINDS.get(type(value), "not a JSON value")
        raise ValueError(f"not a number: {kind}")  # noqa: TRY004
    if isinstance(value, int):
        if abs(value) > MAX_ABS:
            raise ValueError("number out of range")
        return float(value)
    if not math.isfinite(value) or abs(value) > MAX_ABS:
        raise ValueError("number out of range")
    return value
