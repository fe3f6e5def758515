"""The config child of `edge run` and a reload (edge.config_file, D86): what can go wrong there
is a located ConfigError, never a crash of the agent, and only the installed edge answers."""

from __future__ import annotations

import asyncio
import pickle
import sys
from pathlib import Path

import pytest

from edge import config_file
from edge.config_file import load_in_child, load_in_child_async, shapes_digest
from edge.config_loader import load_config
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "devices.yaml"


def _fake_child(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(config_file, "_child_argv",
                        lambda path: [sys.executable, "-c", code, str(path)])


def both(path: Path) -> list[str]:
    """Return the problems of the sync and the async load (each must refuse)."""
    seen = []
    for load in (load_in_child, lambda p: asyncio.run(load_in_child_async(p))):
        with pytest.raises(ConfigError) as info:
            load(path)
        seen.append("; ".join(info.value.problems))
    return seen


def test_the_child_loads_what_the_loader_loads() -> None:
    loaded = load_in_child(DEVICES)
    assert loaded.config == load_config(DEVICES).config
    assert loaded.tree is None
    assert asyncio.run(load_in_child_async(DEVICES)).config == loaded.config


def test_a_bad_file_is_every_problem_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "devices.yaml"
    bad.write_text(DEVICES.read_text(encoding="utf-8").replace("unit_id: 1", "unit_id: 900", 1))
    for problems in both(bad):
        assert "devices.yaml:" in problems and "unit_id" in problems


def test_a_module_in_the_working_directory_cannot_answer(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the unit's working directory is the agent's writable state folder (review of D86 #1)
    fake = tmp_path / "edge"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "config_child.py").write_text("import sys; sys.stdout.write('owned'); sys.exit(0)")
    monkeypatch.chdir(tmp_path)
    assert load_in_child(DEVICES).config.gateway.id


@pytest.mark.parametrize(("code", "words"), [
    ("import sys; sys.stdout.write('not a pickle'); sys.exit(0)", "changed since"),
    (f"import sys; sys.stdout.buffer.write(b'{shapes_digest()}\\n' + b'garbage'); sys.exit(0)",
     "could not run: UnpicklingError"),
    ("import sys; sys.stdout.write('{'); sys.exit(78)", "could not run (exit 78)"),
    ("import sys; sys.stderr.write('Traceback...\\nImportError: x'); sys.exit(1)",
     "ImportError: x"),
])
def test_a_child_that_answers_nonsense_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch, code: str, words: str) -> None:
    _fake_child(monkeypatch, code)
    for problems in both(DEVICES):
        assert words in problems


def test_a_config_pickled_by_other_code_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # an upgrade under a running agent: the child's layout differs from this process's
    body = pickle.dumps(load_config(DEVICES))
    monkeypatch.setattr(config_file, "_DIGEST", "0" * 64)
    _fake_child(monkeypatch, "import sys; sys.stdout.buffer.write("
                f"b'{shapes_digest()}\\n' + {body!r}); sys.exit(0)")
    for problems in both(DEVICES):
        assert "restart it" in problems


def test_a_child_that_cannot_start_or_hangs_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_file, "_child_argv", lambda path: ["/nonexistent/python"])
    for problems in both(DEVICES):
        assert "could not run" in problems
    monkeypatch.setattr(config_file, "LOAD_TIMEOUT_S", 0.5)
    _fake_child(monkeypatch, "import time; time.sleep(30)")
    for problems in both(DEVICES):
        assert "not loaded within 0.5 s" in problems


def test_the_layout_digest_covers_every_module_that_defines_a_config_shape() -> None:
    """Every dataclass reachable from EdgeConfig is laid out by a module the digest reads: a
    kind's shape (edge/kinds/, D89) changed under a running agent must not unpickle shifted."""
    import dataclasses
    import typing

    from edge.config import EdgeConfig

    seen: set[type] = set()

    def walk(hint: object) -> None:
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if hint in seen:
                return
            seen.add(hint)
            for sub in typing.get_type_hints(hint).values():
                walk(sub)
        for arg in typing.get_args(hint):
            walk(arg)

    walk(EdgeConfig)
    files = {Path(sys.modules[cls.__module__].__file__ or "").resolve() for cls in seen}
    sources = {p.resolve() for p in config_file.shape_sources()}
    assert any(p.parent.name == "kinds" for p in files)
    assert files <= sources, files - sources
