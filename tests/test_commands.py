"""Downlink commands (reliability.md R13): every forged, replayed, stale or unsafe command is
rejected with its reason, counted, audited and not executed; a valid one executes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import re
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.command_journal import Claim
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality
from edge.commands.processor import PARAMS, CommandProcessor, Outcome, load_platform_keys
from edge.commands.safety import SafetyRules
from edge.config import DEVICE_MODELS
from edge.config_loader import load_config
from edge.drivers.factory import KINDS
from edge.drivers.kind import NoParams
from edge.drivers.loudspeaker import PlayClip, PlayTts
from edge.drivers.streetlight import LightSchedule, LightSet
from edge.kinds.streetlight import StreetlightDevice
from edge.security.signing import Ed25519PrivateKey
from edge.shape_check import check
from hil.commander import register, sign_command
from tests.figures import figure
from tests.outbox_sql import sql_rows, store_of

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
GW = "gw-320508-0007"
NOON_LOCAL = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)  # 12:00 in UTC+8


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.lighting = Ed25519PrivateKey.generate()
        self.broadcast = Ed25519PrivateKey.generate()
        self.emergency = Ed25519PrivateKey.generate()
        self.unknown = Ed25519PrivateKey.generate()
        keys_file = tmp_path / "platform-keys.json"
        register(keys_file, self.lighting, ["lighting", "read"])
        register(keys_file, self.broadcast, ["broadcast"])
        register(keys_file, self.emergency, ["broadcast", "broadcast-emergency"])
        text = (ROOT / "devices.yaml").read_text(encoding="utf-8").replace(
            "platform_keys_file: var/platform-keys.json", f"platform_keys_file: {keys_file}")
        (tmp_path / "devices.yaml").write_text(text, encoding="utf-8")
        self.loaded = load_config(tmp_path / "devices.yaml")
        self.executed: list[tuple[str, str, Any]] = []
        self.now = NOON_LOCAL
        self.outbox: AsyncOutbox | None = None
        self.processor: CommandProcessor | None = None
        self.clock = Clock("system")  # a harness may set a clock of its own first

    async def start(self) -> None:
        self.outbox = AsyncOutbox(Outbox(self.tmp / "outbox.db"), commit_max_wait_s=0.001)
        await self.outbox.open()
        self.writer = __import__("asyncio").create_task(self.outbox.run())
        self.processor = self._processor()

    def _processor(self) -> CommandProcessor:
        assert self.outbox is not None

        async def execute(device: str, action: str, params: Any,
                          _cmd_id: str | None = None) -> dict[str, Any]:
            self.executed.append((device, action, params))
            return {"ok": True}

        return CommandProcessor(self.loaded.config, self.outbox, self.clock,
                                keys=load_platform_keys(self.loaded.config, self.tmp),
                                execute=execute,
                                safety=SafetyRules(
                                    self.loaded.config, now=lambda: self.now,
                                    clock_trusted=lambda: self.clock.quality()
                                    is not TimeQuality.UNSYNCED).check,
                                audit_path=self.tmp / "audit.log")

    async def stop(self) -> None:
        assert self.outbox is not None
        self.writer.cancel()
        await self.outbox.drain()
        await self.outbox.close()

    async def send(self, key: Ed25519PrivateKey, action: str, params: dict[str, Any] | None = None,
                   device: str | None = "lamp-07", **kw: Any) -> Outcome:
        kw.setdefault("gateway", GW)
        _cmd, env = sign_command(key, device=device, action=action, params=params, **kw)
        assert self.processor is not None
        return await self.processor.handle(env)

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (self.tmp / "audit.log").read_text().splitlines()]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    yield harness
    await harness.stop()


async def test_a_valid_command_executes_and_is_reported(h: Harness) -> None:
    out = await h.send(h.lighting, "light.set", {"on": True, "dim_pct": 60})
    assert out.status == "executed"
    assert h.executed[0][0:2] == ("lamp-07", "light.set")
    assert h.executed[0][2].dim_pct == 60
    assert h.audit()[-1]["status"] == "executed"
    assert h.outbox is not None
    results = [json.loads(r[0]) for r in sql_rows(store_of(h.outbox),
        "SELECT payload FROM events WHERE CAST(payload AS TEXT) LIKE '%command_result%'")]
    assert results[-1]["data"]["status"] == "executed"
    assert results[-1]["data"]["cmd_id"] == out.cmd_id


async def test_bad_signature(h: Harness) -> None:
    _cmd, env = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                             params={"on": True})
    doc = json.loads(env)
    doc["body"] = doc["body"].replace('"on":true', '"on":false')
    assert h.processor is not None
    out = await h.processor.handle(json.dumps(doc).encode())
    assert (out.status, out.reason) == ("rejected", "bad_signature")


@pytest.mark.parametrize(("case", "reason"), [
    ("unknown_kid", "unknown_kid"), ("wrong_role", "wrong_role"), ("wrong_aud", "wrong_aud"),
    ("expired", "expired"), ("iat_future", "iat_in_future"), ("oversized", "oversized"),
    ("bad_params", "bad_params"), ("unknown_device", "unknown_device"),
    ("unsupported", "unsupported_action"),
])
async def test_rejections(h: Harness, case: str, reason: str) -> None:
    now = dt.datetime.now(dt.UTC)
    sends = {
        "unknown_kid": lambda: h.send(h.unknown, "light.set", {"on": True}),
        "wrong_role": lambda: h.send(h.broadcast, "light.set", {"on": True}),
        "wrong_aud": lambda: h.send(h.lighting, "light.set", {"on": True}, gateway="gw-other"),
        "expired": lambda: h.send(h.lighting, "light.set", {"on": True},
                                  iat=now - dt.timedelta(minutes=10), ttl_s=60),
        "iat_future": lambda: h.send(h.lighting, "light.set", {"on": True},
                                     iat=now + dt.timedelta(minutes=5)),
        "oversized": lambda: h.send(h.lighting, "light.set", {"on": True, "x": "y" * 9000}),
        "bad_params": lambda: h.send(h.lighting, "light.set", {"on": True, "dim_pct": 150}),
        "unknown_device": lambda: h.send(h.lighting, "light.set", {"on": True},
                                         device="lamp-99"),
        "unsupported": lambda: h.send(h.lighting, "light.set", {"on": True},
                                      device="manhole-12"),
    }
    out = await sends[case]()
    assert (out.status, out.reason) == ("rejected", reason)
    assert not h.executed
    assert h.audit()[-1]["reason"] == reason
    assert h.processor is not None
    assert h.processor.counts[f"rejected.{reason}"] == 1
    figure("R13", f"{case}: rejected ({reason}), not executed, audited and counted")


async def test_duplicate_cmd_id_is_rejected_also_after_a_restart(h: Harness) -> None:
    _cmd, env = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                             params={"on": True})
    assert h.processor is not None
    assert (await h.processor.handle(env)).status == "executed"
    assert (await h.processor.handle(env)).reason == "duplicate"
    await h.stop()
    await h.start()  # a new agent process on the same store
    assert (await h.processor.handle(env)).reason == "duplicate"
    assert len(h.executed) == 1


async def test_counter_rollback_is_rejected(h: Harness) -> None:
    assert (await h.send(h.lighting, "light.set", {"on": True}, ctr=100)).status == "executed"
    out = await h.send(h.lighting, "light.set", {"on": False}, ctr=99)
    assert out.reason == "counter_rollback"


async def test_switching_too_often_is_unsafe(h: Harness) -> None:
    outs = [await h.send(h.lighting, "light.set", {"on": i % 2 == 0}) for i in range(6)]
    assert [o.status for o in outs[:4]] == ["executed"] * 4
    assert outs[4].reason == "unsafe"
    assert "switched 4 times" in outs[4].detail["detail"]


async def test_speaker_quiet_hours_and_emergency_override(h: Harness) -> None:
    h.now = dt.datetime(2026, 11, 26, 15, 0, tzinfo=dt.UTC)  # 23:00 local: quiet hours
    quiet = await h.send(h.broadcast, "speaker.play_tts", {"text": "井盖异常"},
                         device="speaker-01")
    assert (quiet.status, quiet.reason) == ("rejected", "unsafe")
    assert "quiet hours" in quiet.detail["detail"]
    not_allowed = await h.send(h.broadcast, "speaker.play_tts",
                               {"text": "紧急疏散", "priority": "emergency"}, device="speaker-01")
    assert not_allowed.reason == "wrong_role"
    emergency = await h.send(h.emergency, "speaker.play_tts",
                             {"text": "紧急疏散", "priority": "emergency", "volume": 16},
                             device="speaker-01")
    assert emergency.status == "executed"
    h.now = NOON_LOCAL
    loud = await h.send(h.broadcast, "speaker.play_tts", {"text": "hi", "volume": 16},
                        device="speaker-01")
    assert loud.reason == "unsafe"
    assert "volume" in loud.detail["detail"]


async def test_interrupted_command_is_reported_unknown_not_rerun(h: Harness) -> None:
    assert h.outbox is not None
    journal = store_of(h.outbox).journal  # the agent stopped between these two and recover()
    assert journal.claim(Claim("c1", "k", "k", 1, "light.set", "lamp-07", 0)) is None
    journal.set_state("c1", "executing", "")
    assert h.processor is not None
    lost = await h.processor.recover()
    assert [(o.status, o.cmd_id) for o in lost] == [("unknown", "c1")]
    assert not h.executed
    assert journal.state("c1") == "unknown"


async def test_a_clip_on_a_tts_board_is_unsupported_before_it_is_journaled(h: Harness) -> None:
    """speaker.play_clip is declared for ip_speaker units only (D82): a SYN6288 says why."""
    out = await h.send(h.broadcast, "speaker.play_clip",
                       {"clip": "evacuate", "sha256": "0" * 64}, device="speaker-01")
    assert (out.status, out.reason) == ("rejected", "unsupported_action")
    assert "syn6288" in h.audit()[-1]["detail"]["detail"]
    assert not h.executed


@pytest.mark.parametrize("meter", ["sdm120", "pzem004t"])
async def test_a_meter_without_a_relay_cannot_be_switched_before_it_is_journaled(
        tmp_path: Path, meter: Literal["sdm120", "pzem004t"]) -> None:
    """light.set and light.schedule are declared for switchable register maps only."""
    harness = Harness(tmp_path)
    cfg = harness.loaded.config
    devices = [dataclasses.replace(d, model=meter, schedule=[])  # a meter runs no schedule
               if isinstance(d, StreetlightDevice) else d for d in cfg.devices]
    harness.loaded = dataclasses.replace(harness.loaded,
                                         config=dataclasses.replace(cfg, devices=devices))
    await harness.start()
    try:
        for action, params in (("light.set", {"on": True}),
                               ("light.schedule", {"steps": [{"at": "18:00", "on": True}]})):
            out = await harness.send(harness.lighting, action, params)
            assert (out.status, out.reason) == ("rejected", "unsupported_action"), action
            assert meter in harness.audit()[-1]["detail"]["detail"]
        assert not harness.executed
    finally:
        await harness.stop()


async def test_actions_out_of_the_kind_table_are_unknown(h: Harness) -> None:
    """Named in design/events.md, executable by nothing: not in the catalogue (D82)."""
    for action in ("gps.set_interval", "agent.reload_config"):
        out = await h.send(h.lighting, action, {}, device="truck-03")
        assert (out.status, out.reason) == ("rejected", "unknown_action"), action
    assert not h.executed


def test_the_kind_table_agrees_with_the_config_and_the_drivers() -> None:
    """Each kind's devices.yaml model, driver kinds and action models are the real ones."""
    assert list(KINDS) == list(DEVICE_MODELS)
    for name, kind in KINDS.items():
        assert kind.device is DEVICE_MODELS[name], name
        # one concrete class per transport, each of this kind (issue 13)
        assert kind.drivers, name
        assert len(set(kind.drivers)) == len(kind.drivers), name
        for driver in kind.drivers:
            assert driver.kind == name, driver
            assert not inspect.isabstract(driver), driver
        models = set(typing.get_args(typing.get_type_hints(kind.device)["model"]))
        for action, declared in kind.actions.items():
            assert declared.models is None or declared.models <= models, action
            assert action in PARAMS, action


def _with_play_tts(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    from edge.commands import catalogue

    speaker = KINDS["loudspeaker"]
    monkeypatch.setattr(catalogue, "KINDS", {**KINDS, "loudspeaker": dataclasses.replace(
        speaker, actions={**speaker.actions, "speaker.play_tts": action})})


def test_a_guarded_action_needs_one_escalation_in_its_kind(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A guard with no escalation to be guarded by would never hold: refused at import."""
    from edge.commands import catalogue

    tts = KINDS["loudspeaker"].actions["speaker.play_tts"]
    _with_play_tts(monkeypatch, dataclasses.replace(tts, escalation=None))
    with pytest.raises(TypeError, match="guarded action needs exactly one escalation"):
        catalogue._derive_escalations()


@pytest.mark.parametrize(("change", "problem"), [
    ({"field": "prio"}, "PlayTts.prio cannot be 'emergency'"),
    ({"value": "urgent"}, "PlayTts.priority cannot be 'urgent'"),
    ({"role": "broadcast-urgent"}, "escalation role 'broadcast-urgent' is not a role"),
])
def test_an_escalation_that_could_never_match_is_refused(
        monkeypatch: pytest.MonkeyPatch, change: dict[str, str], problem: str) -> None:
    """A typo in an escalation would let a plain ``broadcast`` key send an emergency."""
    from edge.commands import catalogue

    tts = KINDS["loudspeaker"].actions["speaker.play_tts"]
    assert tts.escalation is not None
    _with_play_tts(monkeypatch, dataclasses.replace(
        tts, escalation=dataclasses.replace(tts.escalation, **change)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape(problem)):
        catalogue._derive_escalations()


def test_two_kinds_cannot_guard_one_action_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.commands import catalogue

    stop = KINDS["loudspeaker"].actions["speaker.stop"]
    lamp = KINDS["streetlight"]
    monkeypatch.setattr(catalogue, "KINDS", {**KINDS, "streetlight": dataclasses.replace(
        lamp, actions={**lamp.actions, "speaker.stop": dataclasses.replace(stop, guarded=False)})})
    with pytest.raises(TypeError, match="different escalations or guards"):
        catalogue._derive_escalations()


def test_the_role_catalogue_names_the_escalations() -> None:
    from edge.commands import catalogue

    assert catalogue.role_catalogue()["broadcast-emergency"] == [
        "speaker.play_tts (priority emergency)", "speaker.stop (during an emergency play)"]


async def test_each_declared_action_reaches_its_driver_method() -> None:
    """The agent's executor is the kind table's: each action calls what its kind declares."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Driver:
        name = "x"

        def store_schedule(self, steps: Any) -> None:  # a blocking write, run in a thread
            calls.append(("store_schedule", (len(steps),), {}))

        def __getattr__(self, method: str) -> Any:
            async def call(*args: Any, **kw: Any) -> dict[str, Any]:
                calls.append((method, args, kw))
                return {"ok": True}
            return call

    params = {"speaker.play_clip": PlayClip(clip="evacuate", sha256="a" * 64, volume=5),
              "speaker.play_tts": PlayTts(text="hi", priority="emergency"),
              "speaker.stop": NoParams(), "light.set": LightSet(on=True),
              "light.schedule": check(LightSchedule, {"steps": [{"at": "18:00", "on": True}]})}
    declared = {action: spec for kind in KINDS.values() for action, spec in kind.actions.items()}
    assert set(declared) == set(params), "a new action needs a case here"
    for action, spec in declared.items():
        await spec.execute(Driver(), params[action], "c1")
    assert calls == [
        ("set_light", (), {"on": True, "dim_pct": 100}),
        ("store_schedule", (1,), {}),
        ("play_tts", ("hi", 8), {"emergency": True, "cmd_id": "c1"}),
        ("play_clip", ("evacuate", "a" * 64, 5), {"cmd_id": "c1"}),
        ("stop_playback", (), {}),
    ]
