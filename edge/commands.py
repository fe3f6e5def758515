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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality, parse_rfc3339
from edge.config import EdgeConfig, LightStep, PlatformKey
from edge.errors import CommandRejectedError, DeviceError
from edge.model import UUID7_PATTERN, Event, EventType, Prio
from edge.uplink.signing import (
    Ed25519PublicKey,
    SignatureError,
    kid_of,
    open_envelope,
    public_key_from_raw,
)

log = logging.getLogger(__name__)
audit_log = logging.getLogger("edge.audit")

MAX_COMMAND_BYTES = 8 * 1024
IAT_SKEW_S = 60.0
EXECUTE_TIMEOUT_S = 10.0
ACTION_ROLES = {
    "light.set": "lighting", "light.schedule": "lighting",
    "speaker.play_tts": "broadcast", "speaker.play_clip": "broadcast", "speaker.stop": "broadcast",
    "gps.set_interval": "config", "device.read": "read", "agent.reload_config": "config",
}
ACTION_KINDS: dict[str, frozenset[str]] = {
    "light.set": frozenset({"streetlight"}), "light.schedule": frozenset({"streetlight"}),
    "speaker.play_tts": frozenset({"loudspeaker"}), "speaker.play_clip": frozenset({"loudspeaker"}),
    "speaker.stop": frozenset({"loudspeaker"}), "gps.set_interval": frozenset({"gps"}),
    "device.read": frozenset({"manhole_tilt", "streetlight", "loudspeaker", "gps"}),
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LightSet(_Params):
    """``light.set``: switch and dim."""

    on: bool
    dim_pct: int = Field(default=100, ge=0, le=100)


class LightSchedule(_Params):
    """``light.schedule``: replace the lamp's stored schedule (it runs on the gateway)."""

    steps: list[LightStep] = Field(min_length=1, max_length=24)


class PlayTts(_Params):
    """``speaker.play_tts``: speak a text."""

    text: str = Field(min_length=1, max_length=200)
    volume: int = Field(default=8, ge=0, le=16)
    priority: Literal["normal", "emergency"] = "normal"


class PlayClip(_Params):
    """``speaker.play_clip``: play an allow-listed audio clip."""

    clip: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    volume: int = Field(default=8, ge=0, le=16)


class NoParams(_Params):
    """Actions without parameters."""


PARAMS: dict[str, type[_Params]] = {
    "light.set": LightSet, "light.schedule": LightSchedule,
    "speaker.play_tts": PlayTts, "speaker.play_clip": PlayClip,
    "speaker.stop": NoParams,
    "device.read": NoParams,
}


class CommandBody(BaseModel):
    """The signed body of a command."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cmd_id: str = Field(pattern=UUID7_PATTERN)
    aud: str
    device: str | None = None
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    iat: str
    exp: str
    ctr: int = Field(ge=0)


@dataclass(frozen=True)
class Outcome:
    """How a command ended."""

    status: str  # executed | rejected | failed | unknown
    reason: str = ""
    cmd_id: str | None = None
    action: str | None = None
    device: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


Executor = Callable[[str, str, _Params, str | None], Awaitable[dict[str, Any]]]
Safety = Callable[[str, str, _Params, set[str]], str | None]


def load_platform_keys(config: EdgeConfig, base_dir: Path
                       ) -> dict[str, tuple[Ed25519PublicKey, frozenset[str]]]:
    """Return kid → (key, roles) from devices.yaml and ``platform_keys_file``."""
    entries: dict[str, PlatformKey] = dict(config.gateway.platform_keys)
    file = config.gateway.platform_keys_file
    if file is not None:
        path = Path(file) if Path(file).is_absolute() else base_dir / file
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            for kid, entry in raw.items():
                entries[kid] = PlatformKey.model_validate(entry)
        except FileNotFoundError:
            log.warning("no platform keys file %s: every command will be refused", path)
        except (ValueError, ValidationError) as exc:
            log.error("platform keys file %s is invalid (%s): every command will be refused",  # noqa: TRY400
                      path, exc)
    out: dict[str, tuple[Ed25519PublicKey, frozenset[str]]] = {}
    for kid, entry in entries.items():
        key = public_key_from_raw(bytes.fromhex(entry.public_key_hex))
        if kid_of(key) != kid:
            log.error("platform key %s does not match its kid (%s); ignored", kid, kid_of(key))
            continue
        out[kid] = (key, frozenset(entry.roles))
    return out


def _journal_claim(store: Outbox, body: CommandBody, kid: str, now_ns: int) -> str | None:
    """Check 4 and record the command, atomically (runs on the store's thread)."""
    if store.query("SELECT 1 FROM commands WHERE cmd_id=?", (body.cmd_id,)):
        return "duplicate"
    row = store.query("SELECT ctr FROM command_counters WHERE kid=?", (kid,))
    if row and body.ctr <= int(row[0][0]):
        return "counter_rollback"
    store.execute_tx([
        ("INSERT INTO commands (cmd_id, kid, ctr, action, device, state, received_ns, "
         "updated_ns) VALUES (?, ?, ?, ?, ?, 'received', ?, ?)",
         (body.cmd_id, kid, body.ctr, body.action, body.device, now_ns, now_ns)),
        ("INSERT INTO command_counters (kid, ctr) VALUES (?, ?) ON CONFLICT(kid) DO UPDATE "
         "SET ctr = excluded.ctr", (kid, body.ctr)),
    ])
    return None


def _journal_set(store: Outbox, cmd_id: str, state: str, reason: str) -> None:
    store.execute_tx([("UPDATE commands SET state=?, reason=?, updated_ns=? WHERE cmd_id=?",
                       (state, reason, time.time_ns(), cmd_id))])


def _journal_recover(store: Outbox) -> list[tuple[str, str, str | None]]:
    rows = store.query("SELECT cmd_id, action, device FROM commands WHERE state IN "
                       "('received', 'executing')")
    store.execute_tx([("UPDATE commands SET state='unknown', updated_ns=? WHERE state IN "
                       "('received', 'executing')", (time.time_ns(),))])
    return [(str(c), str(a), d) for c, a, d in rows]


class CommandProcessor:
    """Runs the checks, the journal and the execution of downlink commands."""

    def __init__(self, config: EdgeConfig, outbox: AsyncOutbox, clock: Clock, *,
                 keys: dict[str, tuple[Ed25519PublicKey, frozenset[str]]],
                 execute: Executor, safety: Safety, audit_path: Path) -> None:
        self.config = config
        self.outbox = outbox
        self.clock = clock
        self.keys = keys
        self._execute = execute
        self._safety = safety
        self.audit_path = audit_path
        self.counts: dict[str, int] = {}
        self._lock = asyncio.Lock()  # one command at a time: the journal order is the order

    def set_safety(self, safety: Safety) -> None:
        """Use new safety rules (after a config reload)."""
        self._safety = safety

    async def recover(self) -> list[Outcome]:
        """Report commands a crash interrupted as ``unknown`` (never re-run them)."""
        lost = await self.outbox.call(_journal_recover, self.outbox.store)
        outcomes = [Outcome("unknown", "interrupted by a restart", c, a, d) for c, a, d in lost]
        for outcome in outcomes:
            await self._report(outcome)
        return outcomes

    async def handle(self, raw: bytes) -> Outcome:
        """Process one command envelope; never raises for a bad command."""
        async with self._lock:
            try:
                outcome = await self._process(raw)
            except CommandRejectedError as exc:
                outcome = Outcome("rejected", exc.reason, exc.cmd_id, exc.action, exc.device,
                                  detail={"detail": exc.detail} if exc.detail else {})
            await self._report(outcome)
            return outcome

    @staticmethod
    def _reject(reason: str, body: CommandBody | None = None, detail: str = "") -> NoReturn:
        if body is None:
            raise CommandRejectedError(reason, detail)
        raise CommandRejectedError(reason, detail, cmd_id=body.cmd_id, action=body.action,
                                   device=body.device)

    async def _process(self, raw: bytes) -> Outcome:
        kid, body = self._verify(raw)  # check 1 (signature, kid)
        device, params = self._validate(kid, body)  # checks 1 (role) and 2
        time_checked = self._check_fresh(body)  # check 3
        reason = await self.outbox.call(_journal_claim, self.outbox.store, body, kid,
                                        time.time_ns())  # check 4
        if reason is not None:
            self._reject(reason, body)
        unsafe = self._safety(device, body.action, params, set(self.keys[kid][1]))  # check 5
        if unsafe is not None:
            await self._journal(body.cmd_id, "rejected", unsafe)
            self._reject("unsafe", body, unsafe)
        await self._journal(body.cmd_id, "executing", "")
        try:
            async with asyncio.timeout(EXECUTE_TIMEOUT_S):
                detail = await self._execute(device, body.action, params, body.cmd_id)
        except (DeviceError, TimeoutError) as exc:
            await self._journal(body.cmd_id, "failed", str(exc))
            return Outcome("failed", str(exc) or "timed out", body.cmd_id, body.action, device)
        await self._journal(body.cmd_id, "done", "")
        if not time_checked:
            detail = {**detail, "note": "clock unsynced: only the counter checked freshness"}
        return Outcome("executed", "", body.cmd_id, body.action, device, detail)

    async def _journal(self, cmd_id: str, state: str, reason: str) -> None:
        await self.outbox.call(_journal_set, self.outbox.store, cmd_id, state, reason)

    def _verify(self, raw: bytes) -> tuple[str, CommandBody]:
        if len(raw) > MAX_COMMAND_BYTES:
            self._reject("oversized", detail=f"{len(raw)} bytes > {MAX_COMMAND_BYTES}")
        keys = {kid: key for kid, (key, _roles) in self.keys.items()}
        try:
            kid, body_bytes = open_envelope(raw, keys)
        except SignatureError as exc:
            self._reject("unknown_kid" if "unknown kid" in str(exc) else "bad_signature",
                         detail=str(exc))
        try:
            return kid, CommandBody.model_validate_json(body_bytes)
        except ValidationError as exc:
            self._reject("bad_body", detail=f"{exc.error_count()} errors")

    def _validate(self, kid: str, body: CommandBody) -> tuple[str, _Params]:
        role = ACTION_ROLES.get(body.action)
        if role is None:
            self._reject("unknown_action", body)
        if body.params.get("priority") == "emergency":
            role = "broadcast-emergency"
        if role not in self.keys[kid][1]:
            self._reject("wrong_role", body, f"{body.action} needs role {role}")
        if body.aud != self.config.gateway.id:
            self._reject("wrong_aud", body, f"for {body.aud}")
        kinds = ACTION_KINDS.get(body.action)
        if kinds is None or body.action not in PARAMS:
            self._reject("unsupported_action", body)
        try:
            device = self.config.device(body.device or "")
        except KeyError:
            self._reject("unknown_device", body)
        if device.kind not in kinds:
            self._reject("unsupported_action", body, f"{device.kind} cannot {body.action}")
        try:
            return device.name, PARAMS[body.action].model_validate(body.params)
        except ValidationError as exc:
            self._reject("bad_params", body, "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    def _check_fresh(self, body: CommandBody) -> bool:
        """Return False when the clock cannot judge freshness (the counter stands alone)."""
        if self.clock.quality() is TimeQuality.UNSYNCED:
            return False
        now_ns = self.clock.now_ns()
        try:
            exp_ns, iat_ns = parse_rfc3339(body.exp), parse_rfc3339(body.iat)
        except ValueError:
            self._reject("bad_body", body, "iat/exp are not RFC 3339")
        if exp_ns <= now_ns:
            self._reject("expired", body, f"expired at {body.exp}")
        if iat_ns > now_ns + IAT_SKEW_S * 1e9:
            self._reject("iat_in_future", body, f"issued at {body.iat}")
        return True

    async def _report(self, outcome: Outcome) -> None:
        key = outcome.status if outcome.status != "rejected" else f"rejected.{outcome.reason}"
        self.counts[key] = self.counts.get(key, 0) + 1
        record = {"ts": time.time(), "status": outcome.status, "reason": outcome.reason,
                  "cmd_id": outcome.cmd_id, "action": outcome.action, "device": outcome.device,
                  "detail": outcome.detail}
        await asyncio.to_thread(_append_audit, self.audit_path, record)
        audit_log.info("command %s %s on %s: %s %s", outcome.cmd_id, outcome.action,
                       outcome.device, outcome.status, outcome.reason)
        prio = Prio.CRITICAL if outcome.detail.get("priority") == "emergency" else Prio.ALARM
        await self.outbox.put(Event(
            EventType.COMMAND_RESULT, prio, self.clock.now_ns(), self.clock.quality(),
            device=outcome.device,
            data={"cmd_id": outcome.cmd_id, "action": outcome.action, "status": outcome.status,
                  "reason": outcome.reason or None, "detail": outcome.detail}))


def _append_audit(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync: the audit trail survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
