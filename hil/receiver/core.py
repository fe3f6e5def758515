"""Receiver logic: verify, validate, dedup, detect seq gaps, open and close cases."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from edge.model import WireBatch
from edge.uplink.signing import (
    Ed25519PublicKey,
    SignatureError,
    kid_of,
    open_envelope,
    public_key_from_raw,
)
from hil.receiver.store import ReceiverStore

log = logging.getLogger("hil.receiver")


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


class Receiver:
    """Handles messages from ``{prefix}/{gw}/events`` and ``{prefix}/{gw}/state``."""

    def __init__(self, store: ReceiverStore, gateway_keys: dict[str, Ed25519PublicKey], *,
                 echo: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.keys = gateway_keys
        self.echo = echo or (lambda _line: None)

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Process one message."""
        parts = topic.split("/")
        if len(parts) < 3:
            return Outcome(rejected="bad topic")
        gw, leaf = parts[-2], parts[-1]
        if leaf == "state":
            return self._state(gw, payload)
        if leaf == "events":
            return self._events(gw, payload)
        return Outcome(rejected="unknown topic")

    def _state(self, gw: str, payload: bytes) -> Outcome:
        try:
            state = json.loads(payload)
        except ValueError:
            return Outcome(rejected="bad state json")
        online = bool(state.get("online"))
        before = {g["gw"]: g["online"] for g in self.store.gateways()}.get(gw)
        self.store.set_gateway(gw, online, state)
        for alarm in state.get("active_alarms") or []:
            # an alarm the gateway still holds but we never saw raised: open its case now
            if isinstance(alarm, dict) and alarm.get("alarm_id") and alarm.get("kind"):
                case = self.store.open_case(gw, {"alarm": alarm, "device": alarm.get("device"),
                                                 "ts": dt.datetime.now(dt.UTC).isoformat()})
                if case is not None:
                    self.store.bump("alarms.reannounced")
                    self.echo(f"ALARM {alarm['kind']} on {alarm.get('device')} re-announced by "
                              f"{gw} -> case #{case} opened ({alarm['alarm_id']})")
        if before != online:
            depth = (state.get("outbox") or {}).get("depth", "?")
            self.echo(f"gateway {gw} {'online' if online else 'OFFLINE'}"
                      + (f" (outbox {depth})" if online else ""))
        return Outcome()

    def _events(self, gw: str, payload: bytes) -> Outcome:
        key = self.keys.get(gw)
        if key is None:
            self.store.bump("rejected.unknown_gateway")
            return Outcome(rejected=f"unknown gateway {gw}")
        try:
            _kid, body = open_envelope(payload, {kid_of(key): key})
            batch = WireBatch.model_validate_json(body)
        except SignatureError as exc:
            self.store.bump("rejected.signature")
            log.warning("rejected a batch on %s: %s", gw, exc)
            return Outcome(rejected=str(exc))
        except ValidationError as exc:
            self.store.bump("rejected.schema")
            return Outcome(rejected=f"schema: {exc.error_count()} errors")
        if batch.gw != gw:
            self.store.bump("rejected.gateway_mismatch")
            return Outcome(rejected=f"batch for {batch.gw} on topic of {gw}")
        raw_events = json.loads(body)["events"]
        out = Outcome()
        self.store.db.execute("BEGIN")
        try:
            for event in raw_events:
                if not self.store.add_event(gw, event):
                    out.duplicates += 1
                    continue
                out.accepted += 1
                self._apply(gw, event, out)
            self.store.bump("events.accepted", out.accepted)
            self.store.bump("events.duplicates", out.duplicates)
            self.store.db.execute("COMMIT")
        except BaseException:
            self.store.db.execute("ROLLBACK")
            raise
        return out

    def _apply(self, gw: str, event: dict[str, object], out: Outcome) -> None:
        alarm = event.get("alarm")
        if event.get("type") == "gap":
            data = event.get("data") or {}
            assert isinstance(data, dict)
            self.store.announce_gap(gw, int(data.get("first_seq", 0)),
                                    int(data.get("last_seq", 0)), str(data.get("reason")))
            self.echo(f"gap announced by {gw}: {data}")
        if not isinstance(alarm, dict):
            return
        asset = event.get("asset") or {}
        assert isinstance(asset, dict)
        where = f"{event.get('device') or gw} {asset.get('name', '')}".strip()
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
