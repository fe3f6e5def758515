"""The agent's ``state`` messages (birth, periodic, goodbye, last will) are signed like batches,
so the reference receiver opens a missed alarm's case only on the gateway's word (security
review 19 #4, docs/decisions.md D39)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from edge.uplink.mqtt import WILL_N
from hil.broker import Mosquitto
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from tests.cfg import write_config
from tests.helpers import receiver_for, start_agent, stop_agent, wait_until


@dataclass
class _Rig:
    store: ReceiverStore
    config: Path
    agent: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def _online_gateway(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[_Rig]:
    """An agent process and a reference receiver, yielded once the birth has arrived."""
    loaded = write_config(tmp_path / "gw", broker_port=broker.port, pki=None,
                          devices=[], buses=[], uplink={"keepalive_s": 5})
    store, receiver = receiver_for(loaded, tmp_path / "rx.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                      tls=None, ready=ready))
    rig = _Rig(store, loaded.path, start_agent(loaded.path))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await wait_until(lambda: store.gateways() and store.gateways()[0]["online"], 15,
                         "a birth message")
        yield rig
    finally:
        stop_agent(rig.agent)
        rx.cancel()
        store.close()


async def test_birth_and_last_will_are_signed(tmp_path: Path, plain_broker: Mosquitto) -> None:
    async with _online_gateway(tmp_path, plain_broker) as rig:
        store = rig.store
        birth = store.gateways()[0]["state"]
        assert birth["signed"] is True
        assert birth["active_alarms"] == []
        rig.agent.send_signal(signal.SIGKILL)  # the broker publishes the last will
        rig.agent.wait(10)
        await wait_until(lambda: not store.gateways()[0]["online"], 15, "the last will")
        assert store.gateways()[0]["state"]["signed"] is True
        counters = store.counters()
        assert "state.unsigned" not in counters
        assert not {k for k in counters if k.startswith("rejected.")}


async def test_states_are_ordered_so_a_restart_after_a_will_shows_online(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    """Each state carries ``order`` [connection's boot-clock ms, n] (contract 1.1.1), the will
    the largest n: a receiver keeps the newest, whatever order a shared subscription commits
    them in (review of issues 18-20 #3); an agent restarted after its will is online again."""
    async with _online_gateway(tmp_path, plain_broker) as rig:
        store = rig.store
        conn_ms, n = store.gateways()[0]["state"]["order"]
        assert n >= 1
        rig.agent.send_signal(signal.SIGKILL)
        rig.agent.wait(10)
        await wait_until(lambda: not store.gateways()[0]["online"], 15, "the last will")
        assert store.gateways()[0]["state"]["order"] == [conn_ms, WILL_N]
        rig.agent = start_agent(rig.config)  # the same boot: its next connection is newer
        await wait_until(lambda: store.gateways()[0]["online"], 15, "the new birth")
        assert store.gateways()[0]["state"]["order"][0] > conn_ms
        assert "state.stale" not in store.counters()
