"""Offline wheelhouses (issue 22): built per Python x architecture, installed with --no-index.

`make test` builds all nine houses as `make wheels` does (cached in var/wheels-test/, rebuilt
when the runtime dependencies change; 2.6-5.3 min the first time, seconds after), installs each
x86_64 house into a clean venv with --no-index and runs that agent against a real broker and
the receiver; install.sh --wheels is tested for which house it takes and what it refuses.
`make wheels` builds all nine houses and checks each resolves offline for its target's tags
with the same `resolve_check` the tests below prove able to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.security.keys import describe, load_key
from hil.broker import Mosquitto, free_port
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from tests.cfg import tilt_device, write_config
from tests.helpers import wait_until
from tools.wheelhouse import PYTHONS, Target, all_targets, isolated_env, parse_target, resolve_check

# building the nine houses from an empty cache takes minutes (fixture setup counts toward
# pytest-timeout's 120 s): a fresh CI clone has no var/wheels-test/ yet
pytestmark = pytest.mark.timeout(1500)

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "systemd" / "install.sh"
GW = "gw-320508-0007"


def running_target() -> Target:
    """The house this interpreter on this machine needs (what install.sh would pick)."""
    machine = {"arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return Target(f"{sys.version_info[0]}.{sys.version_info[1]}", machine)


LOCAL = ROOT / "wheels" / "local"  # wheels built once elsewhere (make armv7l-wheels)


@pytest.fixture(scope="session")
def wheelhouses() -> Path:
    """var/wheels-test/ with all nine houses, as `make wheels` builds them.

    Downloaded once, three at a time into pip's one cache, then reused while the runtime
    dependencies and wheels/local/ stay the same (an INCOMPLETE armv7l house too).
    """
    out = ROOT / "var" / "wheels-test"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--out",
                           str(out), "--reuse", "--jobs", "3", "--find-links", str(LOCAL),
                           "--targets", ",".join(t.name for t in all_targets())],
                          capture_output=True, text=True, timeout=1200, check=False)
    # only armv7l may lack wheels (cffi, PyNaCl: the test below says which)
    for target in all_targets():
        if target.arch != "armv7l":
            assert f"{target.name:<14} complete" in done.stdout, done.stdout + done.stderr
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return out


def python_here(version: str) -> str:
    """An interpreter that really is ``version``; in CI a missing one fails, else skips.

    A pyenv shim answers for a version that is installed but not selected with "command not
    found" (exit 127), so each candidate is asked for its version.
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [sys.executable, shutil.which(f"python{version}"),
                  *(str(v / "bin" / f"python{version}")
                    for v in sorted(pyenv.glob(f"{version}.*")))]
    for candidate in filter(None, candidates):
        asked = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info"
                                "[:2])"], capture_output=True, text=True, timeout=30,
                               check=False)
        if asked.returncode == 0 and asked.stdout.strip() == version:
            return candidate
    if os.environ.get("CI"):
        pytest.fail(f"CI needs Python {version}: every supported version's house is "
                    "installed and run (pyenv install, or apt-get install python3.X)")
    pytest.skip(f"no Python {version} on this machine")


def _clean_env() -> dict[str, str]:
    """pip sees no config, no PIP_* and no PYTHONPATH: only the house it is pointed at."""
    env = isolated_env()
    env.pop("PYTHONPATH", None)
    return env


def install_sh_python() -> str:
    """The interpreter install.sh builds the venv on when not told (/usr/bin/python3)."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def target_of(python: str) -> str:
    """Ask ``python`` which house it needs, as install.sh does."""
    return subprocess.run([python, "-c", "import platform, sys; print(f'cp{sys.version_info[0]}"
                           "{sys.version_info[1]}-{platform.machine()}')"],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def _stage(root: Path, wheels: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--no-start", "--wheels", str(wheels),
                           "--python", install_sh_python()],
                          env={**_clean_env(), "DESTDIR": str(root)}, capture_output=True,
                          text=True, timeout=600, check=False)


def _house(folder: Path, target: str, *, incomplete: str | None = None,
           glibc_min: str = "2.31") -> Path:
    """A house as `make wheels` marks it (TARGET, and INCOMPLETE when wheels are missing)."""
    folder.mkdir(parents=True)
    t = parse_target(target)
    (folder / "TARGET").write_text(json.dumps(
        {"arch": t.arch, "glibc_min": glibc_min, "python": t.python, "requirements": "x",
         "target": t.name}, sort_keys=True) + "\n", encoding="utf-8")
    if incomplete is not None:
        (folder / "INCOMPLETE").write_text(incomplete, encoding="utf-8")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("version", PYTHONS)
async def test_the_wheelhouse_installs_offline_into_a_clean_venv_and_that_agent_delivers(
        wheelhouses: Path, plain_broker: Mosquitto, tmp_path: Path, version: str) -> None:
    python = python_here(version)
    house = wheelhouses / Target(version, running_target().arch).name
    env = _clean_env()
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    venv_python = venv / "bin" / "python"
    installed = await asyncio.to_thread(
        subprocess.run, [str(venv_python), "-m", "pip", "install", "-q", "--no-index",
                         "--find-links", str(house), "edge"],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # every module the agent needs comes from that venv, not the repository or this venv
    where = subprocess.run([str(venv_python), "-c",
                            "import edge, nacl, pydantic_core, paho, pymodbus, aiohttp, "
                            "cryptography, ruamel.yaml as y; "
                            "print(edge.__file__, nacl.__file__, pydantic_core.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(venv)) for p in where.stdout.split()), where.stdout
    assert f"/python{version}/" in where.stdout, where.stdout  # that Python's own venv

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
    agent = subprocess.Popen([str(venv / "bin" / "edge"), "run", "--config", str(loaded.path)],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
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
    assert "No matching distribution found" in foreign, foreign  # aiohttp is cp3XX-x86_64
    # ... and a house missing one binary wheel
    holed = tmp_path / "holed"
    shutil.copytree(house, holed)
    for wheel in holed.glob("pydantic_core-*.whl"):
        wheel.unlink()
    missing = resolve_check(holed, target)
    assert missing is not None
    assert "pydantic-core" in missing.lower() or "pydantic_core" in missing.lower(), missing


def _local_names(target: Target) -> set[str]:
    """Names of wheels/local/ wheels that fit ``target`` (cffi per Python, PyNaCl abi3)."""
    abi = f"cp{target.python.replace('.', '')}"
    return {w.name.split("-")[0].lower() for w in LOCAL.glob(f"*_{target.arch}.whl")
            if f"-{abi}-{abi}-" in w.name or "-abi3-" in w.name}


@pytest.mark.slow
@pytest.mark.parametrize("version", PYTHONS)
def test_the_aarch64_and_armv7l_houses_resolve_or_lack_exactly_the_documented_wheels(
        wheelhouses: Path, version: str) -> None:
    aarch64 = Target(version, "aarch64")
    assert not (wheelhouses / aarch64.name / "INCOMPLETE").exists()
    assert resolve_check(wheelhouses / aarch64.name, aarch64) is None
    # armv7l: the index has no cffi nor PyNaCl (docs/platforms.md), nothing else is missing
    armv7l = Target(version, "armv7l")
    house = wheelhouses / armv7l.name
    expected = {"cffi", "pynacl"} - _local_names(armv7l)
    listed = (house / "INCOMPLETE").read_text(encoding="utf-8").split() if (
        house / "INCOMPLETE").exists() else []
    assert {pin.split("==")[0].lower() for pin in listed} == expected, listed
    error = resolve_check(house, armv7l)
    if expected:
        assert error is not None
        assert any(name in error.lower() for name in expected), error
    else:
        assert error is None


def test_install_sh_takes_the_house_of_its_interpreter_from_a_folder_of_houses(
        tmp_path: Path) -> None:
    me = target_of(install_sh_python())
    wheels = tmp_path / "wheels"
    for other in ("cp311-armv7l", "cp313-aarch64", "cp312-x86_64"):
        if other != me:
            _house(wheels / other, other)
    _house(wheels / me, me)  # marked, but empty: pip's offline dry run must refuse it
    done = _stage(tmp_path / "root", wheels)
    assert f"using wheelhouse {wheels / me} (this gateway: {me})" in done.stdout, (
        done.stdout + done.stderr)
    assert done.returncode == 1
    assert f"wheelhouse {wheels / me} does not install offline" in done.stderr
    assert "No matching distribution found for edge" in done.stderr  # --no-index: no PyPI
    assert not (tmp_path / "root").exists()  # refused before any user, venv or file


def test_install_sh_takes_armv7l_for_a_32_bit_userland_on_a_64_bit_kernel(
        tmp_path: Path) -> None:
    """32-bit Raspberry Pi OS on a Pi 4/5: uname says aarch64, the interpreter runs armv7l code.

    The interpreter is the real one with ``platform.machine()`` and the pointer size of such a
    gateway (a sitecustomize on its path): install.sh must pick the armv7l house, not aarch64.
    """
    fake = tmp_path / "fake-site"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import platform, struct\n"
        "platform.machine = lambda: 'aarch64'\n"
        "_calcsize = struct.calcsize\n"
        "struct.calcsize = lambda fmt: 4 if fmt == 'P' else _calcsize(fmt)\n", encoding="utf-8")
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={fake} exec {install_sh_python()} "$@"\n',
                      encoding="utf-8")
    python.chmod(0o755)
    version = target_of(install_sh_python()).split("-")[0]
    wheels = tmp_path / "wheels"
    _house(wheels / f"{version}-aarch64", f"{version}-aarch64")
    _house(wheels / f"{version}-armv7l", f"{version}-armv7l")  # marked, empty: the dry run
    done = subprocess.run(["bash", str(INSTALL), "--no-start", "--wheels", str(wheels),
                           "--python", str(python)],
                          env={**_clean_env(), "DESTDIR": str(tmp_path / "root")},
                          capture_output=True, text=True, timeout=600, check=False)
    want = wheels / f"{version}-armv7l"
    assert f"using wheelhouse {want} (this gateway: {version}-armv7l)" in done.stdout, (
        done.stdout + done.stderr)
    assert done.returncode == 1  # the empty house does not install: refused before any change
    assert not (tmp_path / "root").exists()


def test_install_sh_refuses_when_no_house_matches_and_changes_nothing(tmp_path: Path) -> None:
    me = target_of(install_sh_python())
    other = "cp311-armv7l" if me != "cp311-armv7l" else "cp313-x86_64"
    wheels = tmp_path / "wheels"
    _house(wheels / other, other)
    done = _stage(tmp_path / "root", wheels)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"no wheelhouse for this gateway ({me}) in {wheels}; it has: {other}" in (
        done.stderr)
    assert not (tmp_path / "root").exists()  # refused before any user, venv or file
    # one house named directly, for another gateway
    done = _stage(tmp_path / "root", wheels / other)
    assert done.returncode == 1
    assert f"is for {other}; this gateway's {install_sh_python()} needs {me}" in done.stderr
    assert not (tmp_path / "root").exists()


def test_install_sh_refuses_an_incomplete_house_with_its_missing_wheels(tmp_path: Path) -> None:
    me = target_of(install_sh_python())
    wheels = tmp_path / "wheels"
    _house(wheels / me, me, incomplete="PyNaCl==1.6.2\ncffi==2.1.1\n")
    done = _stage(tmp_path / "root", wheels)
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
    assert ci.count("make test") == 2  # 3.11 and 3.13, each on an interpreter verified first
    assert 'py311="$(.ci/find-python 3.11)"' in ci
    assert 'make test PYTHON="$py311" ||' in ci
    assert 'make test PYTHON="$py313" VENV=.venv313' in ci


def test_ci_takes_no_other_version_for_a_leg(tmp_path: Path) -> None:
    """A runner without python3.11 must fail the 3.11 leg, not run it on python3 (3.13)."""
    find = ROOT / ".ci" / "find-python"
    other = python_here("3.13")
    (fake := tmp_path / "bin").mkdir()
    (fake / "python3.11").symlink_to(other)  # answers to the name, is 3.13
    done = subprocess.run([str(find), "3.11"], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": f"{fake}:/usr/bin:/bin",
                                            "PYENV_ROOT": str(tmp_path / "no-pyenv"),
                                            "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stdout
    assert "CI needs Python 3.11 and found none" in done.stderr
    found = subprocess.run([str(find), "3.11"], capture_output=True, text=True, timeout=60,
                           check=False)
    if found.returncode != 0:
        python_here("3.11")  # fails in CI, skips elsewhere
    version = subprocess.run([found.stdout.strip(), "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.startswith("3.11."), version.stdout


@pytest.mark.slow
def test_an_incomplete_house_names_every_wheel_the_index_lacks(wheelhouses: Path,
                                                               tmp_path: Path) -> None:
    # An index that has only what the running interpreter's x86_64 house holds: for armv7l
    # every binary wheel in it is missing, the pure-Python ones are not (offline, ~30 s)
    me = running_target()
    source = wheelhouses / me.name
    target = Target(me.python, "armv7l" if me.arch != "armv7l" else "x86_64")
    (empty := tmp_path / "empty-index").mkdir()
    (edge_wheel,) = (wheelhouses / "_edge").glob("edge-*.whl")
    env = {**_clean_env(), "PIP_INDEX_URL": empty.as_uri()}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--out",
                           str(tmp_path / "out"), "--targets", target.name, "--find-links",
                           str(source), "--edge-wheel", str(edge_wheel)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    binary = {w.name.split("-")[0].lower().replace("_", "-") for w in source.glob("*.whl")
              if not w.name.endswith("-none-any.whl")}
    assert {"pydantic-core", "pynacl", "cffi", "cryptography"} <= binary
    house = tmp_path / "out" / target.name
    listed = house.joinpath("INCOMPLETE").read_text(encoding="utf-8").split()
    assert {pin.split("==")[0].lower().replace("_", "-") for pin in listed} == binary
    assert f"{target.name:<14} INCOMPLETE" in done.stdout
    assert f"  {target.name}: " in done.stderr  # the list, on one line per house
    assert all(pin in done.stderr for pin in listed)
    # what does exist was fetched: the house is complete but for the listed wheels
    assert {w.name.split("-")[0] for w in house.glob("*.whl")} >= {"pydantic", "paho_mqtt",
                                                                      "edge"}


def test_no_extra_names_the_project_itself() -> None:
    """`edge[...]` in an extra resolves against PyPI's unrelated "edge" outside this checkout."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for name, deps in extras.items():
        assert not [d for d in deps if d.replace(" ", "").lower().startswith("edge[")], name


# --- install.sh checks everything before it changes anything (issue 22 integrator #5-#7) ---

def _pyenv_python(version: str) -> str | None:
    """A pyenv interpreter of ``version`` (3.10: an unsupported one), or None."""
    for candidate in sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*")):
        exe = candidate / "bin" / f"python{version}"
        if exe.exists():
            return str(exe)
    return None


def test_install_sh_help_prints_its_usage() -> None:
    done = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "unknown option" not in done.stderr
    assert "--wheels DIR" in done.stdout
    assert "--python PATH" in done.stdout


def test_install_sh_says_a_missing_wheels_folder_does_not_exist(tmp_path: Path) -> None:
    done = _stage(tmp_path / "root", tmp_path / "nowhere")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"--wheels {tmp_path / 'nowhere'}: no such folder" in done.stderr
    assert "it has: none" not in done.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("wheels", [False, True])
def test_install_sh_refuses_an_unsupported_python_before_any_change(tmp_path: Path,
                                                                    wheels: bool) -> None:
    py310 = _pyenv_python("3.10")
    if py310 is None:
        pytest.skip("no Python 3.10 here to stand for an unsupported interpreter")
    args = ["--wheels", str(_house(tmp_path / "wheels" / "cp311-x86_64", "cp311-x86_64"))
            ] if wheels else []
    done = subprocess.run(["bash", str(INSTALL), "--no-start", "--python", py310, *args],
                          env={**_clean_env(), "DESTDIR": str(tmp_path / "root")},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{py310} is Python 3.10; edge needs Python 3.11 to 3.13" in done.stderr
    assert "make wheels" not in done.stderr  # make wheels refuses cp310 as well
    assert not (tmp_path / "root").exists()


def test_install_sh_refuses_a_house_for_a_newer_glibc(tmp_path: Path) -> None:
    me = target_of(install_sh_python())
    house = _house(tmp_path / "wheels" / me, me, glibc_min="2.99")
    done = _stage(tmp_path / "root", house)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "needs glibc 2.99 or newer; this gateway has glibc 2." in done.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.slow
def test_install_sh_dry_runs_the_house_offline_before_any_change(wheelhouses: Path,
                                                                  tmp_path: Path) -> None:
    # a damaged house: one wheel gone, no INCOMPLETE file; refused with pip's reason
    me = target_of(install_sh_python())
    damaged = tmp_path / "wheels" / me
    shutil.copytree(wheelhouses / me, damaged)
    for wheel in damaged.glob("pynacl-*.whl"):
        wheel.unlink()
    (scratch := tmp_path / "tmp").mkdir()
    done = subprocess.run(["bash", str(INSTALL), "--no-start", "--wheels", str(tmp_path / "wheels"),
                           "--python", install_sh_python()],
                          env={**_clean_env(), "DESTDIR": str(tmp_path / "root"),
                               "TMPDIR": str(scratch)},
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"wheelhouse {damaged} does not install offline" in done.stderr
    assert "pynacl" in done.stderr.lower()
    assert not (tmp_path / "root").exists()
    assert not list(scratch.iterdir())  # the throw-away venv is gone too
    # the same house whole passes the dry run (and the install then goes on)
    shutil.rmtree(damaged)
    shutil.copytree(wheelhouses / me, damaged)
    whole = _stage(tmp_path / "root", tmp_path / "wheels")
    assert "does not install offline" not in whole.stderr
    assert whole.returncode == 0, whole.stdout + whole.stderr


def test_make_wheels_says_per_house_how_to_complete_it() -> None:
    from tools.wheelhouse import advice

    missing = ["PyNaCl==1.6.2", "cffi==2.1.1"]
    for scripted in ("cp311-armv7l", "cp313-armv7l"):
        assert "sudo make armv7l-wheels" in advice(parse_target(scripted), missing)
    # no Debian armhf 3.12 to build in: the script cannot, a device can (the command)
    cp312 = advice(parse_target("cp312-armv7l"), missing)
    assert "make armv7l-wheels` builds them" not in cp312
    assert "no scripted step" in cp312
    build = ("python3.12 -m venv /tmp/bv && /tmp/bv/bin/pip wheel --no-deps --no-binary cffi "
             "-w /tmp/out cffi==2.1.1")
    assert build in cp312
    assert "wheels/local/" in cp312
    # a wheel missing for x86_64 or aarch64 is no armv7l matter
    other = advice(parse_target("cp313-aarch64"), ["pydantic_core==9.9.9"])
    assert "armv7l" not in other
    assert "pydantic_core==9.9.9" in other
