"""A simulator's fixed port (D10) already taken: one line naming the port and what to do
(issue 14 re-test f14 #3), not pymodbus's "Could not start listen, please check address."."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.broker import free_port
from hil.sims.runner import SimPortError, SimSet
from tests.cfg import tilt_device, write_config


@pytest.fixture
def taken_port() -> Iterator[int]:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield port


def _sims(tmp_path: Path, modbus_port: int, gps_port: int) -> SimSet:
    gps = {"name": "patrol-1", "kind": "gps", "transport": "serial", "model": "nmea",
           "port": f"socket://127.0.0.1:{gps_port}", "baud": 9600,
           "asset": {"code": "3205082190000001", "class": "2190", "grid": "320508001002003",
                     "name": "巡逻车"}}
    loaded = write_config(tmp_path, broker_port=1, pki=None,
                          buses=[{"name": "b", "type": "modbus_tcp", "host": "127.0.0.1",
                                  "port": modbus_port}],
                          devices=[tilt_device("mh-1", "b", 1), gps])
    return SimSet.for_config(loaded.config)


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
