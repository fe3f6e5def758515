"""Offline wheelhouses for gateways: one per (CPython version, CPU architecture).

    python tools/wheelhouse.py [--out wheels] [--targets cp311-x86_64,cp313-armv7l]
                               [--find-links wheels/local] [--reuse] [--jobs 3]

Each ``OUT/cpXY-ARCH/`` holds the ``edge`` wheel and a binary wheel of every dependency for
that interpreter and architecture, and a ``TARGET`` file naming both (``install.sh --wheels``
reads it). A house is checked after it is filled: pip resolves ``edge`` from it with
``--no-index`` for the target's tags (``--dry-run``), so a complete house installs offline.
When the index has no wheel of some pinned dependency for a target, the house is marked
``INCOMPLETE`` (the names, one per line) and the run ends with the list and exit status 1;
the complete houses are kept. Wheels built elsewhere (docs/platforms.md: cffi and PyNaCl for
armv7l) are taken from ``--find-links`` folders.

Only binary wheels: a gateway never compiles (no compiler, no Rust, no internet in a cabinet).
"""
# ruff: noqa: T201 - a command-line tool reports on stdout/stderr

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13")
ARCHES = ("x86_64", "aarch64", "armv7l")
# glibc 2.31 (Debian 11, Ubuntu 20.04) is the newest manylinux we accept: every gateway OS
# with Python >= 3.11 has it (Debian 12: 2.36, Ubuntu 24.04: 2.39), and cryptography's only
# armv7l wheel is manylinux_2_31 (docs/platforms.md).
GLIBC_MINOR_MAX = 31
PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Target:
    """One wheelhouse: a CPython version on a CPU architecture (glibc Linux)."""

    python: str  # "3.11"
    arch: str  # uname -m of the interpreter's userland: x86_64, aarch64, armv7l

    @property
    def name(self) -> str:
        """Return the folder name, e.g. ``cp311-armv7l``."""
        return f"cp{self.python.replace('.', '')}-{self.arch}"

    def platforms(self) -> list[str]:
        """Return pip ``--platform`` tags, newest first (pip does not expand manylinux_2_X)."""
        oldest = 5 if self.arch == "x86_64" else 17
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(GLIBC_MINOR_MAX, oldest - 1, -1)]
        tags.append(f"manylinux2014_{self.arch}")
        # a wheel built on a gateway (docs/platforms.md) carries the plain linux tag; the
        # index refuses linux_* uploads, so only --find-links folders can offer one
        tags.append(f"linux_{self.arch}")
        return tags

    def tag_args(self) -> list[str]:
        """Return pip's target-interpreter options for this house."""
        abi = f"cp{self.python.replace('.', '')}"
        args = ["--only-binary=:all:", "--python-version", self.python,
                "--implementation", "cp", "--abi", abi]
        for plat in self.platforms():
            args += ["--platform", plat]
        return args


def parse_target(text: str) -> Target:
    """Parse ``cp311-x86_64``; raise ValueError naming the accepted ones."""
    head, _, arch = text.partition("-")
    python = f"{head[2:3]}.{head[3:]}" if head.startswith("cp") and len(head) >= 4 else ""
    if python not in PYTHONS or arch not in ARCHES:
        raise ValueError(f"unknown target {text!r}: one of cp3{{11,12,13}}-"
                         f"{{{','.join(ARCHES)}}}")
    return Target(python, arch)


def all_targets() -> list[Target]:
    """Return the 9 supported targets."""
    return [Target(py, arch) for py in PYTHONS for arch in ARCHES]


def isolated_env() -> dict[str, str]:
    """Return an environment in which pip reads no config file and no PIP_* variable.

    A machine-wide ``find-links`` or extra index would let a check pass with wheels that are
    not in the house (this build machine has both in /etc/xdg/pip/pip.conf).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pip(args: list[str], *, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True,
                          text=True, timeout=PIP_TIMEOUT_S, check=False, env=env)


def requirements_digest() -> str:
    """Return a digest of what a house depends on: the runtime dependencies, the Python range.

    Dev extras are left out: adding a test tool must not make every cached house stale.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    key = json.dumps([project["dependencies"], project.get("requires-python")])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def build_edge_wheel(out: Path) -> Path:
    """Build the ``edge`` wheel (pure Python) into ``out/_edge`` and return its path."""
    dest = out / "_edge"
    shutil.rmtree(dest, ignore_errors=True)
    done = _pip(["wheel", "-q", "--no-deps", "-w", str(dest), str(ROOT)])
    if done.returncode != 0:
        raise SystemExit(f"building the edge wheel failed:\n{done.stderr[-3000:]}")
    (wheel,) = dest.glob("edge-*.whl")
    return wheel


def resolve_check(house: Path, target: Target) -> str | None:
    """Resolve ``edge`` from ``house`` alone for ``target``; return pip's error or None."""
    with tempfile.TemporaryDirectory() as tmp:
        done = _pip(["install", "--dry-run", "--ignore-installed", "--no-index",
                     "--find-links", str(house), "--target", tmp, *target.tag_args(), "edge"],
                    env=isolated_env())
    if done.returncode == 0:
        return None
    return done.stderr.strip()[-2000:] or done.stdout.strip()[-2000:]


def pins_for(wheel: Path, python: str, find_links: list[Path]) -> list[str]:
    """Return ``name==version`` of every dependency, as resolved for x86_64 at ``python``.

    The reference for a missing-wheel list: the same versions the complete houses carry.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        links = [a for link in find_links for a in ("--find-links", str(link))]
        done = _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                     str(report), "--target", str(Path(tmp) / "t"), *links,
                     *Target(python, "x86_64").tag_args(), str(wheel)])
        if done.returncode != 0:
            raise SystemExit(f"cannot resolve edge for Python {python} at all:\n"
                             f"{done.stderr[-3000:]}")
        installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs
                  if i["metadata"]["name"] != "edge")


def missing_in(house: Path, target: Target, pins: list[str], find_links: list[Path]
               ) -> list[str]:
    """Fetch each pin alone into ``house``; return those with no wheel for ``target``."""
    links = [a for link in find_links for a in ("--find-links", str(link))]
    missing = []
    for pin in pins:
        done = _pip(["download", "-q", "--no-deps", "-d", str(house), *links,
                     *target.tag_args(), pin])
        if done.returncode != 0:
            missing.append(pin)
    return missing


def local_digest(find_links: list[Path]) -> str | None:
    """Return a digest of the wheel names in the ``--find-links`` folders (None: no wheels).

    A house built before ``make armv7l-wheels`` put cffi in wheels/local/ is stale after.
    """
    names = sorted(w.name for link in find_links for w in link.glob("*.whl"))
    if not names:
        return None
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()[:16]


def fill(house: Path, target: Target, wheel: Path, find_links: list[Path], *, reuse: bool
         ) -> list[str]:
    """Fill one house; return the pins that have no wheel for it (empty: complete)."""
    stamp = {"target": target.name, "python": target.python, "arch": target.arch,
             "glibc_min": f"2.{GLIBC_MINOR_MAX}", "requirements": requirements_digest()}
    local = local_digest(find_links)
    if local is not None:
        stamp["local"] = local
    marker = house / "TARGET"
    incomplete = house / "INCOMPLETE"
    fresh = (reuse and marker.exists()
             and json.loads(marker.read_text(encoding="utf-8")) == stamp)
    if fresh and incomplete.exists():
        # the index had no wheel for these when the house was built; with the same
        # dependencies and the same local wheels, asking it again (~1 min a house) tells
        # nothing new within a test run (`make wheels` never reuses: it asks again)
        return incomplete.read_text(encoding="utf-8").split()
    if not fresh:
        shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True, exist_ok=True)
    for old in house.glob("edge-*.whl"):
        old.unlink()
    shutil.copy2(wheel, house / wheel.name)
    incomplete.unlink(missing_ok=True)
    missing: list[str] = []
    if not fresh:
        links = [a for link in find_links for a in ("--find-links", str(link))]
        done = _pip(["download", "-q", "-d", str(house), *links, *target.tag_args(),
                     str(wheel)])
        if done.returncode != 0:
            missing = missing_in(house, target, pins_for(wheel, target.python, find_links),
                                 find_links) or [f"(pip: {done.stderr.strip()[-500:]})"]
    if not missing:
        error = resolve_check(house, target)
        if error is not None:
            missing = [f"(does not resolve offline: {error[-500:]})"]
    marker.write_text(json.dumps(stamp, sort_keys=True) + "\n", encoding="utf-8")
    if missing:
        incomplete.write_text("".join(f"{m}\n" for m in missing), encoding="utf-8")
    return missing


def advice(target: Target, missing: list[str]) -> str:
    """Return what to do, for this house, about its missing wheels (docs/platforms.md)."""
    names = {m.split("==")[0].lower() for m in missing}
    pins = " ".join(m for m in missing if "==" in m)
    if target.arch != "armv7l" or not names <= {"cffi", "pynacl"}:
        return (f"the index has no {target.name} wheel of {pins or 'these'}: pin a version "
                "that has one, or build it on such a machine into wheels/local/")
    if target.python == "3.12":
        # make armv7l-wheels builds in Debian armhf roots: Debian has no 3.12 (12: 3.11,
        # 13: 3.13) and Ubuntu's armhf archive (ports.ubuntu.com) was not reachable here
        cffi = next((m for m in missing if m.lower().startswith("cffi==")), "cffi")
        return ("no scripted step (no Debian armhf Python 3.12): on one Ubuntu 24.04 armhf "
                "device, `sudo apt-get install python3-venv python3-dev gcc libffi-dev && "
                "python3.12 -m venv /tmp/bv && /tmp/bv/bin/pip wheel --no-deps "
                f"--no-binary cffi -w /tmp/out {cffi}`, copy /tmp/out/cffi-*.whl into "
                "wheels/local/ (PyNaCl: the abi3 wheel `sudo make armv7l-wheels` built "
                "serves 3.12 too)")
    return "`sudo make armv7l-wheels` builds them once (Debian armhf roots under qemu)"


def main(argv: list[str] | None = None) -> int:
    """Build the wheelhouses; print one line per house; 1 if any is incomplete."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "wheels")
    parser.add_argument("--targets", default=",".join(t.name for t in all_targets()))
    parser.add_argument("--find-links", type=Path, action="append", default=[],
                        help="a folder of wheels built elsewhere (ignored if absent)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a complete house built for the same pyproject.toml")
    parser.add_argument("--edge-wheel", type=Path,
                        help="an edge wheel already built from this tree (default: build it)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="houses filled at once (pip downloads; one shared pip cache)")
    args = parser.parse_args(argv)
    try:
        targets = [parse_target(t.strip()) for t in args.targets.split(",") if t.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    out: Path = args.out.resolve()
    links = [p.resolve() for p in args.find_links if p.is_dir()]
    wheel = args.edge_wheel.resolve() if args.edge_wheel else build_edge_wheel(out)
    incomplete: dict[Target, list[str]] = {}
    # each house is its own folder and pip's cache writes are atomic: filling in parallel is
    # safe, and waiting on the index is most of the time
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(
            lambda t: fill(out / t.name, t, wheel, links, reuse=args.reuse), targets))
    for target, missing in zip(targets, results, strict=True):
        house = out / target.name
        count = len(list(house.glob("*.whl")))
        state = "complete" if not missing else "INCOMPLETE"
        print(f"{target.name:<14} {state:<10} {count:>3} wheels  {house}", flush=True)
        if missing:
            incomplete[target] = missing
    if incomplete:
        print("\nno wheel on the index (or in --find-links) for:", file=sys.stderr)
        for target, missing in incomplete.items():
            print(f"  {target.name}: {', '.join(missing)}", file=sys.stderr)
            print(f"    -> {advice(target, missing)}", file=sys.stderr)
        print("then run `make wheels` again (docs/platforms.md); the complete houses above "
              "are usable as they are", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
