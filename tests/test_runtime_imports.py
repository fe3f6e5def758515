"""The agent's process holds no validation or YAML machinery (issue 13, docs/decisions.md D86).

pydantic (with its core) and ruamel cost ~20 MiB of RSS that a gateway pays for years; they run
only in the validating step: ``edge check``, the config child of ``edge run`` and of a reload,
the JSON Schemas, receivers and tests. Every other module of ``edge`` is imported here, in a
fresh interpreter, and neither library may come along.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import edge

# the validating step: these may import pydantic or ruamel (the agent never imports them)
VALIDATING = frozenset({"edge.config_loader", "edge.config_child", "edge.wire"})
HEAVY = ("pydantic", "pydantic_core", "ruamel")

_PROBE = f"""
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))
"""


def runtime_modules() -> list[str]:
    """Return every module of the ``edge`` package outside the validating step."""
    found = [m.name for m in pkgutil.walk_packages(edge.__path__, "edge.")]
    return sorted(name for name in found
                  if not any(name == v or name.startswith(v + ".") for v in VALIDATING))


def heavy_after_importing(modules: list[str]) -> list[str]:
    """Return which of HEAVY a fresh interpreter holds after importing ``modules``."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True,
                          text=True, timeout=120, check=True)
    return list(json.loads(done.stdout))


def test_the_runtime_modules_cover_the_agent() -> None:
    modules = runtime_modules()
    assert {"edge.agent", "edge.cli", "edge.config", "edge.commands.processor",
            "edge.drivers.factory", "edge.config_file"} <= set(modules)
    assert not VALIDATING & set(modules)


def test_the_agent_process_imports_no_pydantic_and_no_ruamel() -> None:
    assert heavy_after_importing(runtime_modules()) == []


def test_the_probe_sees_a_validating_module() -> None:
    assert heavy_after_importing(["edge.config_loader"]) == ["pydantic", "pydantic_core",
                                                              "ruamel"]


def test_the_agent_without_an_http_site_loads_no_typing_extensions() -> None:
    """``override`` is ours on 3.11 (drivers.base): typing_extensions is ~330 KiB (D87).

    aiohttp brings it along when a status page or a local API is configured; the w1 cabinet
    configures none.
    """
    probe = "import sys, edge.cli, edge.agent; print('typing_extensions' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"
