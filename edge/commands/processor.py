"""Downlink commands (design/events.md §Commands): verify, journal, execute, report, audit.

A command executes only if all five checks pass, in this order:

1. signature valid under an allow-listed ``kid`` whose roles include the action's role;
2. ``aud`` is this gateway, the device exists and supports the action, ``params`` validate;
3. not expired and ``iat`` not more than 60 s ahead (skipped, and said so, while the clock is
   unsynced: the counter check then stands alone);
4. ``cmd_id`` never seen (journal on disk) and ``ctr`` above the last accepted for the kid;
5. the device's safety rules pass (switch rate, dim range, quiet hours, volume, text length).

Every outcome is counted, written to the audit log and reported as a ``command_result``
event. The journal goes ``received → executing → done | failed``; a command found
``executing`` after a crash is never re-run: it is reported ``unknown``.

Nothing that arrives on the command topic may raise past ``handle()`` (issue 19, finding 1: a
retained ``b"[" * 8000`` ended every uplink session): any envelope the checks cannot read is a
counted, audited ``malformed`` rejection. Rejections anyone can cause — unauthenticated input
(before a valid signature) and repeats of a replayed cmd_id — are reported in full only
``REJECT_BURST`` times per reason and minute; the rest are counted and summed up in one
``suppressed`` report (finding 8, docs/decisions.md D41, D78).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.command_journal import Claim
from edge.clock import Clock, TimeQuality
from edge.commands.audit import append_audit, audited_before, clean
from edge.commands.body import (
    COMMAND_TIME_PATTERN,
    ISS_PATTERN,
    MAX_FIELD_ERRORS,
    CommandBody,
    body_problem,
    counter_key,
    field_errors,
    parse_command_time,
    unverified_cmd_id,
)
from edge.commands.catalogue import (
    ACTION_KINDS,
    ACTION_ROLES,
    ESCALATIONS,
    EXECUTE_TIMEOUT_S,
    FOLLOW_UP_STATUSES,
    GATEWAY_ACTIONS,
    GUARDS,
    IAT_SKEW_S,
    MAX_COMMAND_BYTES,
    PARAMS,
    REASONS,
    REPLAYED,
    STATUSES,
    UNAUTHENTICATED,
    UNVERIFIED_ID_REASONS,
    action_catalogue,
    action_of,
    reason_catalogue,
    role_catalogue,
)
from edge.commands.keys import PlatformKeys, load_platform_keys, read_platform_keys
from edge.commands.replay import ReplayState
from edge.config import EdgeConfig
from edge.drivers.kind import Params
from edge.errors import CommandRejectedError, DeviceError, PlatformKeysError
from edge.model import Event, EventType, Prio
from edge.security.signing import SignatureError, open_envelope, raw_public_key
from edge.shape_check import check, check_json
from edge.shapes import ShapeError

# what callers (the agent, the CLI, tests, the contract) read here; defined beside their kin
__all__ = [
    "ACTION_KINDS", "ACTION_ROLES", "COMMAND_TIME_PATTERN", "FOLLOW_UP_STATUSES", "ISS_PATTERN",
    "MAX_FIELD_ERRORS", "MAX_ISSUERS_PER_KID", "PARAMS", "REASONS", "STATUSES",
    "CommandBody", "CommandProcessor", "Outcome", "action_catalogue", "load_platform_keys",
    "parse_command_time", "reason_catalogue", "role_catalogue",
]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("edge.audit")

REPORTED_IDS_MAX = 4096  # (reason, cmd_id) pairs remembered as reported once (bounded LRU)
REJECT_BURST = 5  # full reports per reason per window
REJECT_WINDOW_S = 60.0
MAX_ISSUERS_PER_KID = 32


@dataclass(frozen=True)
class Outcome:
    """How a command ended."""

    status: str  # STATUSES
    reason: str = ""  # a key of REASONS, or "" when executed
    cmd_id: str | None = None
    action: str | None = None
    device: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    cmd_id_unverified: str | None = None  # UNVERIFIED_ID_REASONS: the body's cmd_id, unchecked


Executor = Callable[[str, str, Params, str | None], Awaitable[dict[str, Any]]]
Safety = Callable[[str, str, Params, set[str]], str | None]


class CommandProcessor:
    """Runs the checks, the journal and the execution of downlink commands."""

    def __init__(self, config: EdgeConfig, outbox: AsyncOutbox, clock: Clock, *,
                 keys: PlatformKeys, execute: Executor, safety: Safety, audit_path: Path,
                 replay_path: Path | None = None) -> None:
        self.config = config
        self.outbox = outbox
        self.clock = clock
        self.keys = keys
        self._execute = execute
        self._safety = safety
        self.audit_path = audit_path
        self.counts: dict[str, int] = {}
        self._lock = asyncio.Lock()  # one command at a time: the journal order is the order
        self.replay = ReplayState(replay_path) if replay_path is not None else \
            ReplayState.beside(outbox.path)
        self._replay_loaded = False
        self._window_start = time.monotonic()
        self._window_counts: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._reported: OrderedDict[tuple[str, str], None] = OrderedDict()
        # device -> monotonic end of its escalation's guard (catalogue.GUARDS; a key per device)
        self._guarded_until: dict[str, float] = {}

    async def reconfigure(self, config: EdgeConfig, safety: Safety, base_dir: Path
                          ) -> str | None:
        """Take a reloaded config and its safety rules; re-read the platform keys file.

        A platform adds or rotates a key on a running gateway with ``edge reload`` (issue 20
        re-test #1): the file goes through the same all-or-nothing, permission-checked loader
        as at start, and a refused file keeps the running keys, said in the returned note (the
        reload result and the log), never in silence (issue 19 re-test #8). The ``gateway``
        section itself (the file's path, keys inline in devices.yaml) changes at a restart
        (D19): ``config`` is the merged config, which keeps the running section.
        """
        self.config = config
        self._safety = safety
        try:
            fresh = await asyncio.to_thread(read_platform_keys, config, base_dir)
        except PlatformKeysError as exc:
            return (f"platform keys (file refused: {exc}; the running keys stay until a "
                    "reload or restart with a valid file)")
        if _fingerprint(fresh) != _fingerprint(self.keys):
            # swapped on the loop, never from the reading thread: a command's checks read
            # the keys twice with no await between them, so they see one set or the other
            self.keys = fresh
            log.info("reload: platform keys now %s", ", ".join(sorted(fresh)) or "none")
        return None

    async def _load_replay(self) -> None:
        if self._replay_loaded:
            return
        counters = await self.outbox.journal.counters()
        await asyncio.to_thread(functools.partial(
            self.replay.load, counters,
            store_replaced=self.outbox.replaced_corrupt is not None,
            operated_before=await asyncio.to_thread(audited_before, self.audit_path)))
        now_ns = self._trusted_now_ns()
        if self.replay.lost and now_ns is not None:
            # re-established at start: commands issued since the agent started are accepted
            await asyncio.to_thread(self.replay.reestablish, now_ns)
        self._replay_loaded = True

    async def recover(self) -> list[Outcome]:
        """Report commands a crash interrupted as ``unknown`` (never re-run them)."""
        await self._load_replay()
        lost = await self.outbox.journal.recover()
        outcomes = [Outcome("unknown", "interrupted", c, a, d,
                            detail={"detail": "the agent stopped while it executed"})
                    for c, a, d in lost]
        for outcome in outcomes:
            await self._report(outcome)
        return outcomes

    async def handle(self, raw: bytes) -> Outcome:
        """Process one command envelope; never raises (short of cancellation)."""
        async with self._lock:
            try:
                await self._load_replay()
                outcome = await self._process(raw)
            except CommandRejectedError as exc:
                outcome = Outcome("rejected", exc.reason, exc.cmd_id, exc.action, exc.device,
                                  detail={"detail": exc.detail} if exc.detail else {},
                                  cmd_id_unverified=unverified_cmd_id(raw)
                                  if exc.reason in UNVERIFIED_ID_REASONS and exc.cmd_id is None
                                  else None)
            except Exception as exc:  # a bug or a full disk: reported, never past the uplink
                log.exception("command: internal error")
                outcome = Outcome("failed", "internal_error", detail={"detail": repr(exc)[:200]})
            await self._report_safely(outcome)
            return outcome

    async def tick(self, dropped: int = 0) -> None:
        """Account ``dropped`` envelopes the link could not queue; flush due summaries."""
        async with self._lock:
            if dropped > 0:
                log.warning("command: %d envelopes dropped unread (inbound queue full)", dropped)
                await self._report_safely(Outcome("dropped", "inbound_full",
                                                  detail={"count": dropped}))
            else:
                await self._flush_suppressed()

    @staticmethod
    def _reject(reason: str, body: CommandBody | None = None, detail: str = "") -> NoReturn:
        if body is None:
            raise CommandRejectedError(reason, detail)
        raise CommandRejectedError(reason, detail, cmd_id=body.cmd_id, action=body.action,
                                   device=body.device)

    async def _process(self, raw: bytes) -> Outcome:
        kid, body = self._verify(raw)  # check 1 (signature, kid)
        device, params = self._validate(kid, body)  # checks 1 (role) and 2
        roles = set(self.keys[kid][1])
        time_checked = self._check_fresh(body)  # check 3
        if await self.outbox.journal.seen(body.cmd_id):
            self._reject("duplicate", body)  # check 4: cmd_id (named before the counter)
        await self._check_replay(kid, body)  # check 4: the counter, durably, before anything
        # check 4: the journal (the counter key: the kid, or kid/iss, D59)
        reason = await self.outbox.journal.claim(Claim(
            body.cmd_id, kid, counter_key(kid, body.iss), body.ctr, body.action, body.device,
            time.time_ns()))
        if reason is not None:
            self._reject(reason, body)
        # check 5 (a gateway action has no device)
        unsafe = None if not device else self._safety(device, body.action, params, roles)
        if unsafe is not None:
            await self._journal(body.cmd_id, "rejected", unsafe)
            self._reject("unsafe", body, unsafe)
        await self._journal(body.cmd_id, "executing", "")
        try:
            async with asyncio.timeout(EXECUTE_TIMEOUT_S):
                detail = await self._execute(device, body.action, params, body.cmd_id)
        except (DeviceError, TimeoutError) as exc:
            await self._journal(body.cmd_id, "failed", str(exc))
            reason = "timeout" if isinstance(exc, TimeoutError) else "device_error"
            return Outcome("failed", reason, body.cmd_id, body.action, device or None,
                           detail={"detail": str(exc)[:200] or "timed out"})
        except Exception as exc:  # a driver bug: the command failed, the uplink goes on
            log.exception("command %s: executor error", body.cmd_id)
            await self._journal(body.cmd_id, "failed", repr(exc)[:200])
            return Outcome("failed", "internal_error", body.cmd_id, body.action, device or None)
        await self._journal(body.cmd_id, "done", "")
        esc = ESCALATIONS.get(body.action)
        if esc is not None and esc.guard_s > 0 and getattr(params, esc.field, None) == esc.value:
            self._guarded_until[device] = time.monotonic() + esc.guard_s
        if not time_checked:
            detail = {**detail, "note": "clock unsynced: only the counter checked freshness"}
        return Outcome("executed", "", body.cmd_id, body.action, device or None, detail)

    def _trusted_now_ns(self) -> int | None:
        if self.clock.quality() is TimeQuality.UNSYNCED:
            return None
        return self.clock.now_ns()

    async def _check_replay(self, kid: str, body: CommandBody) -> None:
        """Fail closed while the replay state is lost; bound and record the counter."""
        replay = self.replay
        now_ns = self._trusted_now_ns()
        if replay.lost:
            if now_ns is None:
                self._reject("replay_state_lost", body, f"{replay.lost_reason}; refused until "
                             "the clock is trusted")
            await asyncio.to_thread(replay.reestablish, now_ns)
        if replay.floor_ns:
            try:
                iat_ns = parse_command_time(body.iat)
            except (ValueError, OverflowError):
                self._reject("bad_body", body, "iat is not RFC 3339")
            if iat_ns < replay.floor_ns:
                self._reject("replay_state_lost", body, "issued before the replay state was "
                             "re-established")
        key = counter_key(kid, body.iss)
        if key not in replay.counters and body.iss is not None and sum(
                k.startswith(f"{kid}/") for k in replay.counters) >= MAX_ISSUERS_PER_KID:
            # the replay file stays small: a key's holder cannot mint counters without end
            self._reject("too_many_issuers", body, f"{kid} has {MAX_ISSUERS_PER_KID} issuers")
        problem = replay.check(key, body.ctr, now_ns)
        if problem is not None:
            self._reject(problem[0], body, problem[1])
        await asyncio.to_thread(replay.accept, key, body.ctr)

    async def _journal(self, cmd_id: str, state: str, reason: str) -> None:
        await self.outbox.journal.set_state(cmd_id, state, reason)

    def _verify(self, raw: bytes) -> tuple[str, CommandBody]:
        if len(raw) > MAX_COMMAND_BYTES:
            self._reject("oversized", detail=f"{len(raw)} bytes > {MAX_COMMAND_BYTES}")
        keys = {kid: key for kid, (key, _roles) in self.keys.items()}
        try:
            kid, body_bytes = open_envelope(raw, keys)
        except SignatureError as exc:
            self._reject(exc.reason, detail=str(exc)[:200])
        except (RecursionError, ValueError, TypeError) as exc:
            # json.loads of b"[" * 8000 recurses too deep; a body with a lone surrogate escape
            # cannot be encoded to the bytes that were signed (UnicodeEncodeError)
            self._reject("malformed", detail=type(exc).__name__)
        try:
            body = check_json(CommandBody, body_bytes)
        except ShapeError as exc:  # not JSON too (json_invalid), as pydantic said it
            self._reject("bad_body", detail=field_errors(exc.errors))
        problem = body_problem(body)
        if problem is not None:
            self._reject("bad_body", body, problem)
        return kid, body

    def _validate(self, kid: str, body: CommandBody) -> tuple[str, Params]:
        role = ACTION_ROLES.get(body.action)
        if role is None:
            self._reject("unknown_action", body)
        esc = ESCALATIONS.get(body.action)
        if esc is not None and isinstance(body.params, dict) and \
                body.params.get(esc.field) == esc.value:
            role = esc.role
        if role not in self.keys[kid][1]:
            self._reject("wrong_role", body, f"{body.action} needs role {role}")
        if body.aud != self.config.gateway.id:
            self._reject("wrong_aud", body, f"for {body.aud}")
        kinds = ACTION_KINDS[body.action]  # every action with a role has kinds and params
        if body.action in GATEWAY_ACTIONS:
            try:
                return "", check(PARAMS[body.action], body.params)
            except ShapeError as exc:
                self._reject("bad_params", body, field_errors(exc.errors))
        try:
            device = self.config.device(body.device or "")
        except KeyError:
            self._reject("unknown_device", body,
                         f"no device {(body.device or '')[:64]!r} on {self.config.gateway.id}")
        if device.kind not in kinds:
            self._reject("unsupported_action", body, f"{device.kind} cannot {body.action}")
        declared = action_of(device.kind, body.action)
        if declared is not None and declared.models is not None and \
                device.model not in declared.models:
            self._reject("unsupported_action", body,
                         f"a {device.model} {device.kind} cannot {body.action}")
        guard = GUARDS.get(body.action)
        if guard is not None and guard.role not in self.keys[kid][1] and \
                self._guarded_until.get(device.name, 0.0) > time.monotonic():
            self._reject("wrong_role", body, f"{guard.during} may still be on air: "
                         f"{body.action} needs role {guard.role}")
        try:
            params = check(PARAMS[body.action], body.params)
        except ShapeError as exc:
            self._reject("bad_params", body, field_errors(exc.errors))
        problem = declared.params_problem(device, params) \
            if declared is not None and declared.params_problem is not None else None
        if problem is not None:
            self._reject("bad_params", body, problem)
        return device.name, params

    def _check_fresh(self, body: CommandBody) -> bool:
        """Return False when the clock cannot judge freshness (the counter stands alone)."""
        if self.clock.quality() is TimeQuality.UNSYNCED:
            return False
        now_ns = self.clock.now_ns()
        try:
            exp_ns, iat_ns = parse_command_time(body.exp), parse_command_time(body.iat)
        except (ValueError, OverflowError):
            self._reject("bad_body", body, "iat/exp are not RFC 3339")
        if exp_ns <= now_ns:
            self._reject("expired", body, f"expired at {body.exp}")
        if iat_ns > now_ns + IAT_SKEW_S * 1e9:
            self._reject("iat_in_future", body, f"issued at {body.iat}")
        return True

    async def _report_safely(self, outcome: Outcome) -> None:
        try:
            await self._report(outcome)
        except Exception:  # the audit disk is full or gone: counted, logged, the uplink goes on
            self.counts["report_failed"] = self.counts.get("report_failed", 0) + 1
            log.exception("command: cannot report %s %s", outcome.status, outcome.reason)

    def _is_repeat(self, outcome: Outcome) -> bool:
        """Return whether ``outcome`` is a replay-class rejection of a cmd_id reported before."""
        if outcome.reason not in REPLAYED or outcome.cmd_id is None:
            return False
        key = (outcome.reason, outcome.cmd_id)
        if key in self._reported:
            self._reported.move_to_end(key)
            return True
        self._reported[key] = None
        if len(self._reported) > REPORTED_IDS_MAX:
            self._reported.popitem(last=False)
        return False

    def _admit(self, outcome: Outcome) -> bool:
        """Return whether to report ``outcome`` in full (else it is counted for a summary)."""
        n = self._window_counts.get(outcome.reason, 0) + 1
        self._window_counts[outcome.reason] = n
        if n <= REJECT_BURST:
            return True
        weight = int(outcome.detail.get("count", 1)) if outcome.status == "dropped" else 1
        self._suppressed[outcome.reason] = self._suppressed.get(outcome.reason, 0) + weight
        return False

    async def _flush_suppressed(self) -> None:
        """Once a window has passed: one report sums up what it did not report in full."""
        if time.monotonic() - self._window_start < REJECT_WINDOW_S:
            return
        self._window_start = time.monotonic()
        self._window_counts.clear()
        suppressed, self._suppressed = self._suppressed, {}
        if suppressed:
            await self._write(Outcome("rejected", "suppressed",
                                      detail={"counts": suppressed, "window_s": REJECT_WINDOW_S}))

    async def _report(self, outcome: Outcome) -> None:
        key = outcome.status if outcome.status not in {"rejected", "dropped"} else \
            f"{outcome.status}.{outcome.reason}"
        n = int(outcome.detail.get("count", 1)) if outcome.status == "dropped" else 1
        self.counts[key] = self.counts.get(key, 0) + n
        await self._flush_suppressed()
        anyone_can = outcome.reason in UNAUTHENTICATED or self._is_repeat(outcome)
        if not anyone_can or self._admit(outcome):
            await self._write(outcome, evictable=anyone_can)

    async def _write(self, outcome: Outcome, *, evictable: bool = False) -> None:
        # an unauthenticated kid or body may hold lone surrogates: they cannot be encoded to
        # UTF-8 (finding 1's UnicodeEncodeError), so every string is escaped before it is kept
        outcome = Outcome(outcome.status, outcome.reason, clean(outcome.cmd_id),
                          clean(outcome.action), clean(outcome.device), clean(outcome.detail),
                          outcome.cmd_id_unverified)
        record = {"ts": time.time(), "status": outcome.status, "reason": outcome.reason,
                  "cmd_id": outcome.cmd_id, "action": outcome.action, "device": outcome.device,
                  "detail": outcome.detail}
        data = {"cmd_id": outcome.cmd_id, "action": outcome.action, "status": outcome.status,
                "reason": outcome.reason or None, "detail": outcome.detail}
        if outcome.cmd_id_unverified is not None:
            record["cmd_id_unverified"] = data["cmd_id_unverified"] = outcome.cmd_id_unverified
        await asyncio.to_thread(append_audit, self.audit_path, record)
        audit_log.info("command %s %s on %s: %s %s", outcome.cmd_id, outcome.action,
                       outcome.device, outcome.status, outcome.reason)
        prio = Prio.CRITICAL if outcome.detail.get("priority") == "emergency" else Prio.ALARM
        if evictable or outcome.reason == "suppressed":
            prio = Prio.STATE  # anyone can cause these: evictable under quota, never an alarm
        await self.outbox.put(Event(
            EventType.COMMAND_RESULT, prio, self.clock.now_ns(), self.clock.quality(),
            device=outcome.device, data=data))


def _fingerprint(keys: PlatformKeys) -> dict[str, tuple[bytes, frozenset[str]]]:
    return {kid: (raw_public_key(key), roles) for kid, (key, roles) in keys.items()}
