"""SYN6288-style serial TTS frames (firmware_notes/syn6288-tts.md). Pure.

Frame: ``FD LenH LenL Cmd [Param] Data… XOR``; Len counts the bytes after itself including
the XOR; XOR covers every preceding byte including ``FD``.
"""

from __future__ import annotations

from edge.drivers._codecs.tts_text import strip_syn_tags, unencodable_at

HEADER = 0xFD
CMD_SPEAK, CMD_STOP, CMD_STATUS = 0x01, 0x02, 0x21
ENCODINGS = {"gb2312": 0, "gbk": 1, "big5": 2, "utf-16be": 3}
MAX_TEXT_BYTES = 200
MAX_VOLUME = 16  # [v0]..[v16]
STATUS_IDLE, STATUS_BUSY = b"\x41\x4f", b"\x41\x4e"


def _xor(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def frame(cmd: int, payload: bytes = b"") -> bytes:
    """Return a complete frame for ``cmd`` with ``payload`` (param + data)."""
    length = 1 + len(payload) + 1
    head = bytes([HEADER, length >> 8, length & 0xFF, cmd]) + payload
    return head + bytes([_xor(head)])


def speak(text: str, encoding: str = "gb2312", music: int = 0, *,
          volume: int | None = None) -> bytes:
    """Return a speak frame; raise ValueError if the text cannot be encoded or is too long.

    Inline tags in ``text`` are removed (tts_text.strip_syn_tags): the only tag the unit gets
    is the ``[v{volume}]`` this builder writes itself, so the text cannot change the volume.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}")
    if volume is not None and not 0 <= volume <= MAX_VOLUME:
        raise ValueError(f"volume {volume} outside 0-{MAX_VOLUME}")
    said = strip_syn_tags(text)
    if volume is not None:
        said = f"[v{volume}]{said}"
    data = said.encode(encoding)
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"text is {len(data)} bytes; the unit takes {MAX_TEXT_BYTES}")
    return frame(CMD_SPEAK, bytes([(music & 0x1F) << 3 | ENCODINGS[encoding]]) + data)


def text_problem(text: str, encoding: str, volume: int = MAX_VOLUME) -> str | None:
    """Return why ``speak(text, encoding, volume=volume)`` would refuse ``text``, or None.

    Checked when a command is validated, so a text the unit cannot take is refused then
    (``bad_params``) instead of being answered "queued" and failing at the unit (issue 19
    re-test #7): the first character ``encoding`` cannot carry, or the byte length with the
    volume tag.
    """
    at = unencodable_at(text, encoding)
    if at is not None:
        return f"character {at} (U+{ord(text[at]):04X}) cannot be spoken in {encoding}"
    size = len(f"[v{volume}]{strip_syn_tags(text)}".encode(encoding))
    if size > MAX_TEXT_BYTES:
        return f"{size} bytes in {encoding} with the volume tag; the unit takes {MAX_TEXT_BYTES}"
    return None


def parse_frame(data: bytes) -> tuple[int, bytes]:
    """Return (cmd, payload) of a complete frame; raise ValueError when malformed."""
    if len(data) < 5 or data[0] != HEADER:
        raise ValueError("not a frame")
    length = data[1] << 8 | data[2]
    if length != len(data) - 3:
        raise ValueError(f"length {length} does not match {len(data) - 3}")
    if _xor(data[:-1]) != data[-1]:
        raise ValueError("bad XOR")
    return data[3], data[4:-1]


def parse_status(reply: bytes) -> bool:
    """Return True when busy, False when idle; raise ValueError on anything else."""
    if reply == STATUS_BUSY:
        return True
    if reply == STATUS_IDLE:
        return False
    raise ValueError(f"unexpected status reply {reply.hex(' ')}")
