"""Run the device safety rules the kind table declares (check 5 of design/events.md §Commands).

Safety-relevant actions — switching lights, speaking in the street — are limited even when a
command is authentic: a stolen platform key must not be able to flicker a street or wake a
neighbourhood at night. Each rule lives with its action in the kind's module
(``Action.safety``); this class finds it by the device's kind and gives it what it reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType

from edge.config import EdgeConfig
from edge.drivers.factory import KINDS
from edge.drivers.kind import SafetyRule
from edge.errors import CommandRejectedError
from edge.safety import RelayLog

RelayLogs = Callable[[str], RelayLog | None]
# (kind, action) -> its rule, from the kind table (D82)
RULES: Mapping[tuple[str, str], SafetyRule] = MappingProxyType({
    (kind.name, name): action.safety for kind in KINDS.values()
    for name, action in kind.actions.items() if action.safety is not None})


class SafetyRules:
    """Per-device limits: switch rate, dim range, quiet hours, volume, text, clip allow-list.

    Quiet hours fail safe: on an untrusted clock a play is refused unless an emergency.
    """

    def __init__(self, config: EdgeConfig, *, now: Callable[[], dt.datetime] | None = None,
                 clock_trusted: Callable[[], bool], relays: RelayLogs | None = None) -> None:
        self.config = config
        # required: a caller that forgot it would lose the quiet-hours fail-safe (D82)
        self._clock_trusted = clock_trusted
        # the drivers' relay logs (they see schedule steps too); a device without one (no
        # driver yet, or rules used alone) gets a log here, fed with the switches admitted
        self._relays = relays
        self._own: dict[str, RelayLog] = {}
        self._now = now  # tests inject a clock: () -> datetime (UTC)

    def relay_log(self, device: str) -> tuple[RelayLog, bool]:
        """Return the lamp's relay log, and True when it is the rules' own."""
        log = self._relays(device) if self._relays is not None else None
        if log is not None:
            return log, False
        return self._own.setdefault(device, RelayLog()), True

    def local_time(self) -> dt.time:
        """Return the gateway's local time of day."""
        utc = self._now() if self._now is not None else dt.datetime.now(dt.UTC)
        return (utc + dt.timedelta(hours=self.config.gateway.utc_offset_h)).time()

    def clock_trusted(self) -> bool:
        """Return whether the wall clock is synced (quiet hours can be judged by it)."""
        return self._clock_trusted()

    def check(self, device_name: str, action: str, params: object,
              roles: AbstractSet[str]) -> str | None:
        """Return why the action is unsafe now, or None."""
        try:
            device = self.config.device(device_name)
        except KeyError:
            return "unknown device"
        rule = RULES.get((device.kind, action))
        if rule is None:
            return None
        try:
            rule(self, device, params, roles)
        except CommandRejectedError as exc:
            return str(exc)
        return None
