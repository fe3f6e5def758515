"""Plain, frozen data shapes that pydantic can validate but the running agent never needs to.

The running agent holds its config, command bodies and params as stdlib dataclasses declared with
``@shape``; their constraints are ``typing.Annotated`` metadata (the bounds, lengths and markers
below). Two things read that metadata:

- pydantic, in the validating step (``edge check``, the config child of ``edge run``, the JSON
  Schemas, tests): each marker's ``__get_pydantic_core_schema__`` runs only there, and imports
  pydantic only there;
- ``edge.shape_check.check``, the small strict checker the agent runs on what arrives while it
  runs (commands, the platform keys file, a stored schedule), without pydantic's machinery
  (docs/decisions.md D86: it is what kept RSS at w1 above 40 MiB).

Importing this module imports no pydantic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast, dataclass_transform

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

T = TypeVar("T")

# pydantic reads a stdlib dataclass's config from this attribute (a TypedDict: a plain dict).
# Strict: no coercion. pydantic then takes a dataclass from JSON only (an object), not from a
# Python dict, so every validating step feeds it JSON (edge.shape_check, edge.config_loader).
_PYDANTIC_CONFIG: dict[str, Any] = {"extra": "forbid", "strict": True}


@dataclass_transform(frozen_default=True, kw_only_default=True)
def shape(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, keyword-only dataclass that refuses unknown fields when validated."""
    cls.__pydantic_config__ = _PYDANTIC_CONFIG  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(cls)


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A string matches this regular expression (``re.search`` semantics, as pydantic)."""

    regex: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return _with(handler(source), pattern=self.regex)


class _Constraint:
    """A bound or a length: the key of the same name in the core schema (ge, max_length...).

    Our own, not ``annotated_types``': that package costs the agent 0.8 MiB of RSS for six
    one-field classes (D86). ``edge.shape_check`` reads the same attribute.
    """

    __slots__ = ()
    key: ClassVar[str] = ""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return _with(handler(source), **{self.key: getattr(self, self.key)})


@dataclasses.dataclass(frozen=True)
class Ge(_Constraint):
    """A number is at least ``ge``."""

    ge: float
    key = "ge"


@dataclasses.dataclass(frozen=True)
class Gt(_Constraint):
    """A number is more than ``gt``."""

    gt: float
    key = "gt"


@dataclasses.dataclass(frozen=True)
class Le(_Constraint):
    """A number is at most ``le``."""

    le: float
    key = "le"


@dataclasses.dataclass(frozen=True)
class Lt(_Constraint):
    """A number is less than ``lt``."""

    lt: float
    key = "lt"


@dataclasses.dataclass(frozen=True)
class MinLen(_Constraint):
    """A string, list or mapping has at least ``min_length`` characters or items."""

    min_length: int
    key = "min_length"


@dataclasses.dataclass(frozen=True)
class MaxLen(_Constraint):
    """A string, list or mapping has at most ``max_length`` characters or items."""

    max_length: int
    key = "max_length"


@dataclasses.dataclass(frozen=True)
class Finite:
    """A float is neither infinite nor NaN."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return _with(handler(source), allow_inf_nan=False)


@dataclasses.dataclass(frozen=True)
class Tagged:
    """A union of shapes is chosen by the value of one field (``kind``, ``type``)."""

    field: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        from typing import Annotated  # noqa: PLC0415

        from pydantic import Discriminator  # noqa: PLC0415 - only where pydantic validates

        return handler(Annotated[source, Discriminator(self.field)])


@dataclasses.dataclass(frozen=True)
class Before:
    """Rewrite the raw value before it is checked (e.g. an unquoted YAML number to a string)."""

    fn: Callable[[Any], Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        from pydantic_core import core_schema  # noqa: PLC0415

        return core_schema.no_info_before_validator_function(self.fn, handler(source))


def _with(schema: CoreSchema, **keys: Any) -> CoreSchema:
    # a str or float core schema is a TypedDict: pattern and allow_inf_nan are its own keys
    cast("dict[str, Any]", schema).update(keys)
    return schema


class ShapeError(ValueError):
    """What is wrong with a value, field by field: pydantic's error dicts (loc, type, msg)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                   for e in errors[:5]))
        self.errors = errors
