"""Wall-clock quality for a gateway without an RTC.

A Pi boots at 1970 or at a stale fake-hwclock time and NTP may jump it later
(design/devices.md §5), so every event carries ``time_quality`` and, while the clock is not
trusted, ``mono`` (boot id + monotonic ms) so the outbox can re-stamp it once the clock syncs.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import time
from enum import StrEnum
from pathlib import Path

from edge.atomic_file import read_small_state_file, write_private_atomic

# A wall clock before this instant is certainly wrong (this release was built later).
CLOCK_FLOOR_NS = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1e9)
_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"
# systemd-timesyncd's flag file; one Path for the agent's life (a Path built per check interns
# its parts anew, churning the interpreter's interned-string table until it doubles: RSS)
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_S = 1_000_000_000
# Without a persisted floor (a fresh gateway) a GNSS time is plausible only between the build
# floor and this many years after it: a receiver's week-rollover bug lands before the floor, a
# forged or corrupt date far ahead. 15 years admitted a forged 2031 (re-test of issue 19): 4
# years is a release's service life; a later release moves CLOCK_FLOOR_NS (D66).
GNSS_MAX_AHEAD_NS = 4 * 366 * 86_400 * _S
# With a persisted "last trusted wall time" floor (FLOOR_FILE) the first fix of a boot must lie
# between the floor and this far after it: a cabinet is rarely powered off for two years.
FLOOR_MAX_AHEAD_NS = 2 * 366 * 86_400 * _S
# A fix may differ from the timeline it continues (the last accepted fix advanced by the
# monotonic clock, or a kernel-synced wall clock) by this much: receivers are within 1 µs,
# our own latency from the UART adds well under a second.
GNSS_MAX_DRIFT_NS = 2 * _S
# Fix to fix the anchor follows the receiver (the monotonic clock's crystal drifts tens of ppm),
# but never further from the boot's first adoption than the bound plus this rate: a stream
# walking 2 s per fix cannot carry the clock away.
GNSS_MAX_DRIFT_PPM = 100
GNSS_CONFIRM_FIXES, GNSS_CONFIRM_SPAN_NS = 3, 2 * _S  # before the first adoption
# This many refused fixes in a boot (not counting a first run still confirming) make the GNSS
# source suspect: one alarm per boot (``time_source_suspect``), never a re-anchoring.
GNSS_SUSPECT_FIXES = 10
FLOOR_FILE = "clock_floor"  # in state_dir: ns since the epoch of the last trusted wall time
# A persisted floor further than this after the build floor is damage, not a date: a gateway
# serves for years, not for decades on one release.
FLOOR_FILE_MAX_AHEAD_NS = 30 * 366 * 86_400 * _S
FLOOR_EVERY_S = 3600.0  # written hourly and at stop, only from a trusted clock (flash wear)


def read_floor(path: Path) -> int | None:
    """Return the persisted last trusted wall time (ns), or None if absent or unreadable.

    A damaged file is no floor (the fresh-gateway bounds apply): not a regular file (a FIFO
    blocked the start), over 64 bytes, not digits, or a time outside the build floor and
    FLOOR_FILE_MAX_AHEAD_NS after it (digits from a damaged sector, e.g. year 5138, made a
    GNSS-only gateway refuse every fix until the file was removed: issue 14 audit).
    """
    try:
        text = read_small_state_file(path, 64).decode("ascii").strip()
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not text.isdigit() or len(text) > 20:
        return None
    ns = int(text)
    return ns if CLOCK_FLOOR_NS <= ns <= CLOCK_FLOOR_NS + FLOOR_FILE_MAX_AHEAD_NS else None


def write_floor(path: Path, ns: int) -> None:
    """Persist ``ns`` as the last trusted wall time: atomic, 0600, durable."""
    write_private_atomic(path, f"{ns}\n".encode("ascii"))


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
    class _Timex(ctypes.Structure):
        _fields_ = (("modes", ctypes.c_uint), ("rest", ctypes.c_long * 64))

    # the process's own symbols (libc is linked in): ctypes.util.find_library would fork
    # ldconfig every check and import shutil, tempfile, bz2 and lzma for it (RSS, D87)
    adjtimex = getattr(ctypes.CDLL(None, use_errno=True), "adjtimex", None)
    if adjtimex is None:  # a libc without it (not Linux): nothing says the clock is synced
        return False
    state = adjtimex(ctypes.byref(_Timex()))
    if state == -1:
        # ProtectClock= (systemd/edge.service) forbids even a read-only adjtimex: fall back to
        # the flag file systemd-timesyncd keeps (chrony users: time_source: system or gnss)
        return TIMESYNCD_FLAG.exists()
    return bool(state != _TIME_ERROR)


class Clock:
    """Decides the time quality for new events; one per agent.

    ``source`` is ``system`` (trust the wall clock: a gateway with a battery RTC, a dev box),
    ``ntp`` (the kernel's sync flag) or ``gnss`` (only a GNSS fix with a valid date makes it
    synced; ``note_gnss_fix`` is called by GPS drivers).
    """

    def __init__(self, source: str, floor_ns: int | None = None) -> None:
        self.source = source
        self.boot_id = boot_id()
        # the last trusted wall time persisted by an earlier run (FLOOR_FILE), if any
        self.floor_ns = floor_ns
        # this run's start: a GNSS-only clock persists at most floor_ns + the time since then
        self.started_mono_ns = time.monotonic_ns()
        self._gnss_offset_ns: int | None = None
        self._synced_cache: tuple[float, bool] = (-1e9, False)
        self._gnss_anchor: tuple[int, int] | None = None  # (utc_ns, mono_ns) last accepted
        self._gnss_first: tuple[int, int] | None = None  # (utc_ns, mono_ns) first adoption
        self._gnss_run: list[tuple[int, int]] = []  # consecutive agreeing, not yet accepted
        self.gnss_rejected = 0
        self.gnss_last_reject = ""
        self.gnss_disagreed = 0  # refused as implausible or disagreeing (not: still confirming)
        # set once per boot when a GNSS stream keeps disagreeing (time_source_suspect)
        self.gnss_suspect: str | None = None

    def note_gnss_fix(self, fix_utc_ns: int, mono_ns: int | None = None) -> bool:
        """Offer a GNSS fix's time; return whether it was accepted.

        Accepted, the offset wall clock → GNSS time is used from then on. Issue 19 #3 and its
        re-test: a fix is accepted only when it is plausible (not before the build floor nor
        the persisted floor; not more than ``FLOOR_MAX_AHEAD_NS`` after the persisted floor,
        or ``GNSS_MAX_AHEAD_NS`` after the build floor without one) and either continues the
        anchored timeline within ``GNSS_MAX_DRIFT_NS`` (a kernel-synced clock, which GNSS
        never overrides, or the last accepted fix advanced by the monotonic clock, and within
        ``GNSS_MAX_DRIFT_PPM`` of the boot's first adoption) or, before any anchor, completes
        a run of 3 fixes over 2 s that advance with the monotonic clock. Once anchored, GNSS
        never re-anchors during this boot: disagreeing fixes are counted and, from the 10th,
        flag ``gnss_suspect`` (one ``time_source_suspect`` alarm, D66). Only local receivers
        call this (edge/drivers/gps.py).
        """
        mono = time.monotonic_ns() if mono_ns is None else mono_ns
        why = self._implausible(fix_utc_ns)
        if why is None and (self.source == "system" or (
                self.source == "ntp" and self._kernel_synced())):
            if abs(fix_utc_ns - time.time_ns()) <= GNSS_MAX_DRIFT_NS:
                return self._gnss_accept(fix_utc_ns, mono)
            why = "disagrees with the synced system clock"
        elif why is None and self._gnss_anchor is not None:
            if self._continues_anchor(fix_utc_ns, mono):
                return self._gnss_accept(fix_utc_ns, mono)
            why = "disagrees with the anchored clock"
        if why is not None:
            return self._gnss_refuse(why, fix_utc_ns)
        if self._gnss_run:
            last_utc, last_mono = self._gnss_run[-1]
            if mono < last_mono or \
                    abs((fix_utc_ns - last_utc) - (mono - last_mono)) > GNSS_MAX_DRIFT_NS // 2:
                self._gnss_run.clear()  # not one timeline: start counting again
        self._gnss_run.append((fix_utc_ns, mono))
        if len(self._gnss_run) >= GNSS_CONFIRM_FIXES and \
                self._gnss_run[-1][1] - self._gnss_run[0][1] >= GNSS_CONFIRM_SPAN_NS:
            return self._gnss_accept(fix_utc_ns, mono)
        self.gnss_rejected += 1  # confirming a first run: not a disagreement
        self.gnss_last_reject = "not confirmed by a run of agreeing fixes"
        return False

    def _implausible(self, fix_utc_ns: int) -> str | None:
        low_ns = max(CLOCK_FLOOR_NS, self.floor_ns or 0)
        high_ns = CLOCK_FLOOR_NS + GNSS_MAX_AHEAD_NS if self.floor_ns is None \
            else max(self.floor_ns, CLOCK_FLOOR_NS) + FLOOR_MAX_AHEAD_NS
        if fix_utc_ns < low_ns - GNSS_MAX_DRIFT_NS:
            return "earlier than the last trusted time"
        if fix_utc_ns > high_ns:
            return "implausibly far ahead"
        return None

    def _continues_anchor(self, fix_utc_ns: int, mono_ns: int) -> bool:
        assert self._gnss_anchor is not None
        assert self._gnss_first is not None
        anchor_utc, anchor_mono = self._gnss_anchor
        first_utc, first_mono = self._gnss_first
        allowed_ns = GNSS_MAX_DRIFT_NS + abs(mono_ns - first_mono) * GNSS_MAX_DRIFT_PPM // 1_000_000
        return abs(fix_utc_ns - (anchor_utc + mono_ns - anchor_mono)) <= GNSS_MAX_DRIFT_NS and \
            abs(fix_utc_ns - (first_utc + mono_ns - first_mono)) <= allowed_ns

    def _gnss_accept(self, fix_utc_ns: int, mono_ns: int) -> bool:
        self._gnss_offset_ns = fix_utc_ns - time.time_ns()
        self._gnss_anchor = (fix_utc_ns, mono_ns)
        if self._gnss_first is None:
            self._gnss_first = (fix_utc_ns, mono_ns)
        self._gnss_run.clear()
        return True

    def _gnss_refuse(self, why: str, fix_utc_ns: int) -> bool:
        self.gnss_rejected += 1
        self.gnss_last_reject = why
        self.gnss_disagreed += 1
        # counted over the boot, not in a row: a forged stream interleaved with the real
        # receiver's fixes is suspect too
        if self.gnss_disagreed >= GNSS_SUSPECT_FIXES and self.gnss_suspect is None:
            self.gnss_suspect = (f"{self.gnss_disagreed} GNSS fixes refused ({why}); "
                                 f"last one claimed {rfc3339_ms(fix_utc_ns)}")
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

    def floor_to_persist(self, mono_ns: int | None = None) -> int | None:
        """Return the wall time to persist as the next run's floor, or None for none.

        The floor bounds the first GNSS adoption of the next boot, so it must never come from
        GNSS alone (review finding 2): a forged fix inside the window became the floor and kept
        the real time out for good. The kernel clock counts when NTP disciplines it (or the
        operator declared it trusted, ``system``). A GNSS-only clock may move the floor by no
        more than the monotonic time of this run: ``floor_ns + (mono - started_mono_ns)`` —
        a floor too low only weakens the check; this boot's uptime is not used because a
        restart within one boot would count the time before it twice (D67).
        """
        wall_ns = time.time_ns()
        if wall_ns >= CLOCK_FLOOR_NS and (self.source == "system" or self._kernel_synced()):
            return wall_ns
        if self._gnss_offset_ns is None:
            return None
        mono = time.monotonic_ns() if mono_ns is None else mono_ns
        bound_ns = max(self.floor_ns or 0, CLOCK_FLOOR_NS) + max(0, mono - self.started_mono_ns)
        return min(self.now_ns(), bound_ns)

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
