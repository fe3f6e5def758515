"""What a device kind declares once: its drivers, builder, fields, alarms and actions (issue 13).

Each kind's driver module (``manhole_tilt``, ``streetlight``, ``loudspeaker``, ``gps``) ends
with one ``KIND = Kind(...)``; ``edge.drivers.factory.KINDS`` collects them in the order of
``edge.kinds.NAMES``, whose module of the same name holds the kind's devices.yaml shape
(``Kind.device``). The factory builds drivers from it and the command catalogue
(``edge.commands.catalogue``: roles, kinds, params, escalations, the published
``command.schema.json``) and the agent's executor are derived from it, so adding an action is
one declaration in the kind's own module (D82), and adding a kind is its two modules
(docs/architecture.md "Adding a kind", D89).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from edge.config import DEVICE_MODELS
from edge.errors import ConfigError
from edge.shapes import shape

if TYPE_CHECKING:
    import datetime as dt

    from edge.config import EdgeConfig
    from edge.drivers.base import Driver
    from edge.drivers.transport_pool import Transports
    from edge.kinds.device import DeviceBase
    from edge.safety import RelayLog


# what a builder says of an MQTT device a reload added before its broker runs (edge.reload)
NO_BROKER = "needs southbound_mqtt, which starts at the next restart"
T = TypeVar("T")


def required(device: str, field_name: str, value: T | None) -> T:
    """Return a transport field the loader requires for the device's transport.

    ``bus``, ``unit_id``, ``port`` and ``topic`` are optional in the model (each transport
    needs its own); a device built in code without one gets a ConfigError naming it, not an
    assert or a KeyError deep in a poll.
    """
    if value is None:
        raise ConfigError([f"{device}: no {field_name}"])
    return value


@shape
class Params:
    """A command's ``params``: strict, nothing unknown (design/events.md §Commands).

    A ``@shape``: the agent checks it with ``edge.shape_check`` (no pydantic at run time, D86).
    """


@shape
class NoParams(Params):
    """Actions without parameters."""


# (driver, validated params, cmd_id) -> the result's detail; raises DeviceError on failure
Executor = Callable[[Any, Any, "str | None"], Awaitable[dict[str, Any]]]


class SafetyContext(Protocol):
    """What a safety rule may ask of the gateway (``edge.commands.safety.SafetyRules``)."""

    def relay_log(self, device: str) -> tuple[RelayLog, bool]:
        """Return the lamp's relay log, and True when the rules own it (no driver feeds it)."""
        ...

    def local_time(self) -> dt.time:
        """Return the gateway's local time of day (``gateway.utc_offset_h``)."""
        ...

    def clock_trusted(self) -> bool:
        """Return whether the wall clock is trusted (synced): quiet hours can be judged."""
        ...


# (the device's config, validated params) -> why the device cannot take them, or None
ParamsProblem = Callable[[Any, Any], "str | None"]

# (context, the device's config, validated params, the signer's roles) -> None; raises
# CommandRejectedError saying why the command is unsafe now (check 5, design/events.md)
SafetyRule = Callable[[SafetyContext, Any, Any, AbstractSet[str]], None]


@dataclass(frozen=True)
class Escalation:
    """A params value that needs a stronger role, and leaves its device guarded a while.

    ``speaker.play_tts`` with ``priority: emergency`` needs ``broadcast-emergency``; for
    ``guard_s`` after one is executed, the kind's ``guarded`` actions (``speaker.stop``) need
    that role too: the ``broadcast`` role alone must not silence an evacuation message (D42).
    """

    field: str  # the params key, e.g. "priority"
    value: str  # the value that escalates, e.g. "emergency"
    role: str  # the role it needs instead of the action's (edge.config.ROLES)
    guard_s: float = 0.0
    during: str = ""  # what the guard protects, in words ("an emergency play")


@dataclass(frozen=True)
class Action:
    """One command action a kind can carry out."""

    role: str  # the platform key role it needs (edge.config.ROLES)
    params: type[Params]
    execute: Executor
    # a device limit an authentic command must still respect (a stolen key must not flicker a
    # street or wake a neighbourhood at night); None: the action has none
    safety: SafetyRule | None = None
    # device models that can do it; None: every model of the kind. A model outside it is an
    # ``unsupported_action`` rejection before anything is journaled.
    models: frozenset[str] | None = None
    # why this device could not carry out these (valid) params, or None: a ``bad_params``
    # rejection before anything is journaled (a SYN6288 cannot speak every text)
    params_problem: ParamsProblem | None = None
    escalation: Escalation | None = None
    # while an escalation of the device's kind guards it, this action needs the escalated role
    guarded: bool = False


async def _read_now(driver: Driver[Any], _params: NoParams, _cmd_id: str | None
                    ) -> dict[str, Any]:
    return {"values": await driver.probe()}


# Every device of every kind can be read now (``device.read``: its driver's probe, a truck's
# coverage); ``edge.commands.catalogue`` adds it to each kind's own actions
DEVICE_READ = Action("read", NoParams, _read_now)


@dataclass(frozen=True)
class Kind:
    """One device kind: how its driver is built and what commands it carries out."""

    name: str  # the ``kind:`` of devices.yaml and the driver's ``kind``
    # one class per transport (manhole_tilt: Modbus and MQTT); ``build`` picks one by the
    # device's ``transport``, so no driver holds a transport it does not use (issue 13)
    drivers: tuple[type[Driver[Any]], ...]
    build: Callable[[Any, EdgeConfig, Transports], Driver[Any]]
    actions: Mapping[str, Action] = field(default_factory=lambda: MappingProxyType({}))
    # the standard fields of its readings, units in the names: what its alarm rules read and
    # what report strategies and device profiles name (an MQTT device's json_map may add more)
    fields: frozenset[str] = frozenset()
    # the alarm kinds its drivers raise; one ending in ":" is a prefix, a name follows (a fence)
    alarms: tuple[str, ...] = ()

    @property
    def device(self) -> type[DeviceBase]:
        """Return its devices.yaml shape (``edge.kinds.<name>.DEVICE``)."""
        return DEVICE_MODELS[self.name]
