"""The edge CLI: exit codes, key files, outbox inspection."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from edge.cli import EX_CONFIG, EX_FAIL, EX_INVALID, main
from tests.cfg import tilt_device, write_config
from tests.outbox_util import ev, open_store

ROOT = Path(__file__).resolve().parents[1]


def test_check_exits_2_on_an_invalid_config_with_line_numbers(capsys: object) -> None:
    case = ROOT / "tests" / "config_cases" / "01-unit-id-range" / "devices.yaml"
    assert main(["check", "--config", str(case)]) == EX_INVALID
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "devices.yaml:54: devices[0].unit_id: must be <= 247 (got 300)" in err


def test_check_json_on_invalid_config(capsys: object) -> None:
    case = ROOT / "tests" / "config_cases" / "19-several-errors-at-once" / "devices.yaml"
    assert main(["check", "--json", "--config", str(case)]) == EX_INVALID
    doc = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert doc["config"] == "invalid"
    assert len(doc["problems"]) == 3


def test_run_exits_78_on_an_invalid_config() -> None:
    case = ROOT / "tests" / "config_cases" / "03-unknown-kind" / "devices.yaml"
    result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(case)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == EX_CONFIG
    assert "devices.yaml:68: devices[1].kind" in result.stderr


def test_check_fails_when_nothing_answers(tmp_path: Path, capsys: object) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[
        tilt_device("manhole-1", "covers", 80)], buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1}])
    assert main(["check", "--config", str(loaded.path)]) == EX_FAIL
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "✘ uplink" in out
    assert "⚠ tls: tls: false" in out
    assert "✔ gateway key" in out


def test_keys_init_creates_a_private_key_and_refuses_to_overwrite(tmp_path: Path,
                                                                  capsys: object) -> None:
    loaded = write_config(tmp_path, broker_port=1883, pki=None, devices=[], buses=[])
    key = loaded.resolve("keys/gateway.key")
    key.unlink()
    assert main(["keys", "init", "--config", str(loaded.path)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["keys", "init", "--config", str(loaded.path)]) == EX_FAIL
    assert main(["keys", "show", "--json", "--config", str(loaded.path)]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # type: ignore[attr-defined]
    assert len(shown["kid"]) == 16
    assert len(shown["public_key_hex"]) == 64


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1883, pki=None, devices=[], buses=[])
    key = loaded.resolve("keys/gateway.key")
    key.chmod(0o644)
    assert main(["keys", "show", "--config", str(loaded.path)]) == EX_FAIL


def test_outbox_stats_export_and_requeue(tmp_path: Path, capsys: object) -> None:
    loaded = write_config(tmp_path, broker_port=1883, pki=None, devices=[], buses=[])
    store = open_store(loaded.state_dir / "outbox.db", max_attempts=1)
    seqs = store.append([ev(3, n=i) for i in range(5)]).seqs
    store.nack(seqs[:1], "test")
    store.close()
    assert main(["outbox", "stats", "--json", "--config", str(loaded.path)]) == 0
    stats = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert stats["depth"] == 4
    assert stats["dead_letters"] == 1
    assert main(["outbox", "export", "--config", str(loaded.path)]) == 0
    lines = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert [json.loads(x)["seq"] for x in lines] == seqs[1:]
    assert main(["outbox", "requeue-dead", "--config", str(loaded.path)]) == 0
    assert "requeued 1" in capsys.readouterr().out  # type: ignore[attr-defined]


def test_schema_prints_event_and_batch(capsys: object) -> None:
    assert main(["schema"]) == 0
    doc = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert set(doc) == {"event", "batch", "envelope"}
