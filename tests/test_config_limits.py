"""Issue 14 finding 2: any devices.yaml is read in bounded time and memory.

Nine levels of nested aliases ("billion laughs") made ``edge check`` run for more than 30 s
while its memory grew past 700 MB; ``edge run`` and ``edge reload`` took the same path.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.cli import EX_CONFIG, EX_INVALID, main
from edge.config_loader import (
    MAX_CONFIG_BYTES,
    MAX_EXPANDED_NODES,
    MAX_YAML_NODES,
    load_config,
    parse_config,
)
from edge.errors import ConfigError
from hil.broker import Mosquitto
from tests.cfg import write_config

ROOT = Path(__file__).resolve().parents[1]
# lol<k> (on line 3 + k) expands to (10 ** (k + 2) - 1) / 9 nodes: the first one over the
# limit is the line named
LAUGHS_LINE = 3 + next(k for k in range(10) if (10 ** (k + 2) - 1) // 9 > MAX_EXPANDED_NODES)


def laughs(levels: int = 9) -> str:
    """The classic billion-laughs document, under a key the config does not know."""
    out = ["gateway: {id: gw-1}", "bomb:", '  lol0: &lol0 ["lol","lol","lol","lol","lol",'
           '"lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*lol{i - 1}"] * 10)
        out.append(f"  lol{i}: &lol{i} [{refs}]")
    return "\n".join(out) + "\n"


def line_of(problem: str) -> int:
    match = re.match(r"^[\w.]+:(\d+): ", problem)
    assert match, problem
    return int(match.group(1))


def test_the_laughs_file_is_refused_with_its_line_by_edge_check(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(laughs(), encoding="utf-8")
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("edge check still parsing the laughs file after 10 s")
    took_s = time.monotonic() - started
    assert done.returncode == EX_INVALID, done.stderr
    assert "devices.yaml:" in done.stderr
    assert "alias" in done.stderr
    assert took_s < 5, f"edge check took {took_s:.1f} s (interpreter start included)"


def test_the_laughs_file_is_refused_in_under_2_s_by_the_loader(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(laughs(), encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.monotonic() - started < 2
    [problem] = info.value.problems
    assert problem.startswith("devices.yaml:")
    assert line_of(problem) == LAUGHS_LINE
    assert "alias" in problem


def test_edge_run_refuses_the_laughs_file(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(laughs(), encoding="utf-8")
    started = time.monotonic()
    assert main(["run", "--config", str(path)]) == EX_CONFIG
    assert time.monotonic() - started < 2


async def test_reload_refuses_the_laughs_file_and_keeps_running(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, devices=[],
                          buses=[])
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        loaded.path.write_text(laughs(), encoding="utf-8")
        started = time.monotonic()
        problems = await asyncio.wait_for(agent.reload(), 10)
        assert time.monotonic() - started < 2
        assert [line_of(p) for p in problems] == [LAUGHS_LINE]
        assert agent.generation == 0
    finally:
        stop.set()
        await run


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^devices\.yaml:1: .*MiB"):
        load_config(path)


@pytest.mark.parametrize(("text", "what"), [
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested"),
    ("a: [" + ",".join(["1"] * (MAX_YAML_NODES + 10)) + "]\n", "nodes"),
    ("b: &b 1\na: [" + ",".join(["*b"] * 2_000) + "]\n", "alias"),
])
def test_deep_wide_and_alias_heavy_documents_are_refused(text: str, what: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("devices.yaml"))
    assert time.monotonic() - started < 20
    [problem] = info.value.problems
    assert what in problem
    assert line_of(problem) == (2 if what == "alias" else 1)


def test_the_shipped_file_and_a_few_merge_keys_still_load() -> None:
    loaded = load_config(ROOT / "devices.yaml")
    assert loaded.config.devices
