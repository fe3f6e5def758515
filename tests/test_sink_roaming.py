"""A vehicle's readings are positions (its kind ROAMS), also when a reload added it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import cast

from edge.buffer.async_outbox import AsyncOutbox
from edge.clock import Clock
from edge.config_loader import load_config
from edge.drivers.base import Reading
from edge.model import Event, EventType
from edge.sink import EventSink

ROOT = Path(__file__).resolve().parents[1]


class Kept:
    """Keeps what the sink puts (this test is about the event's type, not delivery)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def put(self, event: Event) -> None:
        self.events.append(event)


async def test_a_vehicle_added_by_a_reload_reports_positions() -> None:
    shipped = load_config(ROOT / "devices.yaml").config
    truck = next(d for d in shipped.devices if d.ROAMS)
    fixed = next(d for d in shipped.devices if not d.ROAMS)
    kept = Kept()
    sink = EventSink(dataclasses.replace(shipped, devices=[fixed]),
                     cast("AsyncOutbox", kept), Clock("system"), {})
    sink.set_devices(shipped)  # the reload that added the truck
    for device in (truck, fixed):
        await sink.reading(Reading(device.name, {"x": 1.0}, time.time_ns(),
                                   time.monotonic_ns()))
    assert [e.type for e in kept.events] == [EventType.POSITION, EventType.READING]
