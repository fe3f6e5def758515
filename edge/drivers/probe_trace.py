"""What a probe put on the wire and got back, for ``edge probe`` and the page's "probe now".

A probe runs inside ``tracing()``; the transports (the Modbus adapter, the serial units, the
GPS reader) append one ``WireRecord`` per exchange to the trace of the current context. A
trace also lets a probe through a unit's circuit breaker: a technician who has just fixed the
wiring probes a device the poll loop is backing off from, and must get an answer now.

Context variables do not leak between tasks created before the trace, so a probe never
collects the exchanges of the poll loops running beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_RECORDS = 64  # a probe is a handful of exchanges; a GPS probe stops keeping lines here
MAX_RAW_CHARS = 600  # one exchange's bytes or registers, as shown

# Modbus exception codes by name (Modbus Application Protocol v1.1b3, section 7).
MODBUS_EXCEPTIONS = {
    1: "ILLEGAL FUNCTION", 2: "ILLEGAL DATA ADDRESS", 3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE", 5: "ACKNOWLEDGE", 6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR", 10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
FUNCTION_NAMES = {1: "read coils", 3: "read holding registers", 4: "read input registers",
                  5: "write coil", 6: "write register"}


def exception_name(code: int) -> str:
    """Return the Modbus name of an exception code (``-1``: refused by our allow-list)."""
    if code == -1:
        return "UNIT NOT ALLOWED (allowed_unit_ids)"
    return MODBUS_EXCEPTIONS.get(code, f"EXCEPTION 0x{code:02X}")


@dataclass(slots=True)
class WireRecord:
    """One exchange: where, what was asked, what came back (or what went wrong)."""

    link: str  # "bus covers (modbus_tcp 127.0.0.1:502)", "serial socket://..."
    unit: int | None
    request: str  # "read holding registers 0x003D x4", "status frame fd 00 01 21"
    raw: str = ""  # "0x0123 0x0456 ..." or hex bytes or NMEA lines
    error: str = ""


@dataclass(slots=True)
class ProbeTrace:
    """The exchanges of one probe (bounded)."""

    records: list[WireRecord] = field(default_factory=list)
    dropped: int = 0

    def add(self, record: WireRecord) -> None:
        """Keep ``record`` (the first ``MAX_RECORDS``, then count)."""
        if len(self.records) >= MAX_RECORDS:
            self.dropped += 1
            return
        record.raw = record.raw[:MAX_RAW_CHARS]
        self.records.append(record)

    def as_json(self) -> list[dict[str, Any]]:
        """Return the records as plain JSON values (the page's probe answer)."""
        return [asdict(r) for r in self.records]


_CURRENT: ContextVar[ProbeTrace | None] = ContextVar("probe_trace", default=None)


def current() -> ProbeTrace | None:
    """Return the trace of the probe running in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def tracing() -> Iterator[ProbeTrace]:
    """Collect the wire exchanges of the code run inside (a probe)."""
    trace = ProbeTrace()
    token = _CURRENT.set(trace)
    try:
        yield trace
    finally:
        _CURRENT.reset(token)


def words_hex(words: list[int]) -> str:
    """Format registers the way a register map lists them."""
    return " ".join(f"0x{w:04X}" for w in words)


# Units by name suffix (house style: units in names).
_UNITS = (("_kwh", "kWh"), ("_deg", "°"), ("_c", "°C"), ("_pct", "%"), ("_kmh", "km/h"),
          ("_v", "V"), ("_a", "A"), ("_w", "W"), ("_hz", "Hz"), ("_m", "m"), ("_s", "s"),
          ("_dbm", "dBm"), ("_db", "dB"), ("_var", "var"), ("_va", "VA"))


def unit_of(name: str) -> str:
    """Return the unit a value's name carries (``tilt_x_deg`` -> ``°``), or ``""``."""
    lower = name.lower()
    for suffix, unit in _UNITS:
        if lower.endswith(suffix):
            return unit
    return ""


def labelled(name: str, value: object) -> str:
    """Return ``value`` with its unit (``7.25 °``), the way a technician reads it."""
    unit = unit_of(name)
    return f"{value} {unit}" if unit and isinstance(value, int | float) and \
        not isinstance(value, bool) else str(value)
