"""What every device kind's devices.yaml shape shares: its name, asset and transport fields.

A kind's own shape (``edge.kinds.<kind>``) subclasses ``DeviceBase`` and adds its fields,
alarm thresholds and ``MODELS``. Shapes only: importing this imports no driver, transport or
protocol library (``edge check`` validates a file without them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal

from edge.shapes import Before, Ge, Le, MaxLen, MinLen, Pattern, shape

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
SERIAL_DEFAULT_BAUD: Final = 9600  # a serial device's; a Modbus RTU device has its bus's
# an MQTT topic filter: '+' only as a whole level, '#' only as the whole last level (paho
# refuses anything else at subscribe time: the device would restart forever)
TOPIC_FILTER_PATTERN = r"^(?:(?:[^/#+\x00]*|\+)/)*(?:[^/#+\x00]*|\+|#)$"


def digits_from_int(value: Any) -> Any:
    """Return an unquoted all-digit code (parsed as an int) as the text it was written as."""
    # An unquoted 16-digit code parses as an int; county codes never start with 0, so no
    # leading zero can be lost and the technician's file is accepted as written.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _class_code(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        msg = "write class codes as quoted strings, e.g. '0106' (an unquoted 0106 loses its 0)"
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns ValueError into a field error
    return value


@shape
class AssetConfig:
    """The street asset: its 16-digit component code, class, grid cell, name and position."""

    code: Annotated[str, Pattern(r"^[0-9]{16}$"), Before(digits_from_int)]
    class_: Annotated[str, Pattern(r"^[0-9]{4}$"), Before(_class_code)]
    grid: Annotated[str, Pattern(r"^[0-9]{14,15}$"), Before(digits_from_int)]
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
class DeviceBase:
    """What every kind's devices.yaml entry has: a name, an asset and its transport's fields."""

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
        kind: str
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


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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

