"""``python -m hil tilt`` loads no simulator and no web stack (issue 18 re-test #10).

It took 0.6 s of CPU (1.2-3.8 s wall under load) mostly importing pymodbus' server, which
imports aiohttp, and every driver through ``edge.drivers``; measured in
docs/decisions.md D74.
"""

from __future__ import annotations

import json
import subprocess
import sys

from hil.__main__ import ALL_FAULTS
from hil.sims import runner


def test_the_tilt_command_imports_no_simulator_server_nor_web_stack() -> None:
    code = ("import sys, hil.__main__, hil.tilt, edge.config_loader; import json; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    heavy = {"aiohttp", "pymodbus.server", "hil.sims.modbus_sim", "hil.sims.runner",
             "edge.drivers.gps", "edge.drivers.loudspeaker", "paho.mqtt.client"}
    assert not heavy & loaded, sorted(heavy & loaded)
    assert "pymodbus.client" in loaded  # what tilting through Modbus does need


def test_the_fault_choices_are_the_runners() -> None:
    assert ALL_FAULTS == runner.ALL_FAULTS
