"""Receiver logic: verify, validate, dedup, detect seq gaps, open and close cases.

Every input is hostile until verified (security review 19 #4): a payload that is not JSON,
not UTF-8, too large, too deep or of the wrong shape is a counted rejection (``rejected.*``
counters) and the receiver keeps running. Cases open only from signed data: a verified batch,
or a ``state`` message in the same Ed25519 envelope (docs/decisions.md D39); a plain-JSON
state (an older agent) updates the gateway's presence only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypeVar

from edge.security.signing import (
    Ed25519PublicKey,
    SignatureError,
    kid_of,
    public_key_from_raw,
    verify_envelope,
)
from hil.receiver.schemas import errors as contract_errors
from hil.receiver.store import WILL_N, ReceiverStore

log = logging.getLogger("hil.receiver")

# batch_max_bytes is at most 16 MiB and the body travels JSON-escaped inside the envelope
MAX_EVENTS_BYTES = 40 * 1024 * 1024
TRACEBACK_EVERY_S = 60.0  # the catch-all logs a traceback per error type at most this often
MAX_TRACEBACK_KINDS = 64
MAX_STATE_BYTES = 256 * 1024  # a state message is a few hundred bytes per active alarm
BATCH_ATTEMPTS = 3  # a batch (or a group) that meets a deadlock or a lock timeout runs again


class Store(Protocol):
    """What the receiver needs of a store: SQLite (``store.py``) or PostgreSQL (``pg_store.py``)."""

    def transaction(self) -> AbstractContextManager[None]:
        """Run the block in one transaction."""

    def retryable(self, exc: BaseException) -> bool:
        """Whether a batch that failed with ``exc`` may run again."""

    def failed(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the store's own failure (its driver's error), not the message's."""

    def bump(self, name: str, n: int = 1) -> None:
        """Add to a counter."""

    def add_events(self, gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        """Store a batch's events; return which were new."""

    def open_case(self, gw: str, event: dict[str, Any]) -> int | None:
        """Open the case of an alarm raise; its number, None if it has one."""

    def close_case(self, alarm_id: str, ts: str) -> int | None:
        """Close the case of ``alarm_id``; its number, None if none was open."""

    def set_gateway(self, gw: str, online: bool, state: dict[str, Any],
                    order: StateOrder | None = None) -> bool:
        """Record a gateway's state unless a newer one is stored; whether it was recorded."""

    def gateway(self, gw: str) -> dict[str, Any] | None:
        """Return one gateway with its last state, None if it never sent one."""

    def announce_gap(self, gw: str, first_seq: int, last_seq: int, reason: str) -> None:
        """Record a range the gateway said it dropped."""


@dataclass(frozen=True)
class StateOrder:
    """Where a signed state stands among its gateway's (contract 1.1.1 ``order``).

    Within one ``boot_id`` states sort by (``conn_ms``, ``n``); the last will has
    ``n == WILL_N``. A shared subscription does not keep one topic's order across receivers,
    so a birth and a change, or a will and a birth, commit in either order: the stores keep
    the newest (``WHERE`` of their upsert), never the last written.
    """

    boot_id: str
    conn_ms: int
    n: int

    @property
    def will(self) -> bool:
        """Whether this is a last will (after everything of its connection)."""
        return self.n == WILL_N


def _new_session(known: dict[str, Any] | None, order: StateOrder | None) -> bool:
    """Whether a signed state opens a connection the stored one was not from.

    A gateway and its broker stopped together (``make demo`` ended) leave no will behind: the
    store still says online, and the next start would pass unannounced.
    """
    if known is None or order is None:
        return False
    state = known.get("state") or {}
    stored = state.get("order") or [None]
    return (state.get("boot_id"), stored[0]) != (order.boot_id, order.conn_ms)


# SQLite unless told: tests and the web page then see the concrete store's extra methods
StoreT = TypeVar("StoreT", bound=Store, default=ReceiverStore)


class RejectedError(ValueError):
    """A message the receiver refuses; ``counter`` names the ``rejected.*`` counter."""

    def __init__(self, counter: str, reason: str) -> None:
        super().__init__(reason)
        self.counter = counter


# StateAlarm and GatewayState read only the unsigned JSON state of agents before D39 (contract
# 1.0), never a signed one: those are checked against the published gateway-state schema in
# _state. They are not that schema on purpose: a 1.0 will is `{"online":false}` without the gw
# and boot_id the schema requires, and a 1.0 state may carry members the closed schema forbids,
# so the schema would refuse old gateways; and an unsigned state is read for presence (`online`)
# only, never opens a case, and is no part of the published contract (README §6 documents
# signed states only). Not a second definition of a published message; remove both when 1.0
# gateways are no longer accepted.
class StateAlarm(BaseModel):
    """An active alarm in a plain-JSON state (an agent before D39; never opens a case)."""

    model_config = ConfigDict(strict=True, extra="allow")
    alarm_id: str = Field(min_length=1, max_length=256)
    kind: str = Field(min_length=1, max_length=64)
    device: str | None = Field(default=None, max_length=128)
    event_class: str | None = Field(default=None, max_length=16)
    value: float | None = None


class GatewayState(BaseModel):
    """A plain-JSON state of an agent before D39 (contract 1.0): read for presence only.

    A signed state is checked against the published schema (edge/contract, gateway-state).
    """

    model_config = ConfigDict(strict=True, extra="allow")
    online: bool
    gw: str | None = None
    outbox: dict[str, Any] | None = None
    active_alarms: list[StateAlarm] = Field(default_factory=list, max_length=10_000)


def _json(raw: bytes | str, counter: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RejectedError(counter, f"not JSON: {type(exc).__name__}") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would take NaN and Infinity


def _contract_doc(name: str, raw: bytes | str, counter: str) -> Any:
    """Parse ``raw`` and check it against the published schema ``name`` (edge/contract)."""
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RejectedError(counter, f"not JSON: {type(exc).__name__}") from exc
    problems = contract_errors(name, doc)
    if problems:
        raise RejectedError(counter, f"{name} schema: {'; '.join(problems)}")
    return doc


@dataclass
class Outcome:
    """What one message did (tests assert on it)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: str = ""
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


def load_gateway_keys(mapping: dict[str, str]) -> dict[str, Ed25519PublicKey]:
    """Return gateway id → public key from gateway id → raw public key hex."""
    return {gw: public_key_from_raw(bytes.fromhex(hex_key)) for gw, hex_key in mapping.items()}


class Receiver(Generic[StoreT]):
    """Handles messages from ``{prefix}/{gw}/events`` and ``{prefix}/{gw}/state``."""

    def __init__(self, store: StoreT, gateway_keys: dict[str, Ed25519PublicKey], *,
                 echo: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.keys = gateway_keys
        self.echo = echo or (lambda _line: None)
        self._traceback_at: dict[str, float] = {}  # error type -> monotonic s of its last one
        self._in_group = False  # inside handle_many's group: the group retries, not a batch

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Process one message: a bad one is a counted rejection (to acknowledge).

        Raises the store's failures (down, locked, deadlocked with retries exhausted): the
        message is not refused, so the caller must not acknowledge it (MQTT: the broker sends
        it again; HTTPS: 503, the gateway retries and never dead-letters it).
        """
        parts = topic.split("/")
        if len(parts) < 3:
            return self._reject(RejectedError("rejected.topic", "bad topic"))
        gw, leaf = parts[-2], parts[-1]
        limit = {"state": MAX_STATE_BYTES, "events": MAX_EVENTS_BYTES}.get(leaf)
        if limit is None:
            return self._reject(RejectedError("rejected.topic", "unknown topic"))
        if len(payload) > limit:
            return self._reject(RejectedError("rejected.too_large",
                                              f"{len(payload)} bytes > {limit}"))
        try:
            return self._state(gw, payload) if leaf == "state" else self._events(gw, payload)
        except RejectedError as exc:
            return self._reject(exc)
        except Exception as exc:  # one bad message must not stop the receiver
            return self._failure(topic, exc)

    def _failure(self, topic: str, exc: Exception) -> Outcome:
        """Refuse a message whose handling failed, or re-raise when the store itself failed."""
        if self.store.failed(exc) and (self._in_group or not self._refused(exc)):
            # the store failed, not the message: a rejection would be acknowledged and the
            # signed batch lost (a lock timeout was rejected.malformed: review of 18-20).
            # In a group the group fails, and one by one decides message by message.
            raise exc
        self._log_failure(topic, exc)
        if self.store.failed(exc):
            # the store refuses this message's data, and would every time: a poison message
            # is counted and acknowledged, or it stalls the subscription for ever
            return self._reject(RejectedError("rejected.store_refused",
                                              f"store refused: {type(exc).__name__}"))
        return self._reject(RejectedError("rejected.malformed",
                                          f"malformed: {type(exc).__name__}"))

    def _log_failure(self, topic: str, exc: Exception) -> None:
        """Log a traceback once per error type per minute; all are counted.

        A hostile sender repeating the same message must not write ~15 lines each time
        (issue 19 re-test #4).
        """
        kind = type(exc).__name__
        now = time.monotonic()
        if now - self._traceback_at.get(kind, -TRACEBACK_EVERY_S) < TRACEBACK_EVERY_S:
            log.debug("receiver: a message on %s failed (%s)", topic, kind)
            return
        if len(self._traceback_at) >= MAX_TRACEBACK_KINDS:
            self._traceback_at.clear()
        self._traceback_at[kind] = now
        log.error("receiver: a message on %s failed (tracebacks of %s at most once a minute; "
                  "every one is counted in rejected.malformed)", topic, kind, exc_info=exc)

    def _refused(self, exc: BaseException) -> bool:
        check = getattr(self.store, "refused", None)
        return bool(check(exc)) if check is not None else False

    def _unavailable(self, exc: BaseException) -> bool:
        check = getattr(self.store, "unavailable", None)
        return bool(check(exc)) if check is not None else False

    def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        """Process several messages; with a store that can, in one transaction (one commit).

        Each message is still accepted or refused on its own (a savepoint each). If the group
        fails as a whole, nothing of it was stored. A deadlock or lock timeout runs the whole
        group again (its rollback released our locks; retrying one savepoint kept them and
        met the same deadlock). With retries exhausted or the store down the error propagates:
        the caller must not acknowledge any of these messages (the broker sends them again).
        Any other failure of the group: one by one, so one poison message cannot block the
        others forever.
        """
        group = getattr(self.store, "group", None)
        if group is None or len(messages) < 2:
            return [self.handle(topic, payload) for topic, payload in messages]
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            self._in_group = True
            try:
                with group():
                    return [self.handle(topic, payload) for topic, payload in messages]
            except Exception as exc:
                if self.store.retryable(exc) and attempt < BATCH_ATTEMPTS:
                    self.store.bump("store.retries")
                    continue
                if self.store.retryable(exc) or self._unavailable(exc):
                    raise
                log.warning("receiver: a group of %d failed (%s); one by one", len(messages),
                            type(exc).__name__)
                self.store.bump("store.group_failures")
                break
            finally:
                self._in_group = False
        return [self.handle(topic, payload) for topic, payload in messages]

    def _reject(self, exc: RejectedError) -> Outcome:
        self.store.bump(exc.counter)
        return Outcome(rejected=str(exc))

    def _verified_body(self, gw: str, payload: bytes) -> bytes:
        key = self.keys.get(gw)
        if key is None:
            raise RejectedError("rejected.unknown_gateway", f"unknown gateway {gw}")
        # the published envelope schema: canonical sig, and no ``enc`` (v2 is not emitted yet:
        # an envelope whose enc we do not know is refused, never read as v1)
        envelope = _contract_doc("envelope", payload, "rejected.signature")
        try:
            # parsed once: the envelope carries the whole batch body as a string
            _kid, body = verify_envelope(envelope, {kid_of(key): key})
        except SignatureError as exc:
            log.warning("rejected a message of %s: %s", gw, exc)
            raise RejectedError("rejected.signature", str(exc)) from exc
        return body

    def _state(self, gw: str, payload: bytes) -> Outcome:
        if gw not in self.keys:
            # a plain state was taken from any id: anyone with publish rights on +/state
            # created gateway rows without limit (review of issues 18-20 #3)
            raise RejectedError("rejected.unknown_gateway", f"state of unknown gateway {gw}")
        doc = _json(payload, "rejected.state")
        signed = isinstance(doc, dict) and "sig" in doc
        alarms: list[dict[str, Any]] = []
        order: StateOrder | None = None
        if signed:  # the agent's envelope (D39); a bad one is refused, not read as plain
            doc = _contract_doc("state", self._verified_body(gw, payload), "rejected.state")
            if doc["gw"] != gw:
                raise RejectedError("rejected.gateway_mismatch",
                                    f"state of {doc['gw']} on topic of {gw}")
            online, alarms = bool(doc["online"]), doc.get("active_alarms", [])
            if "order" in doc:  # the schema checked its shape: [conn_ms, n]
                order = StateOrder(str(doc["boot_id"]), int(doc["order"][0]),
                                   int(doc["order"][1]))
        known = self.store.gateway(gw)  # one row (it read every gateway per message)
        if not signed:
            if known is not None and (known.get("state") or {}).get("signed"):
                # downgrade protection (issue 19 re-test #5): a gateway that signs its state
                # never sends a plain one, so an unsigned `{"online": false}` is a forgery
                raise RejectedError("rejected.unsigned_state",
                                    f"unsigned state for {gw}, which signs its state")
            try:
                online = GatewayState.model_validate(doc).online
            except ValidationError as exc:
                raise RejectedError("rejected.state",
                                    f"state: {exc.error_count()} errors") from exc
            self.store.bump("state.unsigned")
        before = known["online"] if known is not None else None
        out = Outcome()
        if not self.store.set_gateway(gw, online, {**doc, "signed": signed}, order):
            self.store.bump("state.stale")  # a newer state of this gateway is stored
            return out
        # an alarm the gateway still holds but we never saw raised: open its case now, only
        # on the gateway's signed word (a forged state opened cases: security review 19 #4)
        for alarm in alarms:
            case = self.store.open_case(gw, {"alarm": alarm, "device": alarm["device"],
                                             "ts": dt.datetime.now(dt.UTC).isoformat()})
            if case is not None:
                out.opened.append(case)
                self.store.bump("alarms.reannounced")
                self.echo(f"ALARM {alarm['kind']} on {alarm['device']} re-announced by "
                          f"{gw} -> case #{case} opened ({alarm['alarm_id']})")
        if before != online or (online and _new_session(known, order)):
            depth = (doc.get("outbox") or {}).get("depth", "?")
            self.echo(f"gateway {gw} {'online' if online else 'OFFLINE'}"
                      + (f" (outbox {depth})" if online else ""))
        return out

    def _events(self, gw: str, payload: bytes) -> Outcome:
        body = self._verified_body(gw, payload)
        batch = _contract_doc("batch", body, "rejected.schema")
        if batch["gw"] != gw:
            raise RejectedError("rejected.gateway_mismatch",
                                f"batch for {batch['gw']} on topic of {gw}")
        raw_events = batch["events"]
        # in a group this is a savepoint: the outer transaction keeps its locks, so a retry here
        # would meet the same deadlock; the group fails and runs again as a whole
        attempts = 1 if self._in_group else BATCH_ATTEMPTS
        for attempt in range(1, attempts + 1):
            out = Outcome()
            try:
                # one transaction: nothing of a refused batch is half-stored, and the events
                # a batch really added are the ones that open and close cases
                with self.store.transaction():
                    for event, new in zip(raw_events, self.store.add_events(gw, raw_events),
                                          strict=True):
                        if not new:
                            out.duplicates += 1
                            continue
                        out.accepted += 1
                        self._apply(gw, event, out)
                    self.store.bump("events.accepted", out.accepted)
                    self.store.bump("events.duplicates", out.duplicates)
            except Exception as exc:
                # two receivers sharing a database can deadlock or time out on a lock: the
                # database rolled the batch back, so running it again is safe
                if attempt == attempts or not self.store.retryable(exc):
                    raise
                self.store.bump("store.retries")
                continue
            break
        return out

    def _apply(self, gw: str, event: dict[str, Any], out: Outcome) -> None:
        alarm = event.get("alarm")
        if event.get("type") == "gap":
            data = event.get("data") or {}
            first, last = data.get("first_seq", 0), data.get("last_seq", 0)
            if not isinstance(first, int) or not isinstance(last, int):
                raise RejectedError("rejected.schema", "gap: first_seq and last_seq must be "
                                                       "integers")
            self.store.announce_gap(gw, first, last, str(data.get("reason")))
            self.echo(f"gap announced by {gw}: {data}")
        if not isinstance(alarm, dict):
            return
        asset = event.get("asset") or {}
        where = f"{event.get('device') or gw} {asset.get('name') or ''}".strip()
        if alarm["state"] == "raised":
            case = self.store.open_case(gw, event)
            if case is not None:
                out.opened.append(case)
                self.echo(f"ALARM {alarm['kind']} raised on {where}: value {alarm.get('value')} "
                          f"threshold {alarm.get('threshold')} {alarm.get('unit') or ''} "
                          f"-> case #{case} opened ({alarm['alarm_id']})")
        else:
            case = self.store.close_case(str(alarm["alarm_id"]), str(event["ts"]))
            if case is not None:
                out.closed.append(case)
                self.echo(f"alarm {alarm['kind']} cleared on {where} -> case #{case} closed")
