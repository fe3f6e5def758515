"""devices.yaml as the running agent holds it, validated in a child process.

Parsing YAML with line numbers (ruamel) and validating it (pydantic) is ``edge.config_loader``'s
job; keeping those libraries in the agent for the rare start or reload cost ~20 MiB of RSS at w1
(docs/decisions.md D86). So ``edge run`` and a reload run ``python -m edge.config_child PATH``:
the child loads the file and writes either the validated ``LoadedConfig`` (pickled: plain
dataclasses of ``edge.config``, no YAML tree) or the problems as JSON; the agent process only
unpickles dataclasses. The pipe is private between the agent and its own child.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import EdgeConfig
from edge.errors import ConfigError

# a Pi 4 loads a 200-device file in ~2 s; an SD card that stalls on reads must not hang a start
LOAD_TIMEOUT_S = 120.0
EX_CONFIG = 78  # sysexits: the file is wrong (the child printed its problems)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from (paths in it are relative to ``base_dir``)."""

    config: EdgeConfig
    path: Path
    # the parsed YAML, for the line of a field in `edge check`'s messages (None: built in code,
    # or loaded by the agent through the child), and how to find a line in it
    tree: Any = field(default=None, compare=False, repr=False)
    lines: Callable[[Any, tuple[int | str, ...]], int] | None = field(
        default=None, compare=False, repr=False)

    def line_of(self, *loc: int | str) -> str:
        """Return ``devices.yaml:LINE`` of a field, e.g. ``line_of("buses", 0)``."""
        if self.tree is None or self.lines is None:
            return self.path.name
        return f"{self.path.name}:{self.lines(self.tree, loc)}"

    @property
    def base_dir(self) -> Path:
        """Return the folder the file lives in."""
        return self.path.resolve().parent

    def resolve(self, value: str) -> Path:
        """Resolve a path written in the file, relative to the file's folder."""
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    @property
    def state_dir(self) -> Path:
        """Return the agent's state folder (outbox, journals, status)."""
        return self.resolve(self.config.gateway.state_dir)


def _child_argv(path: Path) -> list[str]:
    return [sys.executable, "-m", "edge.config_child", str(path)]


def load_in_child(path: Path) -> LoadedConfig:
    """Load and validate ``path`` in a child process; ConfigError with every problem if wrong."""
    try:
        done = subprocess.run(_child_argv(path), capture_output=True, timeout=LOAD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError([f"{path}: not loaded within {LOAD_TIMEOUT_S:g} s"]) from None
    return _result(path, done.returncode, done.stdout, done.stderr)


async def load_in_child_async(path: Path) -> LoadedConfig:
    """``load_in_child`` without blocking the event loop (a reload while devices run)."""
    proc = await asyncio.create_subprocess_exec(
        *_child_argv(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConfigError([f"{path}: not loaded within {LOAD_TIMEOUT_S:g} s"]) from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return _result(path, proc.returncode, out, err)


def _result(path: Path, returncode: int, out: bytes, err: bytes) -> LoadedConfig:
    if returncode == 0:
        loaded = pickle.loads(out)  # noqa: S301 - our own child, over a private pipe
        if not isinstance(loaded, LoadedConfig):
            raise ConfigError([f"{path}: the config child answered {type(loaded).__name__}"])
        return loaded
    if returncode == EX_CONFIG:
        raise ConfigError([str(p) for p in json.loads(out)])
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    raise ConfigError([f"{path}: the config check failed (exit {returncode}): {tail[0]}"])
