"""A command's signed body: its shape, its times and what it lacks beyond its shape (pure)."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import field
from typing import Annotated, Any

from edge.commands.catalogue import ACTION_KINDS, GATEWAY_ACTIONS
from edge.commands.replay import CTR_MAX
from edge.model import UUID7_PATTERN
from edge.shapes import Ge, Le, Pattern, shape

# exp - iat at most this: a command is for now, not a standing order; a captured or withheld
# command can take effect at most this long after it was issued (a schedule lives on the
# gateway and needs no long-lived command). An hour covers a platform's retry queue through a
# short outage (issue 20 re-test #9, docs/decisions.md D68).
MAX_COMMAND_LIFETIME_S = 3600
MAX_FIELD_ERRORS = 8  # bad_body/bad_params detail: the first errors, then a count
# Command times: RFC 3339 in UTC ("Z") or with an offset, seconds required, 0-9 fraction digits;
# upper-case T and Z only; no epoch numbers (a JSON number is a bad_body) (issue 20 #8).
# ASCII digits only ([0-9]: ``\d`` also matches a full-width digit).
COMMAND_TIME_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                        r"(Z|[+-][0-9]{2}:[0-9]{2})$")
_COMMAND_TIME = re.compile(COMMAND_TIME_PATTERN)
ISS_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


@shape
class CommandBody:
    """The signed body of a command (checked by ``edge.shape_check``: no pydantic, D86)."""

    cmd_id: Annotated[str, Pattern(UUID7_PATTERN)]
    aud: str
    device: str | None = None
    action: str
    # any JSON value: what is wrong inside ``params`` (not an object included) is bad_params,
    # the schema's /params (issue 20 re-test #4)
    params: Any = field(default_factory=dict)
    iat: Annotated[str, Pattern(COMMAND_TIME_PATTERN)]
    exp: Annotated[str, Pattern(COMMAND_TIME_PATTERN)]
    ctr: Annotated[int, Ge(0), Le(CTR_MAX)]
    # the platform instance that signed it: each (kid, iss) keeps its own counter, so instances
    # sharing a key cannot lock each other out (issue 20 #9, D59); absent: the kid's own
    iss: Annotated[str, Pattern(ISS_PATTERN)] | None = None


def parse_command_time(text: str) -> int:
    """Return ns since the epoch of a command time (COMMAND_TIME_PATTERN); ValueError if not.

    Exact to the nanosecond (no float): a fraction past 9 digits is refused, not rounded.
    """
    match = _COMMAND_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time with seconds and a zone: {text[:40]!r}")
    fraction = match.group(1) or ""
    whole = dt.datetime.fromisoformat(text[:19] + match.group(2).replace("Z", "+00:00"))
    seconds = int(whole.timestamp())  # whole seconds: exact as a float
    return seconds * 1_000_000_000 + int((fraction[1:] + "000000000")[:9])


def counter_key(kid: str, iss: str | None) -> str:
    """Return the key of the counter a command is checked against: the kid, or kid/iss."""
    return kid if iss is None else f"{kid}/{iss}"


# What a field that fails its pattern must be, in words: a detail never echoes a regex (one
# cut at 120 characters ended mid-pattern, issue 20 re-test #8); the patterns are in the contract.
PATTERN_WORDS = {
    "iat": "must be an RFC 3339 time with seconds and a zone (see contract)",
    "exp": "must be an RFC 3339 time with seconds and a zone (see contract)",
    "cmd_id": "must be a lower-case UUIDv7 (see contract)",
    "iss": "must be 1-64 characters of A-Z a-z 0-9 . _ - (see contract)",
    "sha256": "must be 64 lower-case hex digits",
    "at": "must be HH:MM, sunrise or sunset with an optional +/- minutes offset (see contract)",
}


def field_errors(errors: list[dict[str, Any]]) -> str:
    """Return the first MAX_FIELD_ERRORS field errors, bounded, and how many more there were."""
    parts = [f"{'.'.join(map(str, e['loc']))[:64]}: {_error_words(e)[:120]}"
             for e in errors[:MAX_FIELD_ERRORS]]
    if len(errors) > MAX_FIELD_ERRORS:
        parts.append(f"+{len(errors) - MAX_FIELD_ERRORS} more")
    return "; ".join(parts)


def _error_words(error: Any) -> str:
    """Return a field error's message; a pattern mismatch in words, never the regex."""
    if error["type"] != "string_pattern_mismatch":
        return str(error["msg"])
    field_name = str(error["loc"][-1]) if error["loc"] else ""
    return PATTERN_WORDS.get(field_name, "does not match its pattern (see contract)")


def body_problem(body: CommandBody) -> str | None:
    """Return what the body lacks beyond its members' own shapes (bad_body), or None.

    The device a device action needs, none for a gateway action (issue 20 re-test #4); iat and
    exp real times with ``iat < exp <= iat + MAX_COMMAND_LIFETIME_S`` (re-test #9). Checked
    with or without a trusted clock: they relate the body to itself, not to now.
    """
    if body.action in ACTION_KINDS:
        if body.action in GATEWAY_ACTIONS and body.device is not None:
            return f"device: not allowed for {body.action} (it acts on the gateway)"
        if body.action not in GATEWAY_ACTIONS and not body.device:
            return f"device: required for {body.action}"
    return _lifetime_problem(body)


def _lifetime_problem(body: CommandBody) -> str | None:
    try:
        iat_ns = parse_command_time(body.iat)
    except (ValueError, OverflowError):
        return f"iat: {PATTERN_WORDS['iat']}"
    try:
        exp_ns = parse_command_time(body.exp)
    except (ValueError, OverflowError):
        return f"exp: {PATTERN_WORDS['exp']}"
    if exp_ns <= iat_ns:
        return "exp: must be after iat"
    if exp_ns - iat_ns > MAX_COMMAND_LIFETIME_S * 1_000_000_000:
        return f"exp: at most {MAX_COMMAND_LIFETIME_S} s after iat (the command lifetime)"
    return None


def unverified_cmd_id(raw: bytes) -> str | None:
    """Return the ``cmd_id`` of an envelope's body if it is a UUIDv7, else None; never raises.

    Unverified (no valid signature, or an invalid body): only ever echoed as
    ``cmd_id_unverified``, and only in the one shape a cmd_id has, so nothing else of an
    unauthenticated body is repeated (``raw`` is at most MAX_COMMAND_BYTES).
    """
    try:
        env = json.loads(raw)
        body = json.loads(env["body"]) if isinstance(env, dict) else None
        value = body.get("cmd_id") if isinstance(body, dict) else None
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if isinstance(value, str) and re.fullmatch(UUID7_PATTERN, value):
        return value
    return None
