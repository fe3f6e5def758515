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
import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import config as config_module
from edge.config import EdgeConfig
from edge.errors import ConfigError

# a Pi 4 loads a 200-device file in ~2 s; an SD card that stalls on reads must not hang a start
# (and it ends before systemd's 90 s start timeout, so the journal says why)
LOAD_TIMEOUT_S = 60.0
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
    # -P: the working directory is not on sys.path. The unit's is the agent's writable state
    # folder, and what the child answers is unpickled here: only the installed edge may run.
    return [sys.executable, "-P", "-m", "edge.config_child", str(path)]


def shape_sources() -> list[Path]:
    """Return the modules that lay out the config's dataclasses.

    edge/config.py, every kind's shape (edge/kinds/, D89), and the shape machinery with the
    schedule patterns they use.
    """
    edge_dir = Path(config_module.__file__ or "").parent
    return [edge_dir / "config.py", edge_dir / "shapes.py", edge_dir / "light_schedule.py",
            *sorted((edge_dir / "kinds").glob("*.py"))]


def shapes_digest() -> str:
    """Return a digest of the code that lays out the config's dataclasses (``shape_sources``).

    A pickled slotted dataclass carries its fields by position: a child running newer code
    (an upgrade installed under a running agent, then a reload) would shift values into the
    wrong fields without an error. Both sides compare this first.
    """
    digest = hashlib.sha256()
    for path in shape_sources():
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_DIGEST = shapes_digest()  # this process's layout, read once at start
_FAILED = "the config check could not run"


def load_in_child(path: Path) -> LoadedConfig:
    """Load and validate ``path`` in a child process; ConfigError with every problem if wrong."""
    try:
        done = subprocess.run(_child_argv(path), capture_output=True, timeout=LOAD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError([f"{path}: not loaded within {LOAD_TIMEOUT_S:g} s"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: {_FAILED}: {exc}"]) from None
    return _result(path, done.returncode, done.stdout, done.stderr)


async def load_in_child_async(path: Path) -> LoadedConfig:
    """``load_in_child`` without blocking the event loop (a reload while devices run)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *_child_argv(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise ConfigError([f"{path}: {_FAILED}: {exc}"]) from None
    try:
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        await _end(proc)
        raise ConfigError([f"{path}: not loaded within {LOAD_TIMEOUT_S:g} s"]) from None
    except asyncio.CancelledError:
        await _end(proc)
        raise
    assert proc.returncode is not None
    return _result(path, proc.returncode, out, err)


async def _end(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have just ended by itself
        proc.kill()
    await proc.wait()


def _result(path: Path, returncode: int, out: bytes, err: bytes) -> LoadedConfig:
    if returncode == 0:
        digest, _, body = out.partition(b"\n")
        if digest.decode("ascii", "replace") != _DIGEST:
            raise ConfigError([f"{path}: the installed edge changed since this agent started: "
                               "restart it to load the config"])
        # imported here: the agent reads a child's answer at start and reload only, and
        # pickle stays out of the resident agent the rest of its life (RSS, D87)
        import pickle  # noqa: PLC0415

        try:
            loaded = pickle.loads(body)  # noqa: S301 - the installed edge's child (-P), a pipe
        except Exception as exc:  # noqa: BLE001 - any unreadable answer is a failed check
            raise ConfigError([f"{path}: {_FAILED}: {type(exc).__name__}"]) from None
        if not isinstance(loaded, LoadedConfig):
            raise ConfigError([f"{path}: the config child answered {type(loaded).__name__}"])
        return loaded
    if returncode == EX_CONFIG:
        try:
            problems = json.loads(out)
        except ValueError:
            problems = None
        if isinstance(problems, list) and problems:
            raise ConfigError([str(p) for p in problems])
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    raise ConfigError([f"{path}: {_FAILED} (exit {returncode}): {tail[0][:200]}"])
