"""Text that goes to a TTS engine: no in-band control from the text itself. Pure.

SYN6288/XFS-class engines obey ``[v16]`` (volume), ``[m51]`` (voice), ``[s10]`` (speed),
``[x1]`` (sounds), ``[=zhu4]`` (pinyin) … anywhere in the text
(firmware_notes/syn6288-tts.md#inline-tags); SSML-speaking bridges obey ``<prosody>``. The
volume limit is enforced on the command, so a tag inside the text would bypass it: every
bracket that could open or close a tag is removed, whatever it encloses.
"""

from __future__ import annotations

import re

# a whole tag first (so "[v16]" leaves nothing behind), then any stray bracket; "[[v16]]"
# would otherwise leave "[v16]" once its inner tag is gone, hence the loop-free second pass
_TAG = re.compile(r"\[[^\[\]]*\]")
_SYN_STRAY = re.compile(r"[\[\]]")
_SSML = re.compile(r"<[^<>]*>|[<>]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def strip_syn_tags(text: str) -> str:
    """Return ``text`` without ``[...]`` tags, stray brackets or control characters."""
    return _SYN_STRAY.sub("", _TAG.sub("", _CONTROL.sub(" ", text)))


def strip_all_tags(text: str) -> str:
    """Return ``text`` without ``[...]`` tags or SSML markup (``<...>``, stray ``<``/``>``)."""
    return strip_syn_tags(_SSML.sub("", text))
