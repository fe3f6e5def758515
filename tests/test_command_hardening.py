"""Issue 19 on the command path: malformed envelopes, replay state across a store replacement,
the platform keys file, floods, quiet hours on an untrusted clock, counters, emergency stop."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.clock import Clock, TimeQuality
from edge.commands.keys import load_platform_keys, platform_keys_problem
from edge.commands.processor import REJECT_BURST, CommandProcessor
from edge.preflight import run_checks
from edge.security.signing import Ed25519PrivateKey, Signer
from hil.commander import register, sign_command
from tests.figures import figure
from tests.outbox_sql import sql_rows, store_of
from tests.test_commands import GW, NOON_LOCAL, Harness

pytestmark = pytest.mark.reliability


class SettableClock(Clock):
    """The gateway's clock with a quality the test sets (1970 boots, NTP not yet synced)."""

    def __init__(self) -> None:
        super().__init__("system")
        self.q = TimeQuality.SYNCED

    def quality(self) -> TimeQuality:
        return self.q


class HardHarness(Harness):
    clock: SettableClock

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.clock = SettableClock()

    def _processor(self) -> CommandProcessor:
        proc = super()._processor()
        proc.clock = self.clock
        return proc

    def events(self, like: str) -> list[dict[str, Any]]:
        assert self.outbox is not None
        return [json.loads(r[0]) for r in sql_rows(store_of(self.outbox),
            "SELECT payload FROM events WHERE CAST(payload AS TEXT) LIKE ?", (f"%{like}%",))]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[HardHarness]:
    harness = HardHarness(tmp_path)
    await harness.start()
    yield harness
    await harness.stop()


def _forged_envelope(key: Ed25519PrivateKey, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return Signer(key).envelope(raw)


def _body(**kw: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    body: dict[str, Any] = {
        "cmd_id": "0193f1c3-0000-7000-8000-000000000001", "aud": GW, "device": "lamp-07",
        "action": "light.set", "params": {"on": True},
        "iat": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exp": (now + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"), "ctr": 1}
    body.update(kw)
    return body


# ---- finding 1: nothing from the command path raises -----------------------------------------

MALFORMED = {
    "deep_json": b"[" * 8000,
    "deep_object": b'{"a":' * 1500,
    "surrogate_kid": b'{"kid":"\\ud800","alg":"Ed25519","sig":"AA","body":"x"}',
    "not_utf8": b"\xff\xfe\x00{",
    "not_an_object": b"[1,2,3]",
    "empty": b"",
    "body_not_string": b'{"kid":"k","alg":"Ed25519","sig":"AA","body":{}}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_envelopes_are_counted_audited_rejections(h: HardHarness,
                                                                  case: str) -> None:
    assert h.processor is not None
    out = await h.processor.handle(MALFORMED[case])
    assert out.status == "rejected"
    assert out.reason in {"malformed", "unknown_kid"}
    assert h.processor.counts[f"rejected.{out.reason}"] == 1
    assert h.audit()[-1]["reason"] == out.reason


async def test_surrogate_body_under_a_known_kid_is_rejected(h: HardHarness) -> None:
    kid = Signer(h.lighting).kid
    env = ('{"kid":"' + kid + '","alg":"Ed25519","sig":"AA","body":"\\udc00"}').encode()
    assert h.processor is not None
    out = await h.processor.handle(env)
    assert (out.status, out.reason) == ("rejected", "malformed")


@pytest.mark.parametrize("ctr", [2**64, 2**63, -1, 2**53])
async def test_signed_out_of_range_counter_is_a_bad_body(h: HardHarness, ctr: int) -> None:
    assert h.processor is not None
    out = await h.processor.handle(_forged_envelope(h.lighting, _body(ctr=ctr)))
    assert (out.status, out.reason) == ("rejected", "bad_body")


async def test_an_executor_bug_is_a_failed_command_not_an_exception(h: HardHarness) -> None:
    assert h.processor is not None

    async def broken(*_a: Any) -> dict[str, Any]:
        raise KeyError("driver bug")

    h.processor._execute = broken  # a broken executor
    out = await h.send(h.lighting, "light.set", {"on": True})
    assert (out.status, out.reason) == ("failed", "internal_error")


# ---- finding 11: the counter step is bounded ---------------------------------------------------

async def test_a_huge_signed_counter_does_not_lock_the_key_out(h: HardHarness) -> None:
    first = await h.send(h.lighting, "light.set", {"on": True})
    assert first.status == "executed"
    jump = await h.send(h.lighting, "light.set", {"on": False}, ctr=2**53 - 1)
    assert (jump.status, jump.reason) == ("rejected", "counter_jump")
    huge = await h.send(h.lighting, "light.set", {"on": False}, ctr=2**63 - 1)
    assert huge.status == "rejected"
    after = await h.send(h.lighting, "light.set", {"on": False})
    assert after.status == "executed"  # the key still works


async def test_first_counter_is_bounded_by_a_trusted_clock(h: HardHarness) -> None:
    now_us = dt.datetime.now(dt.UTC).timestamp() * 1e6
    out = await h.send(h.lighting, "light.set", {"on": True}, ctr=int(now_us + 2**41))
    assert out.reason == "counter_jump"


class _Shifted:
    """Moves the harness clock forward (a day passes in a test)."""

    def __init__(self, h: HardHarness) -> None:
        self.shift_ns = 0
        h.clock.now_ns = lambda: time.time_ns() + self.shift_ns  # type: ignore[method-assign]


async def test_one_signed_counter_locks_a_key_out_for_at_most_a_day(h: HardHarness) -> None:
    """Issue 19 re-test #3: a signed ctr = now_us + 10**12 was accepted, then the platform's
    own commands got counter_rollback for ~12.7 days (the step was 2^40 µs)."""
    day_us = 86_400 * 1_000_000
    shifted = _Shifted(h)
    now_us = time.time_ns() // 1000
    far = await h.send(h.lighting, "light.set", {"on": True}, ctr=now_us + 10**12)
    assert (far.status, far.reason) == ("rejected", "counter_jump")
    ahead = await h.send(h.lighting, "light.set", {"on": True}, ctr=now_us + day_us - 10**6)
    assert ahead.status == "executed"  # inside the bound: accepted, it locks the key out …
    normal = await h.send(h.lighting, "light.set", {"on": False})
    assert normal.reason == "counter_rollback"
    # … and cannot ratchet further: the bound is the trusted now, not the last counter
    ratchet = await h.send(h.lighting, "light.set", {"on": False}, ctr=now_us + 2 * day_us)
    assert ratchet.reason == "counter_jump"
    shifted.shift_ns = day_us * 1000 + 10**9  # a day later the platform's counter is above it
    later = await h.send(h.lighting, "light.set", {"on": False},
                         ctr=time.time_ns() // 1000 + shifted.shift_ns // 1000,
                         iat=dt.datetime.now(dt.UTC) + dt.timedelta(days=1, seconds=1))
    assert later.status == "executed"


# ---- finding 11: speaker.stop cannot silence an emergency with the broadcast role -------------

async def test_stopping_an_emergency_broadcast_needs_the_emergency_role(h: HardHarness) -> None:
    emergency = await h.send(h.emergency, "speaker.play_tts",
                             {"text": "紧急疏散", "priority": "emergency"}, device="speaker-01")
    assert emergency.status == "executed"
    stop = await h.send(h.broadcast, "speaker.stop", device="speaker-01")
    assert (stop.status, stop.reason) == ("rejected", "wrong_role")
    assert "broadcast-emergency" in stop.detail["detail"]
    assert (await h.send(h.emergency, "speaker.stop", device="speaker-01")).status == "executed"


async def test_only_the_declaring_action_escalates(h: HardHarness) -> None:
    """``priority: emergency`` is the play's escalation (D89), not a word any action may use."""
    from edge.commands.catalogue import ESCALATIONS, GUARDS

    assert set(ESCALATIONS) == {"speaker.play_tts"}
    assert set(GUARDS) == {"speaker.stop"}
    lamp = await h.send(h.lighting, "light.set", {"on": True, "priority": "emergency"})
    assert (lamp.status, lamp.reason) == ("rejected", "bad_params")  # not wrong_role
    assert "priority" in lamp.detail["detail"]
    plain = await h.send(h.broadcast, "speaker.play_tts", {"text": "紧急", "priority": "emergency"},
                         device="speaker-01")
    assert (plain.status, plain.reason) == ("rejected", "wrong_role")
    assert "broadcast-emergency" in plain.detail["detail"]


async def test_stopping_a_normal_broadcast_needs_only_broadcast(h: HardHarness) -> None:
    assert (await h.send(h.broadcast, "speaker.play_tts", {"text": "hi"},
                         device="speaker-01")).status == "executed"
    assert (await h.send(h.broadcast, "speaker.stop", device="speaker-01")).status == "executed"


# ---- finding 10: quiet hours fail safe on an untrusted clock -----------------------------------

async def test_quiet_hours_fail_safe_when_the_clock_is_untrusted(h: HardHarness) -> None:
    h.clock.q = TimeQuality.UNSYNCED
    h.now = dt.datetime(1970, 1, 1, 0, 5, tzinfo=dt.UTC)  # 08:05 local by the raw clock
    out = await h.send(h.broadcast, "speaker.play_tts", {"text": "hi"}, device="speaker-01",
                       iat=NOON_LOCAL)
    assert (out.status, out.reason) == ("rejected", "unsafe")
    assert "clock untrusted" in out.detail["detail"]
    emergency = await h.send(h.emergency, "speaker.play_tts",
                             {"text": "紧急疏散", "priority": "emergency"}, device="speaker-01")
    assert emergency.status == "executed"  # only broadcast-emergency overrides quiet hours
    lamp = await h.send(h.lighting, "light.set", {"on": True})
    assert lamp.status == "executed"  # lamps have no quiet hours


# ---- finding 2: replay state survives a store replacement, or fails closed -------------------

async def _corrupt_outbox(h: HardHarness) -> None:
    await h.stop()
    db = h.tmp / "outbox.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 200)


async def test_a_captured_command_does_not_run_again_after_the_store_is_replaced(
        h: HardHarness) -> None:
    _cmd, env = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                             params={"on": True})
    assert h.processor is not None
    assert (await h.processor.handle(env)).status == "executed"
    await _corrupt_outbox(h)
    h.clock.q = TimeQuality.UNSYNCED  # booting at 1970: freshness is skipped
    await h.start()
    assert h.outbox is not None
    assert h.outbox.replaced_corrupt is not None  # the old store was moved aside
    await h.processor.recover()
    again = await h.processor.handle(env)
    assert (again.status, again.reason) == ("rejected", "counter_rollback")
    assert len(h.executed) == 1
    figure("R13", "captured command replayed after the outbox was replaced: rejected "
           "(counter_rollback), replay state kept in <outbox>.replay")


async def test_deleted_outbox_files_with_an_audit_trail_fail_closed(h: HardHarness) -> None:
    """Issue 19 re-test #2: `rm var/state/outbox.db*` (the replay sidecar too) looked like a
    first boot, and at 1970 a captured command past its exp ran again; audit.log, in the same
    state dir, said commands had run."""
    _cmd, env = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                             params={"on": True}, ttl_s=1,
                             iat=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))
    h.clock.q = TimeQuality.UNSYNCED  # freshness skipped: the past exp does not refuse it
    assert h.processor is not None
    assert (await h.processor.handle(env)).status == "executed"
    await h.stop()
    for path in h.tmp.glob("outbox.db*"):
        path.unlink()
    assert (h.tmp / "audit.log").stat().st_size > 0
    await h.start()
    await h.processor.recover()
    again = await h.processor.handle(env)
    assert (again.status, again.reason) == ("rejected", "replay_state_lost")
    assert len(h.executed) == 1
    h.clock.q = TimeQuality.SYNCED  # then only commands issued after the re-establishment
    assert (await h.processor.handle(env)).reason in {"expired", "replay_state_lost"}
    assert len(h.executed) == 1
    new = await h.send(h.lighting, "light.set", {"on": False},
                       iat=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert new.status == "executed"


async def test_a_first_boot_without_an_audit_trail_starts_open(h: HardHarness) -> None:
    """The fail-closed path needs evidence of earlier operation: a new gateway is not lost."""
    await h.stop()
    for path in h.tmp.glob("outbox.db*"):
        path.unlink()
    (h.tmp / "audit.log").unlink(missing_ok=True)
    h.clock.q = TimeQuality.UNSYNCED
    await h.start()
    assert h.processor is not None
    await h.processor.recover()
    assert (await h.send(h.lighting, "light.set", {"on": True})).status == "executed"


async def test_lost_replay_state_fails_closed_until_the_clock_is_trusted(h: HardHarness) -> None:
    old_iat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    _cmd, env = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                             params={"on": True}, iat=old_iat)
    assert h.processor is not None
    assert (await h.processor.handle(env)).status == "executed"
    await _corrupt_outbox(h)
    (h.tmp / "outbox.db.replay").write_bytes(b"{garbage")  # the replay file lost too
    h.clock.q = TimeQuality.UNSYNCED
    await h.start()
    await h.processor.recover()
    closed = await h.processor.handle(env)
    assert (closed.status, closed.reason) == ("rejected", "replay_state_lost")
    fresh = await h.send(h.lighting, "light.set", {"on": False})
    assert fresh.reason == "replay_state_lost"  # even a new one, while the clock is untrusted
    await h.stop()
    await h.start()  # a restart does not reopen it
    assert (await h.processor.handle(env)).reason == "replay_state_lost"
    h.clock.q = TimeQuality.SYNCED
    replayed = await h.processor.handle(env)
    assert replayed.reason == "replay_state_lost"  # issued before the state was re-established
    new = await h.send(h.lighting, "light.set", {"on": False},
                       iat=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
    assert new.status == "executed"
    assert len(h.executed) == 1 + 1


async def test_lost_replay_state_with_a_trusted_clock_accepts_only_newer_commands(
        h: HardHarness) -> None:
    _cmd, env = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                             params={"on": True}, iat=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    assert h.processor is not None
    assert (await h.processor.handle(env)).status == "executed"
    await _corrupt_outbox(h)
    (h.tmp / "outbox.db.replay").unlink()  # and the replay file is gone
    await h.start()
    await h.processor.recover()  # the agent's start: the clock is trusted, the floor is now
    replayed = await h.processor.handle(env)
    assert (replayed.status, replayed.reason) == ("rejected", "replay_state_lost")
    new = await h.send(h.lighting, "light.set", {"on": False},
                       iat=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert new.status == "executed"


# ---- finding 7: the platform keys file ------------------------------------------------------

def _keys_harness(tmp_path: Path) -> tuple[HardHarness, Path]:
    harness = HardHarness(tmp_path)
    return harness, tmp_path / "platform-keys.json"


def test_a_group_or_world_writable_keys_file_is_refused(tmp_path: Path) -> None:
    harness, keys_file = _keys_harness(tmp_path)
    cfg = harness.loaded.config
    assert len(load_platform_keys(cfg, tmp_path)) == 3
    rogue = Ed25519PrivateKey.generate()
    register(keys_file, rogue, ["lighting", "broadcast", "broadcast-emergency", "config"])
    for mode in (0o666, 0o664, 0o646):
        keys_file.chmod(mode)
        assert load_platform_keys(cfg, tmp_path) == {}
        problem = platform_keys_problem(cfg, tmp_path)
        assert problem is not None
        assert "others can write" in problem
    keys_file.chmod(0o644)
    assert len(load_platform_keys(cfg, tmp_path)) == 4
    assert platform_keys_problem(cfg, tmp_path) is None


def test_a_fifo_at_the_keys_path_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO planted where the keys file goes must not hang the agent's start (review #10)."""
    import subprocess
    import sys

    harness, keys_file = _keys_harness(tmp_path)
    cfg = harness.loaded.config
    keys_file.unlink()
    os.mkfifo(keys_file, 0o600)
    # in a child process: a blocking open() would hang this test's own thread for good
    code = ("import sys, pathlib; from edge.commands.keys import platform_keys_problem; "
            "from edge.config_loader import load_config; "
            f"c = load_config(pathlib.Path({str(harness.loaded.path)!r})); "
            f"print(platform_keys_problem(c.config, pathlib.Path({str(tmp_path)!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=20, check=False)
    assert "not a regular file" in result.stdout, result.stdout + result.stderr
    assert cfg is not None


@pytest.mark.parametrize("bad", [
    {"public_key_hex": "00" * 31, "roles": ["lighting"]},
    {"public_key_hex": "ab" * 32, "roles": ["lighting"]},  # does not match its kid
    {"public_key_hex": "ab" * 32, "roles": ["superuser"]},
    "not an object",
])
def test_a_keys_file_loads_all_or_nothing(tmp_path: Path, bad: object) -> None:
    harness, keys_file = _keys_harness(tmp_path)
    doc = json.loads(keys_file.read_text())
    doc["deadbeefdeadbeef"] = bad
    keys_file.write_text(json.dumps(doc))
    keys_file.chmod(0o600)
    assert load_platform_keys(harness.loaded.config, tmp_path) == {}
    assert platform_keys_problem(harness.loaded.config, tmp_path) is not None


def test_a_keys_file_owned_by_someone_else_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs for every user (review finding 13): the owner the loader sees is made foreign."""
    harness, _keys_file = _keys_harness(tmp_path)
    assert load_platform_keys(harness.loaded.config, tmp_path) != {}  # ours: loaded
    real_fstat = os.fstat

    class _Foreign:  # the file's stat as if uid 4242 (neither the agent nor root) owned it
        st_uid = 4242

        def __init__(self, st: os.stat_result) -> None:
            self._st = st

        def __getattr__(self, name: str) -> object:
            return getattr(self._st, name)

    monkeypatch.setattr("edge.commands.keys.os.fstat", lambda fd: _Foreign(real_fstat(fd)))
    assert load_platform_keys(harness.loaded.config, tmp_path) == {}
    problem = platform_keys_problem(harness.loaded.config, tmp_path)
    assert problem is not None
    assert "owned by uid 4242" in problem


def test_edge_check_reports_the_keys_file(tmp_path: Path) -> None:
    harness, keys_file = _keys_harness(tmp_path)
    keys_file.chmod(0o666)
    checks = asyncio.run(run_checks(harness.loaded))
    keys = [c for c in checks if c.name == "platform keys"]
    assert keys, [c.name for c in checks]
    assert keys[0].status == "fail"
    assert "others can write" in keys[0].detail


# ---- finding 8: a flood does not lose a valid command, rejections are aggregated -------------

async def test_a_flood_of_forged_commands_is_aggregated_and_a_valid_one_executes(
        h: HardHarness) -> None:
    assert h.processor is not None
    forger = Ed25519PrivateKey.generate()
    for i in range(250):
        if i % 2:
            _c, env = sign_command(forger, gateway=GW, device="lamp-07", action="light.set",
                                   params={"on": True})
        else:
            doc = json.loads(sign_command(h.lighting, gateway=GW, device="lamp-07",
                                          action="light.set", params={"on": True})[1])
            doc["sig"] = doc["sig"][::-1]
            env = json.dumps(doc).encode()
        await h.processor.handle(env)
    valid = await h.send(h.lighting, "light.set", {"on": True, "dim_pct": 40})
    assert valid.status == "executed"
    counts = h.processor.counts
    assert counts["rejected.unknown_kid"] + counts["rejected.bad_signature"] == 250
    audit = h.audit()
    rejected_lines = [a for a in audit if a["status"] == "rejected"]
    assert len(rejected_lines) <= 2 * REJECT_BURST  # not 250 fsynced lines
    rejected_events = [e for e in h.events("command_result") if e["data"]["status"] == "rejected"]
    assert len(rejected_events) <= 2 * REJECT_BURST
    assert {e["prio"] for e in rejected_events} == {2}  # evictable: anyone can cause them
    # the window closes: one summary accounts for every rejection not reported in full
    h.processor._window_start -= 61  # skip the minute
    await h.processor.tick()
    summary = h.audit()[-1]
    assert summary["reason"] == "suppressed"
    assert sum(summary["detail"]["counts"].values()) + len(rejected_lines) == 250
    figure("R13", f"flood of 250 forged commands: {len(rejected_lines)} audit lines + 1 summary, "
           f"{len(rejected_events)} rejection events; the valid light.set executed")


async def test_replays_of_a_captured_valid_command_are_aggregated(h: HardHarness) -> None:
    """A signed envelope seen on the wire, published again 200 times (audit finding, D78)."""
    assert h.processor is not None
    _cmd, captured = sign_command(h.lighting, gateway=GW, device="lamp-07", action="light.set",
                                  params={"on": True})
    first = await h.processor.handle(captured)
    assert first.status == "executed"
    for _ in range(200):
        again = await h.processor.handle(captured)
        assert (again.status, again.reason) == ("rejected", "duplicate")
    assert len(h.executed) == 1
    assert h.processor.counts["rejected.duplicate"] == 200
    duplicate_lines = [a for a in h.audit() if a["reason"] == "duplicate"]
    # the first duplicate in full (a platform's own re-send gets its answer), then the burst
    assert len(duplicate_lines) == 1 + REJECT_BURST  # not 200 fsynced lines
    duplicate_events = [e for e in h.events("command_result")
                        if e["data"]["reason"] == "duplicate"]
    assert [e["prio"] for e in duplicate_events] == [1] + [2] * REJECT_BURST
    # another command's first rejection of the same reason is still reported in full, prio 1:
    # the replays used up the window, not the platform's answers (review of D78)
    expired = await h.send(h.lighting, "light.set", {"on": False},
                           iat=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10), ttl_s=60)
    assert (expired.status, expired.reason) == ("rejected", "expired")
    expired_events = [e for e in h.events("command_result") if e["data"]["reason"] == "expired"]
    assert [(e["data"]["cmd_id"], e["prio"]) for e in expired_events] == [(expired.cmd_id, 1)]
    valid = await h.send(h.lighting, "light.set", {"on": False})
    assert valid.status == "executed"
    h.processor._window_start -= 61  # skip the minute
    await h.processor.tick()
    summary = h.audit()[-1]
    assert summary["reason"] == "suppressed"
    assert summary["detail"]["counts"] == {"duplicate": 200 - 1 - REJECT_BURST}


async def test_inbound_drops_are_counted_and_reported(h: HardHarness) -> None:
    assert h.processor is not None
    await h.processor.tick(37)
    assert h.processor.counts["dropped.inbound_full"] == 37
    assert h.audit()[-1]["status"] == "dropped"
    assert h.audit()[-1]["detail"] == {"count": 37}
    assert h.events("inbound_full")


# ---- re-test #7: a text the unit cannot speak is refused when the command is validated ---------

async def test_a_tts_text_the_unit_cannot_encode_is_bad_params(h: HardHarness) -> None:
    """U+200B (or an emoji) was answered executed {"queued": true} and failed at the unit."""
    h.now = NOON_LOCAL
    emoji = await h.send(h.broadcast, "speaker.play_tts", {"text": "请注意😀", "volume": 3},
                         device="speaker-01")
    assert (emoji.status, emoji.reason) == ("rejected", "bad_params")
    assert "character 3 (U+1F600)" in emoji.detail["detail"]
    assert "gbk" in emoji.detail["detail"]
    long_text = await h.send(h.broadcast, "speaker.play_tts",
                             {"text": "请" * 100, "volume": 3}, device="speaker-01")
    assert (long_text.status, long_text.reason) == ("rejected", "bad_params")
    assert "the unit takes 200" in long_text.detail["detail"]
    assert h.executed == []
    # zero-width characters are dropped deliberately: the rest is spoken
    zwsp = await h.send(h.broadcast, "speaker.play_tts", {"text": "请\u200b注意", "volume": 3},
                        device="speaker-01")
    assert zwsp.status == "executed"
