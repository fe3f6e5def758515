"""What a device kind declares once: its config model, driver, builder and actions (issue 13).

Each kind module (``manhole_tilt``, ``streetlight``, ``loudspeaker``, ``gps``) ends with one
``KIND = Kind(...)``; ``edge.drivers.factory.KINDS`` collects them. The factory builds drivers
from it and the command catalogue (``edge.commands.processor``: roles, kinds, params, the
published ``command.schema.json``) and the agent's executor are derived from it, so adding a
kind or an action is one declaration in the kind's own module (docs/decisions.md D82).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.drivers.base import Driver
    from edge.drivers.transport_pool import Transports


# what a builder says of an MQTT device a reload added before its broker runs (edge.reload)
NO_BROKER = "needs southbound_mqtt, which starts at the next restart"


class Params(BaseModel):
    """A command's ``params``: strict, nothing unknown (design/events.md §Commands)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NoParams(Params):
    """Actions without parameters."""


# (driver, validated params, cmd_id) -> the result's detail; raises DeviceError on failure
Executor = Callable[[Any, Any, "str | None"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Action:
    """One command action a kind can carry out."""

    role: str  # the platform key role it needs (edge.config.ROLES)
    params: type[Params]
    execute: Executor
    # device models that can do it; None: every model of the kind. A model outside it is an
    # ``unsupported_action`` rejection before anything is journaled.
    models: frozenset[str] | None = None


@dataclass(frozen=True)
class Kind:
    """One device kind: how its driver is built and what commands it carries out."""

    name: str  # the ``kind:`` of devices.yaml and the driver's ``kind``
    device: type[BaseModel]  # its devices.yaml model (edge.config.DEVICE_MODELS[name])
    driver: type[Driver[Any]]
    build: Callable[[Any, EdgeConfig, Transports], Driver[Any]]
    actions: Mapping[str, Action] = field(default_factory=lambda: MappingProxyType({}))
