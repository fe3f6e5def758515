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
import datetime as dt
import functools
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.command_journal import Claim
from edge.clock import Clock, TimeQuality
from edge.commands.keys import PlatformKeys, load_platform_keys
from edge.commands.replay import CTR_MAX, MAX_CTR_AHEAD_US, MAX_CTR_STEP_US, ReplayState
from edge.config import ROLES, EdgeConfig
from edge.drivers.factory import KINDS
from edge.drivers.kind import NoParams, Params
from edge.errors import CommandRejectedError, DeviceError
from edge.model import UUID7_PATTERN, Event, EventType, Prio
from edge.security.signing import SignatureError, open_envelope
from edge.shape_check import check, check_json
from edge.shapes import Ge, Le, Pattern, ShapeError, shape

__all__ = ["CommandProcessor", "Outcome", "load_platform_keys"]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("edge.audit")

MAX_COMMAND_BYTES = 8 * 1024
IAT_SKEW_S = 60.0
EXECUTE_TIMEOUT_S = 10.0
# Reasons given before any signature verified: anyone who can publish on the topic can cause
# them, so their reports are rate-limited (each full report is an fsynced audit line and a
# prio-1 event that is never evicted).
UNAUTHENTICATED = frozenset({"oversized", "malformed", "unknown_kid", "bad_signature",
                             "inbound_full"})
# Reasons a replayed capture gives: the envelope is signed, but anyone who saw it on the wire
# can publish it again and again. The first rejection of each cmd_id for such a reason is
# reported in full (a platform's own late or re-sent command must get its answer); repeats of
# that cmd_id are rate-limited and evictable like unauthenticated input (D78).
REPLAYED = frozenset({"duplicate", "counter_rollback", "expired", "replay_state_lost"})
RATE_LIMITED = UNAUTHENTICATED | REPLAYED
REPORTED_IDS_MAX = 4096  # (reason, cmd_id) pairs remembered as reported once (bounded LRU)
REJECT_BURST = 5  # full reports per reason per window
REJECT_WINDOW_S = 60.0
# speaker.stop needs broadcast-emergency this long after an emergency play was accepted (a
# 200-character text plays in under a minute; a queue ahead of it adds more): the ``broadcast``
# role alone must not silence an evacuation message (finding 11).
EMERGENCY_STOP_GUARD_S = 600.0
# Actions no kind declares: every device can be read now (its driver's probe); agent.state acts
# on the gateway itself and takes no device (a bad_body with one, issue 20 re-test #4).
GATEWAY_ACTIONS = frozenset({"agent.state"})
_OWN_ACTIONS: dict[str, tuple[str, type[Params], frozenset[str]]] = {
    "device.read": ("read", NoParams, frozenset(KINDS)),
    "agent.state": ("read", NoParams, frozenset()),
}


def _derive_catalogue() -> tuple[dict[str, str], dict[str, frozenset[str]],
                                 dict[str, type[Params]]]:
    """Return each action's role, kinds and params model, from the kind table (D82)."""
    roles: dict[str, str] = {}
    kinds: dict[str, frozenset[str]] = {}
    params: dict[str, type[Params]] = {}
    for kind in KINDS.values():
        for name, action in kind.actions.items():
            if roles.setdefault(name, action.role) != action.role or \
                    params.setdefault(name, action.params) is not action.params:
                raise TypeError(f"{name}: kinds declare it with different roles or params")
            kinds[name] = kinds.get(name, frozenset()) | {kind.name}
    for name, (role, model, of_kinds) in _OWN_ACTIONS.items():
        if name in roles:
            raise TypeError(f"{name}: the processor's own action, declared by a kind too")
        roles[name], params[name], kinds[name] = role, model, of_kinds
    return roles, kinds, params


ACTION_ROLES, ACTION_KINDS, PARAMS = _derive_catalogue()
# exp - iat at most this: a command is for now, not a standing order; a captured or withheld
# command can take effect at most this long after it was issued (a schedule lives on the
# gateway and needs no long-lived command). An hour covers a platform's retry queue through a
# short outage (issue 20 re-test #9, docs/decisions.md D68).
MAX_COMMAND_LIFETIME_S = 3600


# Every ``status`` and ``reason`` a ``command_result`` can carry, in one place: the contract's
# schema is generated from these (issue 20 #7). ``status`` of the command itself:
STATUSES = ("executed", "rejected", "failed", "unknown", "dropped")
# Later results of a long-running action, from its driver (same ``cmd_id``; ``cmd_id`` null for a
# step of a stored light schedule): a queued play ends played/interrupted/refused/failed.
FOLLOW_UP_STATUSES = ("played", "interrupted", "refused", "failed", "executed")
# reason -> (status, whether a valid signature came first, what it means)
REASONS: dict[str, tuple[str, bool, str]] = {
    "oversized": ("rejected", False, f"envelope over {MAX_COMMAND_BYTES} bytes"),
    "malformed": ("rejected", False, "not a JSON envelope {kid, alg, sig, body} of strings"),
    "unknown_kid": ("rejected", False, "kid not on the gateway's allow-list"),
    "bad_signature": ("rejected", False, "sig does not verify over the UTF-8 bytes of body"),
    "bad_body": ("rejected", True, "body is not a valid command (detail lists field errors)"),
    "unknown_action": ("rejected", True, "action not in the action catalogue"),
    "wrong_role": ("rejected", True, "the kid's roles do not include the action's role"),
    "wrong_aud": ("rejected", True, "aud is another gateway"),
    "unsupported_action": ("rejected", True, "the device's kind cannot do the action"),
    "unknown_device": ("rejected", True, "no such device on this gateway"),
    "bad_params": ("rejected", True, "params do not validate (detail lists field errors)"),
    "expired": ("rejected", True, "exp is not after the gateway's trusted now"),
    "iat_in_future": ("rejected", True, f"iat more than {IAT_SKEW_S:g} s after the trusted now"),
    "duplicate": ("rejected", True, "cmd_id seen before (journal on disk)"),
    "counter_rollback": ("rejected", True, "ctr not above the last accepted for (kid, iss)"),
    "counter_jump": ("rejected", True, f"ctr more than {MAX_CTR_AHEAD_US} above the trusted "
                     f"now in microseconds (untrusted clock: {MAX_CTR_STEP_US} above the last)"),
    "too_many_issuers": ("rejected", True, "a kid's issuer counters are full (iss)"),
    "replay_state_lost": ("rejected", True, "replay state lost; refused until re-established"),
    "unsafe": ("rejected", True, "a device safety rule refused it (detail says which)"),
    "suppressed": ("rejected", False, "summary of rejections anyone can cause (D41, D78)"),
    "inbound_full": ("dropped", False, "envelopes dropped unread: inbound queue full"),
    "device_error": ("failed", True, "the device refused or did not confirm (detail)"),
    "timeout": ("failed", True, f"the device did not answer within {EXECUTE_TIMEOUT_S:g} s"),
    "internal_error": ("failed", True, "a gateway bug; the uplink went on"),
    "interrupted": ("unknown", True, "the agent stopped while it executed; never re-run"),
}
# Rejections whose command id is echoed as ``cmd_id_unverified`` when the body has one that is a
# UUIDv7: the platform matches the rejection to its command without trusting the gateway to
# have verified it (issue 20 #7).
UNVERIFIED_ID_REASONS = frozenset({"unknown_kid", "bad_signature", "bad_body"})
MAX_FIELD_ERRORS = 8  # bad_body/bad_params detail: the first errors, then a count
# Command times: RFC 3339 in UTC ("Z") or with an offset, seconds required, 0-9 fraction digits;
# upper-case T and Z only; no epoch numbers (a JSON number is a bad_body) (issue 20 #8).
# ASCII digits only ([0-9]: ``\d`` also matches a full-width digit).
COMMAND_TIME_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                        r"(Z|[+-][0-9]{2}:[0-9]{2})$")
_COMMAND_TIME = re.compile(COMMAND_TIME_PATTERN)
ISS_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
MAX_ISSUERS_PER_KID = 32


@shape
class CommandBody:
    """The signed body of a command (checked by ``edge.shape_check``: no pydantic, D86)."""

    cmd_id: Annotated[str, Pattern(UUID7_PATTERN)]
    aud: str
    device: str | None = None
    action: str
    # any JSON value: what is wrong inside ``params`` (not an object included) is bad_params,
    # the schema's /params (issue 20 re-test #4)
    params: Any = field(default_factory=dict)
    iat: Annotated[str, Pattern(COMMAND_TIME_PATTERN)]
    exp: Annotated[str, Pattern(COMMAND_TIME_PATTERN)]
    ctr: Annotated[int, Ge(0), Le(CTR_MAX)]
    # the platform instance that signed it: each (kid, iss) keeps its own counter, so instances
    # sharing a key cannot lock each other out (issue 20 #9, D59); absent: the kid's own
    iss: Annotated[str, Pattern(ISS_PATTERN)] | None = None


def parse_command_time(text: str) -> int:
    """Return ns since the epoch of a command time (COMMAND_TIME_PATTERN); ValueError if not.

    Exact to the nanosecond (no float): a fraction past 9 digits is refused, not rounded.
    """
    match = _COMMAND_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time with seconds and a zone: {text[:40]!r}")
    fraction = match.group(1) or ""
    whole = dt.datetime.fromisoformat(text[:19] + match.group(2).replace("Z", "+00:00"))
    seconds = int(whole.timestamp())  # whole seconds: exact as a float
    return seconds * 1_000_000_000 + int((fraction[1:] + "000000000")[:9])


def counter_key(kid: str, iss: str | None) -> str:
    """Return the key of the counter a command is checked against: the kid, or kid/iss."""
    return kid if iss is None else f"{kid}/{iss}"


def action_catalogue() -> dict[str, dict[str, Any]]:
    """Return each supported action's role, device kinds and params JSON Schema (2020-12).

    The contract publishes this (issue 20 #8); ``params.priority: emergency`` needs role
    ``broadcast-emergency`` instead of ``broadcast``. Only the CLI and the tests call it: it
    imports pydantic, which the running agent does not (D86).
    """
    from pydantic import TypeAdapter  # noqa: PLC0415 - the JSON Schemas only, never at run time

    return {action: {"role": ACTION_ROLES[action], "kinds": sorted(ACTION_KINDS[action]),
                     "device": action not in GATEWAY_ACTIONS,
                     "params": TypeAdapter(model).json_schema()}
            for action, model in PARAMS.items()}


def role_catalogue() -> dict[str, list[str]]:
    """Return each role (edge.config.ROLES) and the actions it allows."""
    out: dict[str, list[str]] = {role: [] for role in ROLES}
    for action in PARAMS:
        out[ACTION_ROLES[action]].append(action)
    out["broadcast-emergency"] = ["speaker.play_tts (priority emergency)",
                                  "speaker.stop (during an emergency play)"]
    return out


def reason_catalogue() -> dict[str, dict[str, Any]]:
    """Return every ``command_result`` reason: status, authenticated, rate-limited, text."""
    return {reason: {"status": status, "authenticated": authed,
                     "rate_limited": reason in RATE_LIMITED or reason == "suppressed",
                     "description": text}
            for reason, (status, authed, text) in REASONS.items()}


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
        self._emergency_until: dict[str, float] = {}  # device -> monotonic end of the guard

    def set_safety(self, safety: Safety) -> None:
        """Use new safety rules (after a config reload)."""
        self._safety = safety

    async def _load_replay(self) -> None:
        if self._replay_loaded:
            return
        counters = await self.outbox.journal.counters()
        await asyncio.to_thread(functools.partial(
            self.replay.load, counters,
            store_replaced=self.outbox.replaced_corrupt is not None,
            operated_before=await asyncio.to_thread(_audited_before, self.audit_path)))
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
                                  cmd_id_unverified=_unverified_cmd_id(raw)
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
        if body.action == "speaker.play_tts" and getattr(params, "priority", "") == "emergency":
            self._emergency_until[device] = time.monotonic() + EMERGENCY_STOP_GUARD_S
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
            self._reject("bad_body", detail=_field_errors(exc.errors))
        problem = _body_problem(body)
        if problem is not None:
            self._reject("bad_body", body, problem)
        return kid, body

    def _validate(self, kid: str, body: CommandBody) -> tuple[str, Params]:
        role = ACTION_ROLES.get(body.action)
        if role is None:
            self._reject("unknown_action", body)
        if isinstance(body.params, dict) and body.params.get("priority") == "emergency":
            role = "broadcast-emergency"
        if role not in self.keys[kid][1]:
            self._reject("wrong_role", body, f"{body.action} needs role {role}")
        if body.aud != self.config.gateway.id:
            self._reject("wrong_aud", body, f"for {body.aud}")
        kinds = ACTION_KINDS[body.action]  # every action with a role has kinds and params
        if body.action in GATEWAY_ACTIONS:
            try:
                return "", check(PARAMS[body.action], body.params)
            except ShapeError as exc:
                self._reject("bad_params", body, _field_errors(exc.errors))
        try:
            device = self.config.device(body.device or "")
        except KeyError:
            self._reject("unknown_device", body,
                         f"no device {(body.device or '')[:64]!r} on {self.config.gateway.id}")
        if device.kind not in kinds:
            self._reject("unsupported_action", body, f"{device.kind} cannot {body.action}")
        declared = KINDS[device.kind].actions.get(body.action)
        if declared is not None and declared.models is not None and \
                device.model not in declared.models:
            self._reject("unsupported_action", body,
                         f"a {device.model} {device.kind} cannot {body.action}")
        if body.action == "speaker.stop" and \
                self._emergency_until.get(device.name, 0.0) > time.monotonic() and \
                "broadcast-emergency" not in self.keys[kid][1]:
            self._reject("wrong_role", body, "an emergency broadcast may be on air: stopping "
                         "it needs role broadcast-emergency")
        try:
            params = check(PARAMS[body.action], body.params)
        except ShapeError as exc:
            self._reject("bad_params", body, _field_errors(exc.errors))
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
        outcome = Outcome(outcome.status, outcome.reason, _clean(outcome.cmd_id),
                          _clean(outcome.action), _clean(outcome.device), _clean(outcome.detail),
                          outcome.cmd_id_unverified)
        record = {"ts": time.time(), "status": outcome.status, "reason": outcome.reason,
                  "cmd_id": outcome.cmd_id, "action": outcome.action, "device": outcome.device,
                  "detail": outcome.detail}
        data = {"cmd_id": outcome.cmd_id, "action": outcome.action, "status": outcome.status,
                "reason": outcome.reason or None, "detail": outcome.detail}
        if outcome.cmd_id_unverified is not None:
            record["cmd_id_unverified"] = data["cmd_id_unverified"] = outcome.cmd_id_unverified
        await asyncio.to_thread(_append_audit, self.audit_path, record)
        audit_log.info("command %s %s on %s: %s %s", outcome.cmd_id, outcome.action,
                       outcome.device, outcome.status, outcome.reason)
        prio = Prio.CRITICAL if outcome.detail.get("priority") == "emergency" else Prio.ALARM
        if evictable or outcome.reason == "suppressed":
            prio = Prio.STATE  # anyone can cause these: evictable under quota, never an alarm
        await self.outbox.put(Event(
            EventType.COMMAND_RESULT, prio, self.clock.now_ns(), self.clock.quality(),
            device=outcome.device, data=data))


# What a field that fails its pattern must be, in words: a detail never echoes a regex (one
# cut at 120 characters ended mid-pattern, issue 20 re-test #8); the patterns are in the contract.
PATTERN_WORDS = {
    "iat": "must be an RFC 3339 time with seconds and a zone (see contract)",
    "exp": "must be an RFC 3339 time with seconds and a zone (see contract)",
    "cmd_id": "must be a lower-case UUIDv7 (see contract)",
    "iss": "must be 1-64 characters of A-Z a-z 0-9 . _ - (see contract)",
    "sha256": "must be 64 lower-case hex digits",
    "at": "must be HH:MM, sunrise or sunset with an optional +/- minutes offset (see contract)",
}


def _field_errors(errors: list[dict[str, Any]]) -> str:
    """Return the first MAX_FIELD_ERRORS field errors, bounded, and how many more there were."""
    parts = [f"{'.'.join(map(str, e['loc']))[:64]}: {_error_words(e)[:120]}"
             for e in errors[:MAX_FIELD_ERRORS]]
    if len(errors) > MAX_FIELD_ERRORS:
        parts.append(f"+{len(errors) - MAX_FIELD_ERRORS} more")
    return "; ".join(parts)


def _error_words(error: Any) -> str:
    """Return a field error's message; a pattern mismatch in words, never the regex."""
    if error["type"] != "string_pattern_mismatch":
        return str(error["msg"])
    field_name = str(error["loc"][-1]) if error["loc"] else ""
    return PATTERN_WORDS.get(field_name, "does not match its pattern (see contract)")


def _body_problem(body: CommandBody) -> str | None:
    """Return what the body lacks beyond its members' own shapes (bad_body), or None.

    The device a device action needs, none for a gateway action (issue 20 re-test #4); iat and
    exp real times with ``iat < exp <= iat + MAX_COMMAND_LIFETIME_S`` (re-test #9). Checked
    with or without a trusted clock: they relate the body to itself, not to now.
    """
    if body.action in ACTION_KINDS:
        if body.action in GATEWAY_ACTIONS and body.device is not None:
            return f"device: not allowed for {body.action} (it acts on the gateway)"
        if body.action not in GATEWAY_ACTIONS and not body.device:
            return f"device: required for {body.action}"
    return _lifetime_problem(body)


def _lifetime_problem(body: CommandBody) -> str | None:
    try:
        iat_ns = parse_command_time(body.iat)
    except (ValueError, OverflowError):
        return f"iat: {PATTERN_WORDS['iat']}"
    try:
        exp_ns = parse_command_time(body.exp)
    except (ValueError, OverflowError):
        return f"exp: {PATTERN_WORDS['exp']}"
    if exp_ns <= iat_ns:
        return "exp: must be after iat"
    if exp_ns - iat_ns > MAX_COMMAND_LIFETIME_S * 1_000_000_000:
        return f"exp: at most {MAX_COMMAND_LIFETIME_S} s after iat (the command lifetime)"
    return None


def _unverified_cmd_id(raw: bytes) -> str | None:
    """Return the ``cmd_id`` of an envelope's body if it is a UUIDv7, else None; never raises.

    Unverified (no valid signature, or an invalid body): only ever echoed as
    ``cmd_id_unverified``, and only in the one shape a cmd_id has, so nothing else of an
    unauthenticated body is repeated (``raw`` is at most MAX_COMMAND_BYTES).
    """
    try:
        env = json.loads(raw)
        body = json.loads(env["body"]) if isinstance(env, dict) else None
        value = body.get("cmd_id") if isinstance(body, dict) else None
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if isinstance(value, str) and re.fullmatch(UUID7_PATTERN, value):
        return value
    return None


def _clean(value: Any) -> Any:
    """Return ``value`` with every string made encodable (lone surrogates escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _audited_before(path: Path) -> bool:
    """Return whether an audit log (or a rotated one) beside ``path`` has any record.

    The evidence of earlier operation that survives deleting the outbox files: the replay
    state is then lost, not new (issue 19 re-test #2; D66).
    """
    try:
        return any(p.stat().st_size > 0 for p in path.parent.glob(path.name + "*"))
    except OSError:
        return True  # cannot tell: fail closed


def _append_audit(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync: the audit trail survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
