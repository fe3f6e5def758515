"""Text that goes to a TTS engine: no in-band control from the text itself. Pure.

SYN6288/XFS-class engines obey ``[v16]`` (volume), ``[m51]`` (voice), ``[s10]`` (speed),
``[x1]`` (sounds), ``[=zhu4]`` (pinyin) … anywhere in the text
(firmware_notes/syn6288-tts.md#inline-tags); SSML-speaking bridges obey ``<prosody>``. The
volume limit is enforced on the command, so a tag inside the text would bypass it: every
bracket that could open or close a tag is removed, whatever it encloses.
"""

from __future__ import annotations

import re
import unicodedata

# a whole tag first (so "[v16]" leaves nothing behind), then any stray bracket; "[[v16]]"
# would otherwise leave "[v16]" once its inner tag is gone, hence the loop-free second pass.
# Full-width brackets (U+FF3B/U+FF3D, what a Chinese IME types for "[v16]") count as brackets
# too: whether a unit's front end folds them to ASCII is unverified, so they never reach it.
_OPEN, _CLOSE = "[\uff3b", "]\uff3d"
_TAG = re.compile(f"[{re.escape(_OPEN)}][^{re.escape(_OPEN + _CLOSE)}]*[{re.escape(_CLOSE)}]")
_SYN_STRAY = re.compile(f"[{re.escape(_OPEN + _CLOSE)}]")
_SSML = re.compile(r"<[^<>]*>|[<>]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def drop_format_chars(text: str) -> str:
    """Return ``text`` without Unicode format characters (category Cf).

    U+200B zero-width space, U+200D joiner, U+FEFF, bidi marks… are silent, no TTS encoding
    (GB2312/GBK/BIG5) has them, and inside a tag they would hide it from the stripper
    (``[v\u200b16]``): dropped deliberately, before anything else (issue 19 re-test #7).
    """
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def strip_syn_tags(text: str) -> str:
    """Return ``text`` without ``[...]`` tags, stray brackets, format or control characters."""
    return _SYN_STRAY.sub("", _TAG.sub("", _CONTROL.sub(" ", drop_format_chars(text))))


def unencodable_at(text: str, encoding: str) -> int | None:
    """Return the position of the first character ``encoding`` cannot carry, or None.

    0-based in ``text``; format and control characters and brackets (dropped or replaced by
    strip_syn_tags) never count. A command is refused with this position when it is
    validated, instead of being answered "queued" and failing later at the unit (issue 19
    re-test #7).
    """
    for at, ch in enumerate(text):
        if unicodedata.category(ch) == "Cf" or ch in _OPEN + _CLOSE or _CONTROL.match(ch):
            continue  # dropped or replaced by strip_syn_tags
        try:
            ch.encode(encoding)
        except UnicodeEncodeError:
            return at
    return None


def strip_all_tags(text: str) -> str:
    """Return ``text`` without ``[...]`` tags or SSML markup (``<...>``, stray ``<``/``>``)."""
    return strip_syn_tags(_SSML.sub("", text))
