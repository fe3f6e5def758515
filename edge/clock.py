"""Wall-clock quality for a gateway without an RTC.

A Pi boots at 1970 or at a stale fake-hwclock time and NTP may jump it later
(design/devices.md §5), so every event carries ``time_quality`` and, while the clock is not
trusted, ``mono`` (boot id + monotonic ms) so the outbox can re-stamp it once the clock syncs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import time
from enum import StrEnum
from pathlib import Path

# A wall clock before this instant is certainly wrong (this release was built later).
CLOCK_FLOOR_NS = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1e9)
_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"
_S = 1_000_000_000
# A GNSS time is plausible only between the floor and this many years after it: a receiver's
# week-rollover bug lands before the floor, a forged or corrupt date far ahead.
GNSS_MAX_AHEAD_NS = 15 * 366 * 86_400 * _S
# A fix may differ from the timeline it continues (the last accepted fix advanced by the
# monotonic clock, or a kernel-synced wall clock) by this much: receivers are within 1 µs,
# our own latency from the UART adds well under a second.
GNSS_MAX_DRIFT_NS = 2 * _S
GNSS_CONFIRM_FIXES, GNSS_CONFIRM_SPAN_NS = 3, 2 * _S  # before the first adoption
GNSS_RELOCK_FIXES, GNSS_RELOCK_SPAN_NS = 60, 60 * _S  # to replace an adopted timeline


class TimeQuality(StrEnum):
    """How far ``ts`` can be trusted (design/events.md)."""

    SYNCED = "synced"
    UNSYNCED = "unsynced"
    CORRECTED = "corrected"


def boot_id() -> str:
    """Return the kernel's boot id (changes at every boot; pairs with monotonic time)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


def kernel_clock_synced() -> bool:
    """Return whether the kernel says NTP (or chrony, or timesyncd) disciplines the clock."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False

    class _Timex(ctypes.Structure):
        _fields_ = (("modes", ctypes.c_uint), ("rest", ctypes.c_long * 64))

    libc = ctypes.CDLL(libc_name, use_errno=True)
    state = libc.adjtimex(ctypes.byref(_Timex()))
    if state == -1:
        # ProtectClock= (systemd/edge.service) forbids even a read-only adjtimex: fall back to
        # the flag file systemd-timesyncd keeps (chrony users: time_source: system or gnss)
        return Path("/run/systemd/timesync/synchronized").exists()
    return bool(state != _TIME_ERROR)


class Clock:
    """Decides the time quality for new events; one per agent.

    ``source`` is ``system`` (trust the wall clock: a gateway with a battery RTC, a dev box),
    ``ntp`` (the kernel's sync flag) or ``gnss`` (only a GNSS fix with a valid date makes it
    synced; ``note_gnss_fix`` is called by GPS drivers).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.boot_id = boot_id()
        self._gnss_offset_ns: int | None = None
        self._synced_cache: tuple[float, bool] = (-1e9, False)
        self._gnss_anchor: tuple[int, int] | None = None  # (utc_ns, mono_ns) last accepted
        self._gnss_run: list[tuple[int, int]] = []  # consecutive agreeing, not yet accepted
        self.gnss_rejected = 0
        self.gnss_last_reject = ""

    def note_gnss_fix(self, fix_utc_ns: int, mono_ns: int | None = None) -> bool:
        """Offer a GNSS fix's time; return whether it was accepted.

        Accepted, the offset wall clock → GNSS time is used from then on. Issue 19 #3: one
        message must never move the clock, so a fix is accepted only when it is plausible
        (``CLOCK_FLOOR_NS`` ≤ t ≤ floor + ``GNSS_MAX_AHEAD_NS``) and either continues a
        trusted timeline within ``GNSS_MAX_DRIFT_NS`` (a kernel-synced clock, which GNSS never
        overrides, or the last accepted fix) or completes a run of fixes that advance with
        the monotonic clock: 3 over 2 s for a first adoption, 60 over 60 s to replace one.
        Only local receivers call this (edge/drivers/gps.py); refusals are counted.
        """
        mono = time.monotonic_ns() if mono_ns is None else mono_ns
        if not CLOCK_FLOOR_NS <= fix_utc_ns <= CLOCK_FLOOR_NS + GNSS_MAX_AHEAD_NS:
            return self._gnss_refuse("implausible date")
        kernel_trusted = self.source == "system" or (
            self.source == "ntp" and self._kernel_synced())
        if kernel_trusted:
            if abs(fix_utc_ns - time.time_ns()) > GNSS_MAX_DRIFT_NS:
                return self._gnss_refuse("disagrees with the synced system clock")
            return self._gnss_accept(fix_utc_ns, mono)
        if self._gnss_anchor is not None:
            anchor_utc, anchor_mono = self._gnss_anchor
            if abs(fix_utc_ns - (anchor_utc + mono - anchor_mono)) <= GNSS_MAX_DRIFT_NS:
                return self._gnss_accept(fix_utc_ns, mono)
        if self._gnss_run:
            last_utc, last_mono = self._gnss_run[-1]
            if mono < last_mono or \
                    abs((fix_utc_ns - last_utc) - (mono - last_mono)) > GNSS_MAX_DRIFT_NS // 2:
                self._gnss_run.clear()  # not one timeline: start counting again
        self._gnss_run.append((fix_utc_ns, mono))
        fixes, span_ns = (GNSS_CONFIRM_FIXES, GNSS_CONFIRM_SPAN_NS) \
            if self._gnss_anchor is None else (GNSS_RELOCK_FIXES, GNSS_RELOCK_SPAN_NS)
        if len(self._gnss_run) >= fixes and \
                self._gnss_run[-1][1] - self._gnss_run[0][1] >= span_ns:
            return self._gnss_accept(fix_utc_ns, mono)
        return self._gnss_refuse("not confirmed by a run of agreeing fixes")

    def _gnss_accept(self, fix_utc_ns: int, mono_ns: int) -> bool:
        self._gnss_offset_ns = fix_utc_ns - time.time_ns()
        self._gnss_anchor = (fix_utc_ns, mono_ns)
        self._gnss_run.clear()
        return True

    def _gnss_refuse(self, why: str) -> bool:
        self.gnss_rejected += 1
        self.gnss_last_reject = why
        return False

    def now_ns(self) -> int:
        """Return the best wall-clock estimate in ns since the epoch."""
        if self._gnss_offset_ns is not None and (
                self.source == "gnss" or (self.source == "ntp" and not self._kernel_synced())):
            return time.time_ns() + self._gnss_offset_ns
        return time.time_ns()

    def quality(self) -> TimeQuality:
        """Return the quality of ``now_ns()`` right now."""
        if time.time_ns() < CLOCK_FLOOR_NS and self._gnss_offset_ns is None:
            return TimeQuality.UNSYNCED
        if self.source == "system":
            return TimeQuality.SYNCED
        if self._gnss_offset_ns is not None:
            return TimeQuality.SYNCED  # a gateway with a GPS gets trusted time before NTP
        if self.source == "ntp" and self._kernel_synced():
            return TimeQuality.SYNCED
        return TimeQuality.UNSYNCED

    def _kernel_synced(self) -> bool:
        checked_at, synced = self._synced_cache
        mono = time.monotonic()
        if mono - checked_at > 5.0:  # a syscall per event is waste; the flag changes rarely
            synced = kernel_clock_synced()
            self._synced_cache = (mono, synced)
        return synced


def rfc3339_ms(ns: int) -> str:
    """Format ns since the epoch as RFC 3339 UTC with millisecond precision."""
    seconds, rest_ns = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{rest_ns // 1_000_000:03d}Z"


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 timestamp into ns since the epoch; raise ValueError if malformed."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {text!r}")
    return int(value.timestamp() * 1_000_000_000)
