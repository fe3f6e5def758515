"""Capture real messages from a running agent: the examples of docs/contract/.

``python -m tests.contract.capture docs/contract/examples`` starts the demo stack on free ports,
records what travels (batches, state, commands), drives an alarm raise and clear and a few
commands (executed and rejected), and writes one file per kind of message. The examples are
therefore what the gateway really sends; tests/test_contract.py validates them against the
published schemas and captures fresh ones in every run.

The ``suppressed`` summary comes only once the gateway's 60 s rate-limit window has ended: the
command line waits for it (about a minute), the test's fresh capture does not
(``--no-suppressed``, ``capture(..., suppressed=False)``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.security.keys import describe
from edge.security.signing import Ed25519PrivateKey
from edge.transports.mqtt import MqttLink
from hil.commander import send, sign_command
from hil.tilt import set_tilt_local
from tests.contract.stack import GATEWAY, PREFIX, Stack, demo_stack

TILT_DEG = 40.0
# unknown_kid is reported in full 5 times per reason per 60 s window (REJECT_BURST, README §8):
# one more is counted, and the window's end brings the `suppressed` summary
UNKNOWN_KID_BURST = 6
SWITCHES_TRIED = 10  # max_switches_per_min is 4 in devices.yaml: the 5th change is unsafe


@dataclass
class Recording:
    """Every message seen on ``{prefix}/#``, in arrival order."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def bodies(self, leaf: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Return (envelope, decoded body) of each signed message on ``.../{leaf}``."""
        out = []
        for topic, payload in self.messages:
            if topic.endswith(f"/{leaf}"):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    envelope = json.loads(payload)
                    out.append((envelope, json.loads(envelope["body"])))
        return out

    def events(self) -> list[dict[str, Any]]:
        """Return every event of every batch."""
        return [e for _env, body in self.bodies("events") for e in body.get("events", [])]

    def result(self, cmd_id: str | None, reason: str | None = None) -> dict[str, Any] | None:
        """Return the command_result event of ``cmd_id`` (or the last with ``reason``)."""
        found = None
        for event in self.events():
            data = event.get("data") or {}
            if event.get("type") != "command_result":
                continue
            if (cmd_id is not None and data.get("cmd_id") == cmd_id) or \
                    (reason is not None and data.get("reason") == reason):
                found = event
        return found


async def _record(stack: Stack, recording: Recording, ready: asyncio.Event) -> None:
    link = MqttLink(host="127.0.0.1", port=stack.broker.port, client_id="contract-recorder",
                    protocol="5", keepalive_s=10, connect_timeout_s=5, tls=stack.tls())
    try:
        await link.connect()
        await link.subscribe(f"{PREFIX}/#")
        ready.set()
        while True:
            item = await link.inbound.get()
            recording.messages.append((item.topic, item.payload))
    finally:
        await link.close()


async def _until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _command(stack: Stack, envelope: bytes) -> None:
    await send(envelope, host="127.0.0.1", port=stack.broker.port, tls=stack.tls(),
               topic=f"{PREFIX}/{GATEWAY}/cmd")


def _forge(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    doc["body"] = doc["body"].replace('"dim_pct":40', '"dim_pct":41')
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _device_state(recording: Recording, state: str) -> bool:
    return any(e["type"] == "state" and e["data"]["state"] == state for e in recording.events())


async def _until_unsafe(stack: Stack, recording: Recording) -> None:
    """Switch lamp-07 off and on, each result awaited, until the switch-rate rule refuses."""
    for n in range(SWITCHES_TRIED):
        cmd_id, envelope = sign_command(stack.platform_key, gateway=GATEWAY, device="lamp-07",
                                        action="light.set", params={"on": n % 2 == 1})
        await _command(stack, envelope)
        result = await _until(lambda c=cmd_id: recording.result(c), 15, "a light.set result")
        if result["data"]["reason"] == "unsafe":
            return
    raise AssertionError(f"{SWITCHES_TRIED} relay changes in a row, none refused as unsafe")


async def drive(stack: Stack, recording: Recording, *, suppressed: bool = True
                ) -> dict[str, Any]:
    """Drive the stack through what the examples show; return the named examples."""
    await _until(lambda: recording.bodies("state"), 20, "the birth message")
    stranger = Ed25519PrivateKey.generate()  # a key the gateway does not know: unknown_kid
    # early: the summary of the window that starts with the agent comes ~60 s after its start
    for _ in range(UNKNOWN_KID_BURST if suppressed else 1):
        await _command(stack, sign_command(stranger, gateway=GATEWAY, device="lamp-07",
                                           action="light.set", params={"on": True})[1])
    await _until(lambda: any(e["type"] == "reading" for e in recording.events()), 20,
                 "a reading")
    cover = stack.sims.units["manhole-12"]
    set_tilt_local(cover, TILT_DEG)
    await _until(lambda: any((e.get("alarm") or {}).get("state") == "raised"
                             for e in recording.events()), 15, "the alarm raise")
    await _until(lambda: any(s.get("active_alarms") for _e, s in recording.bodies("state")),
                 25, "a state naming the active alarm")
    set_tilt_local(cover, 0.0)
    await _until(lambda: any((e.get("alarm") or {}).get("state") == "cleared"
                             for e in recording.events()), 15, "the alarm clear")
    key = stack.platform_key
    gw = GATEWAY
    executed_id, executed = sign_command(key, gateway=gw, device="lamp-07", action="light.set",
                                         params={"on": True, "dim_pct": 40})
    await _command(stack, executed)
    await _until(lambda: recording.result(executed_id), 15, "the light.set result")
    read_id, read = sign_command(key, gateway=gw, device="manhole-12", action="device.read")
    await _command(stack, read)
    _wrong_id, wrong = sign_command(key, gateway="gw-320508-9999", device="lamp-07",
                                    action="light.set", params={"on": True})
    await _command(stack, wrong)
    _bad_id, bad = sign_command(key, gateway=gw, device="lamp-07", action="light.set",
                                params={"on": True, "dim_pct": 140})
    await _command(stack, bad)
    _old_id, old = sign_command(key, gateway=gw, device="lamp-07", action="light.set",
                                params={"on": True}, iat=dt.datetime.now(dt.UTC)
                                - dt.timedelta(hours=1), ttl_s=60)
    await _command(stack, old)
    await _command(stack, _forge(sign_command(key, gateway=gw, device="lamp-07",
                                              action="light.set",
                                              params={"on": True, "dim_pct": 40})[1]))
    await _command(stack, executed)  # the same envelope again: a replay
    # a device action without its device: the body fails the schema outside /params
    await _command(stack, sign_command(key, gateway=gw, device=None, action="light.set",
                                       params={"on": True})[1])
    for reason in ("wrong_aud", "bad_params", "expired", "bad_signature", "duplicate",
                   "unknown_kid", "bad_body"):
        await _until(lambda r=reason: recording.result(None, r), 15, f"a {reason} result")
    await _until(lambda: recording.result(read_id), 15, "the device.read result")
    await _until_unsafe(stack, recording)
    # the cover stops answering, then answers again: the device's health as state events
    cover.fault = "dead"
    await _until(lambda: _device_state(recording, "offline"), 20, "the cover offline")
    cover.fault = "none"
    await _until(lambda: _device_state(recording, "online"), 20, "the cover online again")
    if suppressed:  # sent at least 60 s after the agent started (its first window's end)
        await _until(lambda: recording.result(None, "suppressed"), 75, "the suppressed summary")
    # a clean stop leaves the retained goodbye
    assert stack.agent is not None
    stack.agent.send_signal(signal.SIGTERM)
    await _until(lambda: any(s.get("online") is False for _e, s in recording.bodies("state")),
                 20, "the goodbye")
    return {"command": executed}


def examples(stack: Stack, recording: Recording, command: bytes) -> dict[str, Any]:
    """Pick one real message of each kind; return file name → JSON document."""
    out: dict[str, Any] = {}
    batches = recording.bodies("events")
    env, _body = next((env, body) for env, body in batches
                      if any(e["type"] == "reading" for e in body["events"]))
    out["events-envelope.json"] = env
    alarm_env = next(env for env, body in batches
                     if any(e["type"] == "alarm" for e in body["events"]))
    out["events-envelope-alarm.json"] = alarm_env
    for event in recording.events():
        kind = event["type"]
        if kind == "alarm":
            kind = f"alarm-{event['alarm']['state']}"
        elif kind == "command_result":
            data = event["data"]
            kind = f"command_result-{data['status']}" + \
                (f"-{data['reason']}" if data.get("reason") else f"-{data['action']}")
        elif kind == "state":
            kind = f"state-{event['data']['state']}"
        out.setdefault(f"event-{kind}.json", event)
    states = recording.bodies("state")
    out["state-birth.json"] = next(env for env, s in states if s.get("online")
                                   and not s.get("active_alarms"))
    out["state-alarm-active.json"] = next(env for env, s in states if s.get("active_alarms"))
    out["state-goodbye.json"] = next(env for env, s in states if s.get("online") is False)
    out["command-envelope.json"] = json.loads(command)
    out["keys.json"] = {
        "gateway": {"gw": GATEWAY, "kid": stack.gateway_kid(),
                    "public_key_hex": stack.gateway_public_hex},
        "platform": {"kid": stack.platform_kid,
                     "public_key_hex": describe(stack.platform_key)["public_key_hex"]},
    }
    return out


async def capture(folder: Path, *, suppressed: bool = True) -> dict[str, Any]:
    """Run the stack in ``folder``; return the examples (the summary too if ``suppressed``)."""
    recording = Recording()
    async with demo_stack(folder) as stack, asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        rec = tg.create_task(_record(stack, recording, ready), name="contract.recorder")
        async with asyncio.timeout(10):
            await ready.wait()
        try:
            driven = await drive(stack, recording, suppressed=suppressed)
        finally:
            rec.cancel()
    return examples(stack, recording, driven["command"])


def write(out_dir: Path, docs: dict[str, Any]) -> None:
    """Write the examples, one indented JSON file each (raw UTF-8)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in sorted(docs.items()):
        (out_dir / name).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n",
                                    encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Capture into the given folder (docs/contract/examples)."""
    parser = argparse.ArgumentParser(prog="python -m tests.contract.capture")
    parser.add_argument("out", type=Path)
    parser.add_argument("--work", type=Path, default=Path("var/contract-capture"))
    parser.add_argument("--no-suppressed", action="store_true",
                        help="do not wait ~60 s for the suppressed summary")
    args = parser.parse_args(argv)
    docs = asyncio.run(capture(args.work.resolve(), suppressed=not args.no_suppressed))
    write(args.out, docs)
    print(f"{len(docs)} examples written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
