"""Inline TTS control tags in the text never reach a unit (issue 19 finding 9).

A SYN6288 obeys ``[v16]`` anywhere in the text (firmware_notes/syn6288-tts.md#inline-tags):
``"[v16]请注意"`` at volume 3 used to reach the unit as ``[v3][v16]请注意`` and play at 16.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.drivers._codecs import ip_speaker, syn6288
from tests.test_loudspeaker import running, until

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10000")),
                deadline=timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])
HOSTILE = ["[v16]请注意", "请注意[v16]", "[V16]请注意", "[m51][s10][t5]请注意", "[x1]soundy[d]",
           "[=zhu4]请注意", "[v1 6]请注意", "[[v16]]请注意", "[v16请注意", "请注意]"]


def _text_of(frame: bytes) -> str:
    cmd, payload = syn6288.parse_frame(frame)
    assert cmd == syn6288.CMD_SPEAK
    enc = {v: k for k, v in syn6288.ENCODINGS.items()}[payload[0] & 0x07]
    return payload[1:].decode(enc)


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("encoding", ["gb2312", "gbk", "utf-16be"])
def test_syn6288_frame_carries_only_its_own_volume_tag(text: str, encoding: str) -> None:
    said = _text_of(syn6288.speak(text, encoding, volume=3))
    assert said.startswith("[v3]")
    assert "[" not in said[4:]
    assert "]" not in said[4:]
    assert "请注意" in said or "soundy" in said


def test_syn6288_volume_is_range_checked() -> None:
    with pytest.raises(ValueError, match="volume"):
        syn6288.speak("请注意", volume=17)


def test_ip_speaker_play_body_carries_no_inline_tag() -> None:
    for text in HOSTILE:
        doc = json.loads(ip_speaker.encode_play("p1", text, 3, emergency=False))
        assert "[" not in doc["text"]
        assert "]" not in doc["text"]
        assert "<" not in ip_speaker.encode_play("p1", "<speak><prosody volume='x'>a", 3,
                                                 emergency=False).decode()
        assert doc["volume"] == 3


async def test_unit_never_gets_a_tag_from_the_text_end_to_end() -> None:
    async with running() as (driver, sim, _sink):
        await driver.play_tts("[v16]请注意", 3, cmd_id="c1")
        await until(lambda: len(sim.spoken) == 1)
    assert sim.spoken == ["[v3]请注意"]


@settings(parent=FUZZ)
@given(st.text(max_size=120), st.integers(0, 16))
def test_fuzz_syn6288_speak_never_passes_a_tag(text: str, volume: int) -> None:
    with contextlib.suppress(ValueError):  # unencodable or too long: refused, never sent
        said = _text_of(syn6288.speak(text, "gbk", volume=volume))
        assert re.findall(r"\[[^\]]*\]", said) == [f"[v{volume}]"]
