"""A Modbus TCP simulator in its own process (so the agent's CPU is measured alone).

``python -m bench.sim_server PORT MODEL COUNT [DELAY_S]``: units 1..COUNT speak MODEL — ``pzem004t``
(10 input registers, a PZEM-004T meter) or ``block100`` (100 holding registers of changing
values, a generic data block). Prints ``ready``; on SIGTERM prints the reads each unit answered
as JSON (the ground truth for loss) and exits. DELAY_S makes every answer that slow (a link
that cannot keep up, for the overload benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

from hil.sims.modbus_sim import ModbusTcpSim, SimUnit, pzem_unit


def block_unit(seed: int) -> SimUnit:
    """Return a unit with 100 holding registers at 0..99."""
    unit = SimUnit()
    unit.holding.update({a: (seed * 131 + a * 7) & 0x7FFF for a in range(100)})
    return unit


async def serve(port: int, model: str, count: int, delay_s: float = 0.0) -> None:
    """Serve until cancelled; the block units' first register counts up (values change)."""
    units = {u: pzem_unit() if model == "pzem004t" else block_unit(u)
             for u in range(1, count + 1)}
    for unit in units.values():
        if delay_s > 0:
            unit.fault, unit.delay_s = "slow", delay_s
    sim = ModbusTcpSim(units, port)
    await sim.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    tick = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
        tick += 1
        if model == "block100":
            for unit in units.values():
                unit.holding[0] = tick & 0x7FFF
    await sim.stop()
    print(json.dumps({u: unit.requests for u, unit in units.items()}), flush=True)


def main() -> None:
    """Entry point."""
    port, model, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    delay_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    asyncio.run(serve(port, model, count, delay_s))


if __name__ == "__main__":
    main()
