"""Replay state of downlink commands, in its own small file beside the outbox.

The per-key counters used to live only in the outbox, so replacing a corrupt outbox forgot them
and a captured command ran again (issue 19, finding 2; at 1970 freshness is skipped and the
counter stands alone). They now live in ``<outbox>.replay``: a few hundred bytes of JSON,
written to a temporary file, fsynced, renamed over the old one and the directory fsynced —
before the command executes. A store replacement leaves it alone.

When this file itself is unreadable (or missing while the outbox was just replaced), the state
is **lost** and the processor fails closed: every command is refused (``replay_state_lost``)
until the clock is trusted; the first trusted instant becomes a ``floor`` written to the file,
and only commands issued at or after it are accepted — any command captured before the loss
was issued before it (docs/decisions.md D40).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge.atomic_file import read_small_state_file, write_private_atomic

# A counter per (kid, issuer): a 256 KiB keys file holds at most ~2,600 kids, each with 33
# counters (itself and MAX_ISSUERS_PER_KID issuers) of at most ~110 bytes: under 10 MB. A
# bigger file is not ours (a bound against garbage, read once at start).
REPLAY_FILE_MAX_BYTES = 16 << 20
log = logging.getLogger(__name__)

# Signed counters are bounded so that one signed command cannot lock its key out for good
# (finding 11: ``ctr = 2**63-1``): never above 2**53-1 (exact in every JSON reader). With a
# trusted clock, never more than MAX_CTR_AHEAD_US above now in microseconds (the reference
# platform's counter is microseconds since the epoch): a platform counting microseconds is then
# locked out for at most a day by any one signed counter, and a series of them cannot ratchet
# further (the re-test of issue 19 found 2^40 µs above max(last, now): ~12.7 days, D66). With an
# untrusted clock, at most MAX_CTR_STEP_US above the last accepted value.
CTR_MAX = 2**53 - 1
MAX_CTR_AHEAD_US = 86_400 * 1_000_000  # one day of microseconds ahead of the trusted now
MAX_CTR_STEP_US = 2**40  # ~12.7 days of microseconds; a sequence counter never jumps that far


@dataclass
class ReplayState:
    """Per-kid last accepted counters and the fail-closed floor."""

    path: Path
    counters: dict[str, int] = field(default_factory=dict)
    lost: bool = False  # unreadable and not re-established: refuse everything
    lost_reason: str = ""
    floor_ns: int = 0  # accept only commands issued at or after this (0: no floor)

    @classmethod
    def beside(cls, outbox_path: Path) -> ReplayState:
        """Return the (not yet loaded) state that lives beside ``outbox_path``."""
        return cls(outbox_path.with_name(outbox_path.name + ".replay"))

    def load(self, journal_counters: dict[str, int], *, store_replaced: bool,
             operated_before: bool = False) -> None:
        """Read the file; merge the outbox journal's counters (the higher wins).

        ``operated_before``: something that survives the outbox files (a non-empty audit log)
        says commands were handled here before. A missing file is then not a first boot but
        a deletion (`rm outbox.db*`, issue 19 re-test #2): lost, as a corrupt one is.
        """
        try:
            doc = json.loads(read_small_state_file(self.path, REPLAY_FILE_MAX_BYTES))
            counters = {str(k): int(v) for k, v in doc["counters"].items()}
            floor_ns = int(doc.get("floor_ns", 0))
            lost = bool(doc.get("lost", False))
        except FileNotFoundError:
            if store_replaced:
                self._lose("the outbox was replaced and no replay file exists", journal_counters)
                return
            if operated_before and not journal_counters:
                self._lose("no replay file and no counters in the outbox, but the audit log "
                           "records earlier commands", journal_counters)
                return
            # first start (or first start of an agent that kept counters in the outbox only)
            self.counters = dict(journal_counters)
            self.write()
            return
        # OverflowError: int() of a float infinity (``1e400`` in a damaged file) failed every
        # start (issue 14 docs/inputs.md audit)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
                OverflowError) as exc:
            self._lose(f"{self.path} is unreadable ({type(exc).__name__})", journal_counters)
            return
        for kid, ctr in journal_counters.items():
            counters[kid] = max(counters.get(kid, 0), ctr)
        self.counters, self.floor_ns, self.lost = counters, floor_ns, lost
        if lost:
            self.lost_reason = "replay state lost at an earlier start; not re-established yet"

    def _lose(self, why: str, journal_counters: dict[str, int]) -> None:
        log.error("command replay state lost: %s; commands are refused until the clock is "
                  "trusted, then only commands issued after that are accepted", why)
        self.counters = dict(journal_counters)
        self.lost, self.lost_reason = True, why
        self.write()  # a restart before the clock syncs stays closed

    def reestablish(self, now_ns: int) -> None:
        """Close the loss at a trusted ``now_ns``: older commands are refused from now on."""
        self.floor_ns, self.lost, self.lost_reason = max(self.floor_ns, now_ns), False, ""
        self.write()
        log.warning("command replay state re-established: commands issued before %d ns are "
                    "refused", self.floor_ns)

    def check(self, kid: str, ctr: int, trusted_now_ns: int | None) -> tuple[str, str] | None:
        """Return ``(reason, detail)`` when ``ctr`` may not be accepted for ``kid``."""
        last = self.counters.get(kid)
        if last is not None and ctr <= last:
            return "counter_rollback", f"ctr {ctr} <= last accepted {last}"
        if trusted_now_ns is not None:
            now_us = trusted_now_ns // 1000
            if ctr > now_us + MAX_CTR_AHEAD_US:
                return "counter_jump", (f"ctr {ctr} is more than {MAX_CTR_AHEAD_US} above the "
                                        f"gateway's now in microseconds ({now_us})")
        elif last is not None and ctr > last + MAX_CTR_STEP_US:
            return "counter_jump", f"ctr {ctr} is more than {MAX_CTR_STEP_US} above {last}"
        return None

    def accept(self, kid: str, ctr: int) -> None:
        """Record ``ctr`` as the last accepted for ``kid``, durably (blocking: run in a thread)."""
        self.counters[kid] = ctr
        self.write()

    def write(self) -> None:
        """Replace the file atomically and durably."""
        doc = {"version": 1, "counters": self.counters, "floor_ns": self.floor_ns,
               "lost": self.lost}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private_atomic(self.path, json.dumps(doc, separators=(",", ":")).encode())
