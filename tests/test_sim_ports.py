"""A simulator's fixed port (D10) already taken: one line naming the port and what to do
(issue 14 re-test f14 #3), not pymodbus's "Could not start listen, please check address."."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config_file import LoadedConfig
from hil.broker import free_port
from hil.sims.runner import SimPortError, SimSet
from tests.cfg import tilt_device, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield port


def _config(tmp_path: Path, modbus_port: int, gps_port: int) -> LoadedConfig:
    gps = {"name": "patrol-1", "kind": "gps", "transport": "serial", "model": "nmea",
           "port": f"socket://127.0.0.1:{gps_port}", "baud": 9600,
           "asset": {"code": "3205082190000001", "class": "2190", "grid": "320508001002003",
                     "name": "巡逻车"}}
    return write_config(tmp_path, broker_port=1, pki=None,
                        buses=[{"name": "b", "type": "modbus_tcp", "host": "127.0.0.1",
                                "port": modbus_port}],
                        devices=[tilt_device("mh-1", "b", 1), gps])


def _sims(tmp_path: Path, modbus_port: int, gps_port: int) -> SimSet:
    return SimSet.for_config(_config(tmp_path, modbus_port, gps_port).config)


@pytest.mark.parametrize("which", ["modbus", "gps"])
async def test_a_taken_simulator_port_is_one_line_with_the_port(
        tmp_path: Path, taken_port: int, which: str) -> None:
    free = free_port()
    sims = _sims(tmp_path, *((taken_port, free) if which == "modbus" else (free, taken_port)))
    with pytest.raises(SimPortError) as info:
        await sims.start()
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{taken_port}" in message and "in use" in message, message
    assert "Could not start listen" not in message
    await sims.stop()  # what started is stopped; the rest is left alone
    with socket.socket() as probe:  # the simulator that did start gave its port back
        probe.bind(("127.0.0.1", free))


def test_python_m_hil_sims_on_a_taken_port_says_one_line(tmp_path: Path,
                                                           taken_port: int) -> None:
    loaded = _config(tmp_path, taken_port, free_port())
    result = subprocess.run([sys.executable, "-m", "hil", "--config",
                             str(loaded.path), "sims"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"127.0.0.1:{taken_port}" in result.stderr
