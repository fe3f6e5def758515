"""``speaker.play_clip`` on IP speakers: the clip body codec, the queue's clip rules, and the
driver against the real simulator on a real mosquitto (firmware_notes/ip-speaker.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import SouthboundMqttConfig
from edge.config_loader import validate
from edge.drivers import speaker_units
from edge.drivers._codecs import ip_speaker
from edge.drivers.broadcast import BroadcastQueue, Play
from edge.drivers.loudspeaker import LoudspeakerDriver
from edge.drivers.speaker_units import IpSpeakerUnit
from edge.kinds.loudspeaker import LoudspeakerDevice
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from hil.sims.ip_speaker import IpSpeakerSim
from tests.helpers import ObservedBroker
from tests.recording_sink import RecordingSink
from tests.test_loudspeaker import until

CLIP_SHA = "ab" * 32
TOPIC = "speakers/clip-1"
ASSET = {"code": "3205082105000009", "class": "2105", "grid": "320508001002003", "name": "x"}


def test_clip_body_round_trip() -> None:
    body = ip_speaker.encode_play_clip("c7-1", "疏散提示", CLIP_SHA, 12)
    # UTF-8, not \u-escaped, keys in the table's order (firmware_notes/ip-speaker.md)
    assert body == ('{"id": "c7-1", "clip": "疏散提示", "sha256": "' + CLIP_SHA +
                    '", "volume": 12, "priority": "normal"}').encode()
    doc = json.loads(body)
    assert list(doc) == ["id", "clip", "sha256", "volume", "priority"]
    assert (doc["clip"], doc["sha256"], doc["volume"]) == ("疏散提示", CLIP_SHA, 12)
    assert json.loads(ip_speaker.encode_play_clip("p", "a" * 64, CLIP_SHA, 0, emergency=True)
                      )["priority"] == "emergency"


@pytest.mark.parametrize(("play_id", "clip", "sha256", "volume"), [
    ("", "evacuate", CLIP_SHA, 8),  # no id: the result could not be matched
    ("p", "", CLIP_SHA, 8),
    ("p", "a" * 65, CLIP_SHA, 8),
    ("p", "evac\nuate", CLIP_SHA, 8),
    ("p", "evacuate", CLIP_SHA.upper(), 8),
    ("p", "evacuate", CLIP_SHA[:-1], 8),
    ("p", "evacuate", CLIP_SHA + "\n", 8),
    ("p", "evacuate", "g" * 64, 8),
    ("p", "evacuate", CLIP_SHA, 17),
    ("p", "evacuate", CLIP_SHA, -1),
    ("p", "evacuate", CLIP_SHA, True),
])
def test_clip_body_refuses_bad_values(play_id: str, clip: str, sha256: str, volume: Any) -> None:
    with pytest.raises(ValueError, match=r"play id|clip name|sha256|volume"):
        ip_speaker.encode_play_clip(play_id, clip, sha256, volume)


async def test_the_queue_refuses_a_malformed_clip_play() -> None:
    results: list[tuple[Play, str, str]] = []

    async def player(_play: Play) -> None:
        return None

    async def stopper() -> None:
        return None

    async def on_result(play: Play, status: str, why: str) -> None:
        results.append((play, status, why))

    queue = BroadcastQueue(player, stopper, on_result)
    with pytest.raises(ValueError, match="normal priority"):
        await queue.submit("", volume=8, emergency=True, clip="evacuate", sha256=CLIP_SHA)
    with pytest.raises(ValueError, match="clip and sha256"):
        await queue.submit("", volume=8, emergency=False, clip="evacuate")
    with pytest.raises(ValueError, match="no text"):
        await queue.submit("也说话", volume=8, emergency=False, clip="evacuate",
                           sha256=CLIP_SHA)
    assert await queue.submit("", volume=8, emergency=False, clip="evacuate", sha256=CLIP_SHA)
    assert results == []  # nothing refused by the queue itself, nothing played yet


@contextlib.asynccontextmanager
async def ip_speaker_driver(mq: Mosquitto) -> AsyncIterator[
        tuple[LoudspeakerDriver, IpSpeakerSim, RecordingSink, MqttLink]]:
    """The driver and the simulator on ``mq``, and an observer of ``{topic}/play``."""
    sim = IpSpeakerSim("127.0.0.1", mq.port, TOPIC)
    await sim.start()
    observer = MqttLink(host="127.0.0.1", port=mq.port, client_id="play-observer",
                        protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
    await observer.connect()
    assert await observer.subscribe(f"{TOPIC}/play")
    device = validate(LoudspeakerDevice, {
        "name": "ipspk-1", "kind": "loudspeaker", "transport": "mqtt", "model": "ip_speaker",
        "topic": TOPIC, "poll_interval_s": 0.5, "clips": {"evacuate": CLIP_SHA},
        "asset": ASSET})
    broker = ObservedBroker(SouthboundMqttConfig(host="127.0.0.1", port=mq.port, tls=False),
                            base_dir=Path(), gateway_id="gw-1")
    driver = LoudspeakerDriver(device, IpSpeakerUnit("ipspk-1", broker, TOPIC,
                                                     stale_after_s=1.5))
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    try:
        await until(lambda: driver.stats.polls_ok >= 1)
        yield driver, sim, sink, observer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        await observer.close()
        await sim.stop()


async def test_play_clip_is_played_by_the_ip_speaker(plain_broker: Mosquitto) -> None:
    async with ip_speaker_driver(plain_broker) as (driver, sim, sink, observer):
        queued = await driver.play_clip("evacuate", CLIP_SHA, 12, cmd_id="clip-1")
        assert queued == {"queued": True, "clip": "evacuate", "priority": "normal"}
        await until(lambda: any(r["cmd_id"] == "clip-1" for r in sink.results))
        sent = json.loads((await observer.next_inbound(5)).payload)
        # a text play after it still reports as speaker.play_tts
        await driver.play_tts("请勿乱扔垃圾", 8, cmd_id="tts-1")
        await until(lambda: any(r["cmd_id"] == "tts-1" for r in sink.results))
    by_id = {r["cmd_id"]: r for r in sink.results}
    assert by_id["clip-1"] == {"device": "ipspk-1", "cmd_id": "clip-1",
                               "action": "speaker.play_clip", "status": "played",
                               "clip": "evacuate", "source": "command", "priority": "normal"}
    assert sent == {"id": "clip-1-1", "clip": "evacuate", "sha256": CLIP_SHA, "volume": 12,
                    "priority": "normal"}
    assert sim.clips == [("evacuate", CLIP_SHA)]
    assert sim.spoken == ["请勿乱扔垃圾"]  # the clip was not spoken as text
    assert by_id["tts-1"]["action"] == "speaker.play_tts"
    assert by_id["tts-1"]["status"] == "played"
    assert by_id["tts-1"]["text_chars"] == 6
    assert "clip" not in by_id["tts-1"]


async def test_a_clip_with_no_result_fails_after_clip_timeout(
        plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    # the clip's wait is CLIP_TIMEOUT_S, not the text estimate (0 chars + 10 s)
    monkeypatch.setattr(speaker_units, "CLIP_TIMEOUT_S", 1.0)
    async with ip_speaker_driver(plain_broker) as (driver, sim, sink, _observer):
        sim.silent = True  # takes the play, never reports its result
        await driver.play_clip("evacuate", CLIP_SHA, 8, cmd_id="clip-2")
        await until(lambda: any(r["cmd_id"] == "clip-2" for r in sink.results), 5)
        assert ("ipspk-1", "playback_failed") in sink.active
    result = sink.results[-1]
    assert (result["action"], result["status"]) == ("speaker.play_clip", "failed")
    assert "no result from the speaker" in result["reason"]
    assert sim.clips == [("evacuate", CLIP_SHA)]
