"""The IP-speaker JSON contract (firmware_notes/ip-speaker.md). Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from edge.drivers._codecs import json_doc
from edge.drivers._codecs.tts_text import strip_all_tags

RESULTS = frozenset({"played", "interrupted", "failed"})
CLIP_NAME_MAX_CHARS = 64  # the command's PlayClip.clip bound (edge/drivers/loudspeaker.py)
VOLUME_MAX = 16  # the table's volume range 0-16 (firmware_notes/ip-speaker.md)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Status:
    """A ``{topic}/status`` message."""

    playing: bool
    amp_fault: bool | None
    play_id: str | None = None
    result: str | None = None


def encode_play(play_id: str, text: str, volume: int, *, emergency: bool) -> bytes:
    """Return the ``{topic}/play`` body.

    The bridge behind the contract may hand the text to a tag-obeying engine (a SYN/XFS chip,
    an SSML service): tags are stripped so only ``volume`` sets the volume
    (firmware_notes/ip-speaker.md).
    """
    return json.dumps({"id": play_id, "text": strip_all_tags(text), "volume": volume,
                       "priority": "emergency" if emergency else "normal"},
                      ensure_ascii=False).encode()


def encode_play_clip(play_id: str, clip: str, sha256: str, volume: int, *,
                     emergency: bool = False) -> bytes:
    """Return the ``{topic}/play`` body for a stored clip; ValueError on a bad value.

    The speaker plays the clip it stores under ``clip`` only if its SHA-256 is ``sha256``
    (firmware_notes/ip-speaker.md): the hash is the allow-listed one, so a bad value is
    refused here, never sent in a form a bridge might read differently.
    """
    if not play_id:
        raise ValueError("empty play id")
    if not 1 <= len(clip) <= CLIP_NAME_MAX_CHARS or not clip.isprintable():
        raise ValueError(f"bad clip name {clip[:CLIP_NAME_MAX_CHARS]!r}")
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    if isinstance(volume, bool) or not isinstance(volume, int) or \
            not 0 <= volume <= VOLUME_MAX:
        raise ValueError(f"volume {volume!r} outside 0-{VOLUME_MAX}")
    return json.dumps({"id": play_id, "clip": clip, "sha256": sha256, "volume": volume,
                       "priority": "emergency" if emergency else "normal"},
                      ensure_ascii=False).encode()


def decode_status(payload: bytes) -> Status:
    """Decode a status message; raise ValueError when it is not one.

    Hostile payloads (64 KiB+, deep nesting, non-UTF-8, NaN) are ValueError too
    (json_doc.loads; issue 14 #1).
    """
    try:
        doc = json_doc.loads(payload)
    except ValueError as exc:
        raise ValueError(f"status is not a JSON object: {exc}") from exc
    state, fault = doc.get("state"), doc.get("amp_fault")
    play_id, result = doc.get("id"), doc.get("result")
    if state not in ("idle", "playing") or not isinstance(fault, bool | None):
        raise ValueError(f"bad status with keys {sorted(doc)[:8]}")
    if result is not None and (result not in RESULTS or not isinstance(play_id, str)):
        raise ValueError(f"bad result {result!r}")
    return Status(state == "playing", fault, play_id if isinstance(play_id, str) else None,
                  result)
