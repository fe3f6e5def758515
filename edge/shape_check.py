"""Check a value against a ``@shape`` class at run time, strictly (``edge.shapes``).

PLACEHOLDER (being replaced by a checker without pydantic, D86): validates through pydantic.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from edge.shapes import ShapeError

T = TypeVar("T")


def check(cls: type[T], data: Any) -> T:
    """Return ``data`` (parsed JSON: dicts, lists, str, int, float, bool, None) as a ``cls``."""
    return check_json(cls, json.dumps(data).encode())


def check_json(cls: type[T], raw: bytes) -> T:
    """Return the JSON document ``raw`` as a ``cls``; ShapeError (or ValueError) if it is not."""
    from pydantic import TypeAdapter, ValidationError  # noqa: PLC0415

    try:
        return TypeAdapter(cls).validate_json(raw)
    except ValidationError as exc:
        raise ShapeError([dict(e) for e in exc.errors(include_url=False)]) from None
