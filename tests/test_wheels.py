"""Offline wheelhouses (issue 22): built per Python x architecture, installed with --no-index.

`make test` builds the running interpreter's own house (cached in var/wheels-test/, rebuilt
when pyproject.toml changes; ~2 min the first time, seconds after), installs it with
systemd/install.sh --wheels into a staged root and runs that agent against a real broker.
`make wheels` builds all nine houses and checks each resolves offline for its target's tags
with the same `resolve_check` the tests below prove able to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.keys import describe, load_key
from hil.broker import Mosquitto, free_port
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from tests.cfg import tilt_device, write_config
from tests.helpers import wait_until
from tools.wheelhouse import Target, isolated_env, parse_target, resolve_check

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "systemd" / "install.sh"
GW = "gw-320508-0007"


def running_target() -> Target:
    """The house this interpreter on this machine needs (what install.sh would pick)."""
    machine = {"arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return Target(f"{sys.version_info[0]}.{sys.version_info[1]}", machine)


@pytest.fixture(scope="session")
def wheelhouses() -> Path:
    """var/wheels-test/ with the running interpreter's house, complete (downloads once)."""
    out = ROOT / "var" / "wheels-test"
    target = running_target()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--out",
                           str(out), "--targets", target.name, "--reuse"],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{target.name:<14} complete" in done.stdout, done.stdout
    return out


def _python3_on_path(folder: Path) -> dict[str, str]:
    """An isolated pip environment whose `python3` is this interpreter (install.sh runs it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python3").symlink_to(sys.executable)
    env = isolated_env()
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{folder}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _stage(root: Path, wheels: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--no-start", "--wheels", str(wheels)],
                          env={**env, "DESTDIR": str(root)}, capture_output=True, text=True,
                          timeout=600, check=False)


def _house(folder: Path, target: str, *, incomplete: str | None = None) -> Path:
    """A house as `make wheels` marks it (TARGET, and INCOMPLETE when wheels are missing)."""
    folder.mkdir(parents=True)
    t = parse_target(target)
    (folder / "TARGET").write_text(json.dumps(
        {"arch": t.arch, "glibc_min": "2.31", "python": t.python, "requirements": "x",
         "target": t.name}, sort_keys=True) + "\n", encoding="utf-8")
    if incomplete is not None:
        (folder / "INCOMPLETE").write_text(incomplete, encoding="utf-8")
    return folder


@pytest.mark.slow
async def test_the_wheelhouse_installs_offline_and_that_agent_delivers(
        wheelhouses: Path, plain_broker: Mosquitto, tmp_path: Path) -> None:
    target = running_target()
    env = _python3_on_path(tmp_path / "bin")
    root = tmp_path / "root"
    # the parent folder of every house, as copied to a gateway: install.sh picks its own
    staged = await asyncio.to_thread(_stage, root, wheelhouses, env)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert f"using wheelhouse {wheelhouses / target.name} (this gateway: {target.name})" in (
        staged.stdout)
    venv_python = root / "opt/edge/venv/bin/python"
    # every module the agent needs comes from that venv (pip saw no index, no find-links
    # beyond the house: isolated_env), not from the repository or this test's venv
    where = subprocess.run([str(venv_python), "-c",
                            "import edge, nacl, pydantic_core, paho, pymodbus, aiohttp, "
                            "cryptography, ruamel.yaml as y; "
                            "print(edge.__file__, nacl.__file__, pydantic_core.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(root)) for p in where.stdout.split()), where.stdout

    modbus_port = free_port()
    sim = ModbusTcpSim({80: tilt_unit()}, modbus_port)
    await sim.start()
    loaded = write_config(tmp_path / "site", broker_port=plain_broker.port, pki=None,
                          devices=[tilt_device("manhole-01", "cabinet", 80)],
                          buses=[{"name": "cabinet", "type": "modbus_tcp",
                                  "host": "127.0.0.1", "port": modbus_port}])
    key = describe(load_key(loaded.resolve(loaded.config.gateway.key_file)))
    store = ReceiverStore(tmp_path / "receiver.db")
    receiver = Receiver(store, load_gateway_keys({GW: key["public_key_hex"]}))
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=plain_broker.port,
                                      tls=None, ready=ready), name="receiver")
    agent = subprocess.Popen([str(venv_python), "-m", "edge.cli", "run", "--config",
                              str(loaded.path)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await wait_until(lambda: store.seq_count(GW)[0] >= 3 or agent.poll() is not None, 60,
                         "signed readings from the wheelhouse-installed agent")
        assert agent.poll() is None, "the agent exited"
        assert store.counters().get("rejected.signature", 0) == 0
    finally:
        if agent.poll() is None:
            agent.terminate()
        out, _ = await asyncio.to_thread(agent.communicate, timeout=30)
        rx.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rx
        store.close()
        await sim.stop()
    assert agent.returncode == 0, out.decode(errors="replace")[-3000:]


def test_a_house_resolves_offline_only_for_its_own_target(wheelhouses: Path,
                                                           tmp_path: Path) -> None:
    target = running_target()
    house = wheelhouses / target.name
    assert resolve_check(house, target) is None
    # the check is what `make wheels` runs for aarch64 and armv7l: it must see tags ...
    other = Target(target.python, "armv7l" if target.arch != "armv7l" else "x86_64")
    foreign = resolve_check(house, other)
    assert foreign is not None
    assert "No matching distribution found" in foreign, foreign  # aiohttp is cp311-x86_64
    # ... and a house missing one binary wheel
    holed = tmp_path / "holed"
    shutil.copytree(house, holed)
    for wheel in holed.glob("pydantic_core-*.whl"):
        wheel.unlink()
    missing = resolve_check(holed, target)
    assert missing is not None
    assert "pydantic-core" in missing.lower() or "pydantic_core" in missing.lower(), missing


def test_install_sh_refuses_when_no_house_matches_and_changes_nothing(tmp_path: Path) -> None:
    me = running_target()
    other = "cp311-armv7l" if me.name != "cp311-armv7l" else "cp313-x86_64"
    wheels = tmp_path / "wheels"
    _house(wheels / other, other)
    env = _python3_on_path(tmp_path / "bin")
    done = _stage(tmp_path / "root", wheels, env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"no wheelhouse for this gateway ({me.name}) in {wheels}; it has: {other}" in (
        done.stderr)
    assert not (tmp_path / "root").exists()  # refused before any user, venv or file
    # one house named directly, for another gateway
    done = _stage(tmp_path / "root", wheels / other, env)
    assert done.returncode == 1
    assert f"is for {other}; this gateway's python3 needs {me.name}" in done.stderr
    assert not (tmp_path / "root").exists()


def test_install_sh_refuses_an_incomplete_house_with_its_missing_wheels(tmp_path: Path) -> None:
    me = running_target()
    wheels = tmp_path / "wheels"
    _house(wheels / me.name, me.name, incomplete="PyNaCl==1.6.2\ncffi==2.1.1\n")
    done = _stage(tmp_path / "root", wheels, _python3_on_path(tmp_path / "bin"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "incomplete (no wheel for: PyNaCl==1.6.2 cffi==2.1.1" in done.stderr
    assert not (tmp_path / "root").exists()


def test_targets_cover_three_pythons_on_three_architectures() -> None:
    from tools.wheelhouse import all_targets

    assert {t.name for t in all_targets()} == {
        f"cp3{m}-{a}" for m in (11, 12, 13) for a in ("x86_64", "aarch64", "armv7l")}
    plats = parse_target("cp313-armv7l").platforms()
    # glibc 2.31 at most (Debian 11+); cryptography's armv7l wheel is manylinux_2_31
    assert plats[0] == "manylinux_2_31_armv7l"
    assert "manylinux2014_armv7l" in plats
    assert not any(p.startswith(("manylinux_2_32", "manylinux_2_36", "musllinux")) for p in plats)
    for bad in ("cp310-x86_64", "cp313-armv6l", "py3-x86_64", "cp313"):
        with pytest.raises(ValueError, match="unknown target"):
            parse_target(bad)


def test_requires_python_names_exactly_the_housed_and_tested_versions() -> None:
    import tomllib

    from packaging.specifiers import SpecifierSet

    from tools.wheelhouse import PYTHONS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    spec = SpecifierSet(project["requires-python"])
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if v in spec] == list(PYTHONS)
    assert {f"Programming Language :: Python :: {v}" for v in PYTHONS} <= set(
        project["classifiers"])
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.count("make test") == 2  # 3.11 (the default PYTHON) and 3.13
    assert 'make test PYTHON="$py313" VENV=.venv313' in ci
