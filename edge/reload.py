"""Live reload: apply a new devices.yaml to a running agent, device by device.

Devices added, removed or changed (their own settings, or the bus they use) are stopped and
started alone; the others keep polling with the same driver. An invalid file is rejected with
its line-numbered problems and the running config stays. The file is never written.
Changes to ``gateway``, ``uplink``, ``outbox``, ``observability`` or ``southbound_mqtt`` need a
restart (said so); a device added meanwhile that needs the new broker waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.config import AnyDevice, EdgeConfig


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload changes."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    buses_changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)


def _bus_of(config: EdgeConfig, device: AnyDevice) -> object:
    return config.bus(device.bus) if device.bus else None


def plan(old: EdgeConfig, new: EdgeConfig) -> ReloadPlan:
    """Compare two valid configs (pure)."""
    old_devices = {d.name: d for d in old.devices if d.enabled}
    new_devices = {d.name: d for d in new.devices if d.enabled}
    old_buses = {b.name: b for b in old.buses}
    new_buses = {b.name: b for b in new.buses}
    buses_changed = sorted(n for n in old_buses.keys() | new_buses.keys()
                           if old_buses.get(n) != new_buses.get(n))
    changed = sorted(
        name for name in old_devices.keys() & new_devices.keys()
        if old_devices[name] != new_devices[name]
        or (new_devices[name].bus in buses_changed)
        or old.class_table() != new.class_table()
    )
    restart = [section for section in ("gateway", "uplink", "outbox", "observability",
                                      "southbound_mqtt")
               if getattr(old, section) != getattr(new, section)]
    return ReloadPlan(added=sorted(new_devices.keys() - old_devices.keys()),
                      removed=sorted(old_devices.keys() - new_devices.keys()),
                      changed=changed, buses_changed=buses_changed, needs_restart=restart)
