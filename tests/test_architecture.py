"""The import rules of docs/architecture.md, read from the source with ``ast`` (issue 13).

Nothing here imports the modules it checks: the tree is parsed, so a rule costs milliseconds
and a broken module still gets its imports checked. Imports inside functions (lazy imports) and
under ``if TYPE_CHECKING:`` count like any other: a lazy import is still a dependency.
Each rule has a self-test that feeds the checker a synthetic module breaking it, so a checker
that silently checks nothing fails too.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("edge", "hil", "bench")
DOC = ROOT / "docs" / "architecture.md"

# Module prefix -> part; the longest prefix wins. Every module under edge/ must fall in one.
PARTS: dict[str, str] = {
    "edge.contract": "contract",
    "edge.drivers._codecs": "codecs",
    "edge.errors": "core", "edge.clock": "core", "edge.ids": "core", "edge.backoff": "core",
    "edge.atomic_file": "core", "edge.aux_writes": "core", "edge.model": "core",
    "edge.shapes": "core", "edge.shape_check": "core", "edge.wire": "core",
    # pure leaves that live beside the drivers (their main users) but that config, transports
    # and ops read too: a part of their own, so those reads are not a drivers <-> config cycle
    "edge.drivers.alarms": "helpers", "edge.drivers.geo": "helpers",
    "edge.drivers.sun": "helpers", "edge.drivers.probe_trace": "helpers",
    "edge.config": "config", "edge.kinds": "config", "edge.light_schedule": "config",
    "edge.safety": "config",
    "edge.security": "security",
    "edge.transports": "transports",
    "edge.drivers": "drivers",
    "edge.buffer": "buffer",
    "edge.commands": "commands",
    "edge.uplink": "uplink",
    "edge.ops": "ops",
    "edge.agent": "agent", "edge.cli": "agent", "edge.config_loader": "agent",
    "edge.config_file": "agent", "edge.config_child": "agent",
    "edge.preflight": "agent", "edge.reload": "agent", "edge.sink": "agent",
    "edge.supervisor": "agent", "edge.running_devices": "agent",
    "hil": "hil", "bench": "bench", "tests": "tests",
}
EXACT_PARTS = {"edge": "core"}  # the package itself (``from edge import __version__``)
PRODUCT_PARTS = frozenset(p for p in PARTS.values() if p not in {"hil", "bench", "tests"})

# Which parts each part may import (besides itself); docs/architecture.md shows this table.
ALLOWED: dict[str, frozenset[str]] = {
    "contract": frozenset(),
    "codecs": frozenset(),
    "core": frozenset({"contract"}),
    "helpers": frozenset(),
    "config": frozenset({"core", "helpers"}),
    "security": frozenset({"core"}),
    "transports": frozenset({"core", "config", "codecs", "helpers"}),
    "drivers": frozenset({"core", "config", "codecs", "helpers", "transports", "security"}),
    "buffer": frozenset({"core"}),
    # drivers: the command catalogue is derived from the kind table (D82)
    "commands": frozenset({"core", "config", "security", "buffer", "drivers"}),
    "uplink": frozenset({"core", "config", "security", "transports", "buffer"}),
    "ops": frozenset({"core", "config", "helpers"}),
    "agent": PRODUCT_PARTS - {"agent"},
    "hil": PRODUCT_PARTS,
    "bench": PRODUCT_PARTS | {"hil"},
    "tests": PRODUCT_PARTS | {"hil", "bench"},
}
# Edges that must never appear, whatever ALLOWED says (the issue's own words; kept apart so a
# loosened ALLOWED cannot quietly drop them).
FORBIDDEN: list[tuple[str, str]] = [
    *((src, dst) for src in ("codecs",) for dst in PRODUCT_PARTS - {"codecs"}),
    *(("drivers", dst) for dst in ("buffer", "uplink", "commands", "agent", "ops")),
    *(("buffer", dst) for dst in ("uplink", "commands", "drivers", "transports", "agent")),
    *((src, dst) for src in PRODUCT_PARTS for dst in ("hil", "bench", "tests")),
    ("hil", "bench"), ("hil", "tests"), ("bench", "tests"),
]
# Standard-library modules a codec must not touch: codecs do no I/O and read no clock.
CODEC_FORBIDDEN_STDLIB = frozenset({
    "asyncio", "logging", "time", "os", "socket", "ssl", "select", "selectors", "threading",
    "subprocess", "sqlite3", "pathlib", "io", "random",
})

# Third-party library -> the edge/ modules that import it (exactly these). A protocol library
# has one adapter module; a library missing here fails the test until someone places it.
LIBRARIES: dict[str, frozenset[str]] = {
    "pymodbus": frozenset({"edge.transports.modbus"}),
    "serial": frozenset({"edge.transports.serial"}),
    "serial_asyncio_fast": frozenset({"edge.transports.serial"}),
    "paho": frozenset({"edge.transports.mqtt"}),
    "nacl": frozenset({"edge.security.signing"}),
    "cryptography": frozenset({"edge.preflight"}),  # X.509 expiry/CN checks of `edge check`
    "astral": frozenset({"edge.drivers.sun"}),
    "ruamel": frozenset({"edge.config_loader"}),
    "aiohttp": frozenset({"edge.ops.http_site", "edge.uplink.https"}),
    # the validating step only (D86; tests/test_runtime_imports.py: never in the agent's
    # process): the loader, the wire models, and lazy imports in the shapes' schema hooks,
    # the config's two schema hooks and the command catalogue's JSON Schemas
    "pydantic": frozenset({"edge.config_loader", "edge.wire", "edge.shapes", "edge.kinds.device",
                           "edge.commands.catalogue"}),
    "pydantic_core": frozenset({"edge.config_loader", "edge.shapes", "edge.kinds.device"}),
}
# Libraries allowed in more than one module, and why: aiohttp is two libraries in one, an HTTP
# server (the local pages; handlers see http_site's neutral Request and Reply) and a client.
MULTI_IMPORTER: dict[str, str] = {
    "pydantic": "not a protocol: validation, run only in the validating step (D86)",
    "pydantic_core": "not a protocol: validation, run only in the validating step (D86)",
    "aiohttp": "server in ops/http_site.py (handlers see its Request and Reply), "
               "client in uplink/https.py",
}
# Used throughout, owned by no adapter: typing, not protocols.
GENERAL_LIBRARIES = frozenset({"typing_extensions"})
# A standard-library module that only one part may import.
PART_ONLY_STDLIB: dict[str, str] = {"sqlite3": "buffer"}  # nothing outside buffer/ writes SQL
# Only this module builds an SSL context (CA, client certificate); the others take one.
TLS_BUILDER = "edge.transports.tls"
TLS_BUILD_CALLS = frozenset({"SSLContext", "create_default_context", "load_cert_chain",
                             "load_verify_locations"})

# Task-creating calls in edge/ not made on a TaskGroup: (module, enclosing function) -> why.
# Every other task the agent starts is created by ``tg.create_task`` inside its TaskGroup.
TASK_ALLOW: dict[tuple[str, str], str] = {
    ("edge.buffer.async_outbox", "AsyncOutbox.detach"):
        "an outbox write that must outlive its cancelled caller; the outbox owns it and "
        "close() awaits, then cancels, every one (review finding 7)",
    ("edge.transports.mqtt", "MqttLink.next_inbound"):
        "a queue getter raced against the link's closed future in asyncio.wait; cancelled "
        "in the same call's finally",
    ("edge.drivers.broadcast", "BroadcastQueue.run"):
        "the clip on air, shielded so an emergency can cancel the clip and not the queue; "
        "awaited in the same loop turn",
    ("edge.buffer.async_outbox", "AsyncOutbox._append_retrying_alarms"):
        "shield(coroutine) wraps the store append in a task so a cancelled writer still "
        "finishes the transaction it started; awaited in the same call",
}
TASK_CALLS = frozenset({"create_task", "ensure_future", "run_coroutine_threadsafe"})
# These wrap a coroutine argument in a task of their own (wait_for does on Python 3.11).
IMPLICIT_TASK_CALLS = frozenset({"shield", "gather", "wait_for"})


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name: a module, or module.attribute for ``from m import a``
    line: int


@dataclass(frozen=True)
class TaskCall:
    call: str  # source text of the called expression
    function: str  # qualified name of the enclosing function ("" at module level)
    line: int


@dataclass
class Module:
    name: str
    imports: list[Import] = field(default_factory=list)
    tls_builds: list[int] = field(default_factory=list)  # lines
    loose_tasks: list[TaskCall] = field(default_factory=list)  # not on a TaskGroup


def part_of(name: str) -> str | None:
    """Return the part of a module (or of module.attribute); None if none claims it."""
    if name in EXACT_PARTS:
        return EXACT_PARTS[name]
    best = max((k for k in PARTS if name == k or name.startswith(k + ".")), key=len,
               default=None)
    return None if best is None else PARTS[best]


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _third_party(name: str) -> bool:
    top = _top(name)
    return top not in sys.stdlib_module_names and top not in {"edge", "hil", "bench", "tests",
                                                             "__future__"}


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: Module, package: str) -> None:
        self.module, self.package = module, package
        self.scope: list[str] = []
        self.task_groups: set[str] = set()  # expressions known to be TaskGroups

    def visit_Import(self, node: ast.Import) -> None:
        self.module.imports += [Import(a.name, node.lineno) for a in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            parts = self.package.split(".")
            parts = parts[:len(parts) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        self.module.imports.append(Import(base, node.lineno))
        self.module.imports += [Import(f"{base}.{a.name}", node.lineno) for a in node.names]

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if not isinstance(node, ast.ClassDef):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                if arg.annotation is not None and "TaskGroup" in ast.unparse(arg.annotation):
                    self.task_groups.add(arg.arg)
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped  # noqa: N815

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if "TaskGroup" in ast.unparse(node.annotation):
            self.task_groups.add(ast.unparse(node.target))
        self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        for item in node.items:
            if item.optional_vars is not None and "TaskGroup" in ast.unparse(item.context_expr):
                self.task_groups.add(ast.unparse(item.optional_vars))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else \
            func.id if isinstance(func, ast.Name) else ""
        if name in TLS_BUILD_CALLS:
            self.module.tls_builds.append(node.lineno)
        implicit = name in IMPLICIT_TASK_CALLS and any(isinstance(a, ast.Call) for a in node.args)
        if name in TASK_CALLS or implicit:
            on_group = isinstance(func, ast.Attribute) and name == "create_task" and \
                ast.unparse(func.value) in self.task_groups
            if not on_group:
                self.module.loose_tasks.append(
                    TaskCall(ast.unparse(func), ".".join(self.scope), node.lineno))
        self.generic_visit(node)


def parse_module(name: str, source: str, *, is_package: bool = False) -> Module:
    """Return the imports, SSL-context builds and loose task calls of one module's source."""
    module = Module(name)
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    # a first pass learns the TaskGroup names (a method may use self._tg above __init__)
    first = _Visitor(Module(name), package)
    first.visit(tree)
    visitor = _Visitor(module, package)
    visitor.task_groups = first.task_groups
    visitor.visit(tree)
    return module


def scan(root: Path = ROOT) -> dict[str, Module]:
    """Parse every module of edge/, hil/ and bench/."""
    modules: dict[str, Module] = {}
    for directory in SOURCE_DIRS:
        for path in sorted((root / directory).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = parse_module(name, path.read_text(encoding="utf-8"),
                                         is_package=is_package)
    return modules


def _edges(modules: Mapping[str, Module]) -> Iterable[tuple[str, str, Module, Import]]:
    """Yield (importer part, imported part, module, import) for imports between parts."""
    for module in modules.values():
        src = part_of(module.name)
        for imp in module.imports:
            dst = part_of(imp.target)
            if src is not None and dst is not None and dst != src:
                yield src, dst, module, imp


def _where(module: Module, line: int) -> str:
    return f"{module.name}:{line}"


def check_unplaced(modules: Mapping[str, Module]) -> list[str]:
    """Every module belongs to a part."""
    return [f"{name} belongs to no part: add it to PARTS and docs/architecture.md"
            for name in modules if part_of(name) is None]


def check_allowed(modules: Mapping[str, Module]) -> list[str]:
    """Every import between parts is in ALLOWED."""
    return [f"{_where(m, i.line)}: {src} may not import {dst} ({i.target})"
            for src, dst, m, i in _edges(modules) if dst not in ALLOWED[src]]


def check_forbidden(modules: Mapping[str, Module]) -> list[str]:
    """No import crosses a FORBIDDEN edge."""
    never = set(FORBIDDEN)
    return [f"{_where(m, i.line)}: {src} must never import {dst} ({i.target})"
            for src, dst, m, i in _edges(modules) if (src, dst) in never]


def check_codecs(modules: Mapping[str, Module]) -> list[str]:
    """Codecs: standard library only, no I/O or clock, nothing of edge outside _codecs."""
    problems = []
    for module in modules.values():
        if part_of(module.name) != "codecs":
            continue
        for imp in module.imports:
            top = _top(imp.target)
            if top == "edge" and part_of(imp.target) != "codecs":
                problems.append(f"{_where(module, imp.line)}: a codec imports {imp.target}")
            elif _third_party(imp.target) or top in CODEC_FORBIDDEN_STDLIB:
                problems.append(f"{_where(module, imp.line)}: a codec imports {top}")
    return problems


def _product(modules: Mapping[str, Module]) -> Iterable[Module]:
    return (m for m in modules.values() if part_of(m.name) in PRODUCT_PARTS)


def check_libraries(modules: Mapping[str, Module]) -> list[str]:
    """Each third-party library: imported by exactly the modules LIBRARIES names."""
    importers: dict[str, set[str]] = {}
    problems = []
    for module in _product(modules):
        for imp in module.imports:
            top = _top(imp.target)
            if _third_party(imp.target) and top not in GENERAL_LIBRARIES:
                importers.setdefault(top, set()).add(module.name)
            if top in PART_ONLY_STDLIB and part_of(module.name) != PART_ONLY_STDLIB[top]:
                problems.append(f"{_where(module, imp.line)}: {top} is for "
                                f"{PART_ONLY_STDLIB[top]}/ only")
        if module.tls_builds and module.name != TLS_BUILDER:
            problems.append(f"{_where(module, module.tls_builds[0])}: builds an SSL context "
                            f"(only {TLS_BUILDER} does)")
    for lib, found in sorted(importers.items()):
        wanted = LIBRARIES.get(lib)
        if wanted is None:
            problems.append(f"{lib} ({sorted(found)}) is in no LIBRARIES entry: give it one "
                            f"adapter module")
        elif found != wanted:
            problems.append(f"{lib}: imported by {sorted(found)}, expected {sorted(wanted)}")
    for lib, wanted in LIBRARIES.items():
        if len(wanted) != 1 and lib not in MULTI_IMPORTER:
            problems.append(f"{lib}: {len(wanted)} importers; a protocol library has one")
    return problems


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def check_cycles(modules: Mapping[str, Module]) -> list[str]:
    """The parts import one another without a cycle (lazy imports included)."""
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in _edges(modules):
        graph.setdefault(src, set()).add(dst)
    cycle = find_cycle(graph)
    return [] if cycle is None else [f"import cycle between parts: {' -> '.join(cycle)}"]


def check_module_cycles(modules: Mapping[str, Module]) -> list[str]:
    """No two modules of edge/ import each other, even through others or lazily."""
    graph: dict[str, set[str]] = {}
    for module in _product(modules):
        for imp in module.imports:
            target = imp.target  # module.attribute -> module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module.name and part_of(target) in PRODUCT_PARTS:
                graph.setdefault(module.name, set()).add(target)
    cycle = find_cycle(graph)
    return [] if cycle is None else [f"import cycle between modules: {' -> '.join(cycle)}"]


def check_tasks(modules: Mapping[str, Module]) -> list[str]:
    """Tasks are created on a TaskGroup, or TASK_ALLOW says why not; no stale entries."""
    problems, seen = [], set()
    for module in _product(modules):
        for call in module.loose_tasks:
            key = (module.name, call.function)
            seen.add(key)
            if key not in TASK_ALLOW:
                problems.append(f"{_where(module, call.line)}: {call.call}() in "
                                f"{call.function or 'module'} is in no TaskGroup")
    problems += [f"TASK_ALLOW entry {key} matches no call any more: remove it"
                 for key in TASK_ALLOW if key[0] in modules and key not in seen]
    return problems


# The uplink sees the outbox through its lease/ack interface only (issue 13): not the store,
# the stats or the journal of the AsyncOutbox the agent hands it.
UPLINK_BUFFER_INTERFACE = "edge.buffer.lease"


def check_uplink_interface(modules: Mapping[str, Module]) -> list[str]:
    """The uplink imports from edge.buffer only the lease interface module."""
    return [f"{_where(m, i.line)}: the uplink imports {i.target}, not only "
            f"{UPLINK_BUFFER_INTERFACE}"
            for m in modules.values() if part_of(m.name) == "uplink"
            for i in m.imports
            if i.target.startswith("edge.buffer.")
            and i.target != UPLINK_BUFFER_INTERFACE
            and not i.target.startswith(UPLINK_BUFFER_INTERFACE + ".")]


Check = Callable[[Mapping[str, Module]], list[str]]
CHECKS: list[Check] = [check_unplaced, check_allowed, check_forbidden, check_codecs, check_libraries,
                       check_cycles, check_module_cycles, check_tasks, check_uplink_interface]


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return scan()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_tree_keeps_the_rule(modules: dict[str, Module], check: Check) -> None:
    problems = check(modules)
    assert problems == [], "\n".join(problems)


def test_the_scan_sees_the_tree(modules: dict[str, Module]) -> None:
    # a scan that found nothing would pass every rule
    assert {"edge.agent", "edge.drivers._codecs.witmotion", "hil.sims.modbus_sim"} <= set(modules)
    assert any(i.target.startswith("pymodbus") for i in modules["edge.transports.modbus"].imports)


def test_the_allowed_table_is_a_dag_and_keeps_the_forbidden_edges() -> None:
    assert find_cycle(ALLOWED) is None
    assert [(s, d) for s, d in FORBIDDEN if d in ALLOWED[s]] == []


def _doc_table() -> dict[str, frozenset[str]]:
    """Rows ``| `part` | `a`, `b` |`` of the allowed-imports table in docs/architecture.md."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- allowed-imports -->")[1].split("<!-- /allowed-imports -->")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and (m := re.fullmatch(r"`(\w+)`", cells[0])):
            rows[m.group(1)] = frozenset(re.findall(r"`(\w+)`", cells[1]))
    return rows


def test_the_doc_shows_the_same_table() -> None:
    product = {p: a for p, a in ALLOWED.items() if p in PRODUCT_PARTS}
    assert _doc_table() == product


# --- self-tests: each rule fails on a module that breaks it ---------------------------------

def _with(modules: dict[str, Module], name: str, source: str) -> dict[str, Module]:
    return {**modules, name: parse_module(name, source)}


BREAKERS: list[tuple[Check, str, str]] = [
    (check_codecs, "edge.drivers._codecs.bad", "from edge.errors import DeviceError\n"),
    (check_codecs, "edge.drivers._codecs.bad", "import time\n"),
    (check_codecs, "edge.drivers._codecs.bad", "def f():\n    import pymodbus\n"),
    (check_forbidden, "edge.drivers.bad", "def f():\n    from edge.buffer.store import Outbox\n"),
    (check_forbidden, "edge.drivers.bad", "from edge.uplink import mqtt\n"),
    (check_forbidden, "edge.drivers.bad", "import edge.commands.processor\n"),
    (check_forbidden, "edge.buffer.bad", "from edge.uplink.batches import SignedBatch\n"),
    (check_forbidden, "edge.buffer.bad", "from edge.commands import keys\n"),
    (check_forbidden, "edge.buffer.bad", "from edge.drivers.base import Reading\n"),
    (check_forbidden, "edge.ops.bad", "from hil.sims import wire\n"),
    (check_forbidden, "edge.cli", "import bench.common\n"),
    (check_forbidden, "edge.sink", "from tests.cfg import write_config\n"),
    (check_allowed, "edge.uplink.bad", "from edge.commands.processor import x\n"),
    (check_allowed, "edge.config", "if TYPE_CHECKING:\n    from edge.drivers.base import D\n"),
    (check_unplaced, "edge.newthing", "x = 1\n"),
    (check_libraries, "edge.drivers.bad", "from pymodbus.client import AsyncModbusTcpClient\n"),
    (check_libraries, "edge.uplink.bad", "import paho.mqtt.client as mqtt\n"),
    (check_libraries, "edge.commands.bad", "def f():\n    import nacl.signing\n"),
    (check_libraries, "edge.drivers.bad", "import serial\n"),
    (check_libraries, "edge.ops.bad", "import requests\n"),
    (check_libraries, "edge.sink", "import sqlite3\n"),
    (check_libraries, "edge.uplink.bad", "import ssl\nctx = ssl.create_default_context()\n"),
    (check_uplink_interface, "edge.uplink.bad", "from edge.buffer.async_outbox import AsyncOutbox\n"),
    (check_uplink_interface, "edge.uplink.bad", "from edge.buffer import store\n"),
    (check_uplink_interface, "edge.uplink.bad",
     "if TYPE_CHECKING:\n    import edge.buffer.store\n"),
    (check_cycles, "edge.security.bad", "from edge.uplink.mqtt import MqttUplink\n"),
    (check_module_cycles, "edge.atomic_file", "def f():\n    from edge.clock import Clock\n"),
    (check_tasks, "edge.drivers.bad",
     "import asyncio\nasync def f(c):\n    asyncio.create_task(c)\n"),
    (check_tasks, "edge.drivers.bad",
     "import asyncio\nasync def f(c):\n    asyncio.get_running_loop().create_task(c)\n"),
    (check_tasks, "edge.drivers.bad", "from asyncio import ensure_future\nensure_future(c)\n"),
    (check_tasks, "edge.drivers.bad",  # shield(coroutine) makes a task of its own
     "import asyncio\nasync def f():\n    await asyncio.shield(g())\n"),
    (check_tasks, "edge.drivers.bad",  # a TaskGroup elsewhere does not bless another receiver
     "import asyncio\nasync def f(c, loop):\n    async with asyncio.TaskGroup() as tg:\n"
     "        loop.create_task(c)\n"),
]


@pytest.mark.parametrize(("check", "name", "source"), BREAKERS,
                         ids=[f"{c.__name__}:{s.strip().splitlines()[-1].strip()[:40]}"
                              for c, _, s in BREAKERS])
def test_each_rule_can_fail(modules: dict[str, Module], check: Check, name: str,
                            source: str) -> None:
    assert check(modules) == []  # the tree itself is clean: the failure below is the module's
    assert check(_with(modules, name, source)) != []


def test_tasks_on_a_task_group_pass() -> None:
    source = ("import asyncio\nclass A:\n    def __init__(self):\n"
              "        self._tg: asyncio.TaskGroup | None = None\n"
              "    async def go(self, c):\n        self._tg.create_task(c)\n"
              "async def f(c, group: asyncio.TaskGroup):\n"
              "    async with asyncio.TaskGroup() as tg:\n        tg.create_task(c)\n"
              "    group.create_task(c)\n"
              "    await asyncio.shield(c)\n    await asyncio.gather(*pending)\n")
    assert check_tasks({"edge.drivers.ok": parse_module("edge.drivers.ok", source)}) == []


def test_a_cycle_is_found_without_any_other_rule() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"]}) is None
    both = {"edge.config": parse_module("edge.config", "import edge.security.keys\n"),
            "edge.security.keys": parse_module("edge.security.keys", "import edge.config\n")}
    assert check_cycles(both) == ["import cycle between parts: config -> security -> config"]


def test_a_stale_task_allowance_is_reported() -> None:
    quiet = {"edge.drivers.broadcast": parse_module("edge.drivers.broadcast", "x = 1\n")}
    assert any("matches no call" in p for p in check_tasks(quiet))


def test_relative_imports_resolve() -> None:
    module = parse_module("edge.drivers.x", "from ..buffer import store\nfrom . import base\n")
    assert {i.target for i in module.imports} >= {"edge.buffer.store", "edge.drivers.base"}
