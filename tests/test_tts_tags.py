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

from edge.drivers._codecs import ip_speaker, syn6288, tts_text
from tests.test_loudspeaker import running, until

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))  # make faults: 100 k
FUZZ = settings(max_examples=FUZZ_EXAMPLES,
                deadline=timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])
# pytest-timeout ends a true infinite loop (hypothesis cannot interrupt one): 100 k examples took
# 77-92 s on a busy 2-core box; ~4x over that
FUZZ_TIMEOUT_S = 120 + FUZZ_EXAMPLES // 400
HOSTILE = ["[v16]请注意", "请注意[v16]", "[V16]请注意", "[m51][s10][t5]请注意", "[x1]soundy[d]",
           "[=zhu4]请注意", "[v1 6]请注意", "[[v16]]请注意", "[v16请注意", "请注意]",
           # issue 19 re-test #7: full-width brackets, mixed, and tags split by format chars
           "\uff3bv16\uff3d请注意", "[v16\uff3d请注意", "\uff3bv16]请注意",
           "[v\u200b16]请注意", "\u200b[v16]\u200b请注意", "[\ufeffv16]请注意"]
BRACKETS = "[]\uff3b\uff3d"


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
    assert not set(BRACKETS) & set(said[4:])
    assert "\u200b" not in said
    assert "请注意" in said or "soundy" in said


def test_syn6288_volume_is_range_checked() -> None:
    with pytest.raises(ValueError, match="volume"):
        syn6288.speak("请注意", volume=17)


def test_ip_speaker_play_body_carries_no_inline_tag() -> None:
    for text in HOSTILE:
        doc = json.loads(ip_speaker.encode_play("p1", text, 3, emergency=False))
        assert not set(BRACKETS) & set(doc["text"])
        assert "<" not in ip_speaker.encode_play("p1", "<speak><prosody volume='x'>a", 3,
                                                 emergency=False).decode()
        assert doc["volume"] == 3


async def test_unit_never_gets_a_tag_from_the_text_end_to_end() -> None:
    async with running() as (driver, sim, _sink):
        await driver.play_tts("[v16]请注意", 3, cmd_id="c1")
        await until(lambda: len(sim.spoken) == 1)
    assert sim.spoken == ["[v3]请注意"]


@pytest.mark.reliability  # make faults runs it at FUZZ_EXAMPLES=100000
@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@settings(parent=FUZZ)
@given(st.text(max_size=120), st.integers(0, 16))
def test_fuzz_syn6288_speak_never_passes_a_tag(text: str, volume: int) -> None:
    with contextlib.suppress(ValueError):  # unencodable or too long: refused, never sent
        said = _text_of(syn6288.speak(text, "gbk", volume=volume))
        assert re.findall(r"\[[^\]]*\]", said) == [f"[v{volume}]"]
        assert not set(BRACKETS) & set(said[len(f"[v{volume}]"):])


# replies near the two the unit sends (a byte more, less or changed) as well as any bytes
_STATUS_REPLIES = st.binary(max_size=64) | st.builds(
    lambda base, cut, tail: base[:cut] + tail,
    st.sampled_from([syn6288.STATUS_IDLE, syn6288.STATUS_BUSY]), st.integers(0, 2),
    st.binary(max_size=3))


@pytest.mark.reliability  # make faults runs it at FUZZ_EXAMPLES=100000
@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@settings(parent=FUZZ)
@given(_STATUS_REPLIES)
def test_fuzz_syn6288_parse_status(reply: bytes) -> None:
    """Any reply is busy, idle or the codec's ValueError; nothing else, never a hang."""
    try:
        busy = syn6288.parse_status(reply)
    except ValueError:
        assert reply not in (syn6288.STATUS_IDLE, syn6288.STATUS_BUSY)
        return
    assert busy is (reply == syn6288.STATUS_BUSY)
    assert reply in (syn6288.STATUS_IDLE, syn6288.STATUS_BUSY)


def test_zero_width_characters_are_dropped_not_sent() -> None:
    """U+200B made the frame builder fail at the unit after the command said "queued"."""
    said = _text_of(syn6288.speak("请\u200b注意\u200d\ufeff", "gb2312", volume=3))
    assert said == "[v3]请注意"


@pytest.mark.parametrize(("text", "encoding", "at"), [
    ("请注意", "gb2312", None), ("请\u200b注意", "gb2312", None), ("[v16]請注意", "big5", None),
    ("请注意😀", "gbk", 3), ("ab\u0e01", "gb2312", 2), ("请注意😀", "utf-16be", None),
    ("\uff3b\u200b请\uff3d😀", "gbk", 4), ("请注意", "big5", 0),
])
def test_unencodable_at_names_the_first_character_the_unit_cannot_take(
        text: str, encoding: str, at: int | None) -> None:
    assert tts_text.unencodable_at(text, encoding) == at
    if at is None:
        syn6288.speak(text, encoding, volume=1)  # and the frame builder agrees
    else:
        with pytest.raises(ValueError, match="encode"):
            syn6288.speak(text, encoding, volume=1)
