"""Shared fixtures: a real mosquitto (TLS + client certs) on a free port, a PKI, configs."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.broker import Mosquitto, free_port
from hil.pki import Pki, ensure_pki

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--hil-rig rig.yaml``: run the hardware-in-loop tests against real devices."""
    parser.addoption("--hil-rig", default=None, type=Path,
                     help="devices.yaml of a hardware-in-loop rig (tests/test_hil_rig.py)")


@pytest.fixture(scope="session")
def hil_rig(request: pytest.FixtureRequest) -> Path:
    """The rig's devices.yaml; the test skips without ``--hil-rig`` (real hardware only)."""
    path: Path | None = request.config.getoption("--hil-rig")
    if path is None:
        pytest.skip("needs real hardware: --hil-rig path/to/rig.yaml")
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with broker, gateway and receiver certificates."""
    return ensure_pki(tmp_path_factory.mktemp("pki"))


def _require_mosquitto() -> None:
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must install mosquitto: a skipped real-peer test hides a gap")
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """A real mosquitto with TLS and required client certificates, on a free port."""
    _require_mosquitto()
    mq = Mosquitto(tmp_path / "mosquitto", free_port(), pki)
    mq.start()
    yield mq
    mq.stop()


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto without TLS (behind fault-injecting proxies on loopback)."""
    _require_mosquitto()
    mq = Mosquitto(tmp_path / "mosquitto-plain", free_port(), None)
    mq.start()
    yield mq
    mq.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every reliability figure recorded in this run (make faults' table)."""
    from tests.figures import FIGURES

    fuzzed = [r for r in terminalreporter.stats.get("passed", []) if "fuzz" in r.nodeid]
    if fuzzed:
        examples = os.environ.get("FUZZ_EXAMPLES", "3000")
        # the in-process fuzzers run FUZZ_EXAMPLES; the socket ones (HTTP, Modbus) and the
        # small-file ones fewer, as their docstrings say
        FIGURES.append(f"R12: {len(fuzzed)} fuzz tests passed (FUZZ_EXAMPLES={examples}; "
                       "socket and file fuzzers fewer): 0 crashes, 0 hangs")
    if FIGURES:
        terminalreporter.section("reliability figures (design/reliability.md §4)")
        for line in FIGURES:
            terminalreporter.write_line(line)


class _FormatCheck(logging.Handler):
    """Fails the test when a log call cannot be formatted (zigpy's trick)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.getMessage()
        except Exception as exc:
            self.errors.append(f"{record.pathname}:{record.lineno}: {exc}")


@pytest.fixture(autouse=True)
def _log_format_check() -> Iterator[None]:
    handler = _FormatCheck()
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    yield
    root.removeHandler(handler)
    root.setLevel(old)
    assert not handler.errors, handler.errors
