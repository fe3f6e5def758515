"""The command catalogue: actions (from the kind table, D82) and every result and reason.

Each action's role, device kinds and params model; every ``command_result`` status and reason.
The published contract lists them (tests/test_contract.py holds the two equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, get_args, get_type_hints

from edge.commands.replay import MAX_CTR_AHEAD_US, MAX_CTR_STEP_US
from edge.config import ROLES
from edge.drivers.factory import KINDS
from edge.drivers.kind import DEVICE_READ, Action, Escalation, NoParams, Params

MAX_COMMAND_BYTES = 8 * 1024
IAT_SKEW_S = 60.0
EXECUTE_TIMEOUT_S = 10.0
# Reasons given before any signature verified: anyone who can publish on the topic can cause
# them, so their reports are rate-limited (each full report is an fsynced audit line and a
# prio-1 event that is never evicted).
UNAUTHENTICATED = frozenset({"oversized", "malformed", "unknown_kid", "bad_signature",
                             "inbound_full"})
# Reasons a replayed capture gives: the envelope is signed, but anyone who saw it on the wire
# can publish it again and again. The first rejection of each cmd_id for such a reason is
# reported in full (a platform's own late or re-sent command must get its answer); repeats of
# that cmd_id are rate-limited and evictable like unauthenticated input (D78).
REPLAYED = frozenset({"duplicate", "counter_rollback", "expired", "replay_state_lost"})
RATE_LIMITED = UNAUTHENTICATED | REPLAYED
# Actions every kind has besides its own (edge.drivers.kind.DEVICE_READ)
COMMON_ACTIONS: Mapping[str, Action] = MappingProxyType({"device.read": DEVICE_READ})
# agent.state acts on the gateway itself and takes no device (a bad_body with one, issue 20
# re-test #4): the agent carries it out, no driver
GATEWAY_ACTIONS = frozenset({"agent.state"})
_OWN_ACTIONS: dict[str, tuple[str, type[Params], frozenset[str]]] = {
    **{name: (a.role, a.params, frozenset(KINDS)) for name, a in COMMON_ACTIONS.items()},
    "agent.state": ("read", NoParams, frozenset()),
}


def action_of(kind: str, action: str) -> Action | None:
    """Return how ``kind`` carries out ``action``, or None if it cannot."""
    return KINDS[kind].actions.get(action) or COMMON_ACTIONS.get(action)


def _derive_catalogue() -> tuple[dict[str, str], dict[str, frozenset[str]],
                                 dict[str, type[Params]]]:
    """Return each action's role, kinds and params model, from the kind table (D82)."""
    roles: dict[str, str] = {}
    kinds: dict[str, frozenset[str]] = {}
    params: dict[str, type[Params]] = {}
    for kind in KINDS.values():
        for name, action in kind.actions.items():
            if roles.setdefault(name, action.role) != action.role or \
                    params.setdefault(name, action.params) is not action.params:
                raise TypeError(f"{name}: kinds declare it with different roles or params")
            kinds[name] = kinds.get(name, frozenset()) | {kind.name}
    for name, (role, model, of_kinds) in _OWN_ACTIONS.items():
        if name in roles:
            raise TypeError(f"{name}: the processor's own action, declared by a kind too")
        roles[name], params[name], kinds[name] = role, model, of_kinds
    return roles, kinds, params


ACTION_ROLES, ACTION_KINDS, PARAMS = _derive_catalogue()


def _escalation_problem(name: str, action: Action) -> str | None:
    """Return why ``action``'s escalation could never match its params, or None."""
    esc = action.escalation
    if esc is None:
        return None
    if esc.role not in ROLES:
        return f"{name}: escalation role {esc.role!r} is not a role ({', '.join(ROLES)})"
    hint = get_type_hints(action.params).get(esc.field)
    if hint is None or esc.value not in get_args(hint):
        return f"{name}: {action.params.__name__}.{esc.field} cannot be {esc.value!r}"
    return None


def _derive_escalations() -> tuple[dict[str, Escalation], dict[str, Escalation]]:
    """Return the actions a params value escalates, and the guarded ones with their guard.

    An escalation that names no params field or value, or no role, would never match: a key
    without the stronger role could then send what needs it. Refused at import, like an action
    declared differently by two kinds.
    """
    escalations: dict[str, Escalation] = {}
    guards: dict[str, Escalation] = {}
    declared: dict[str, tuple[Escalation | None, bool]] = {}
    for kind in KINDS.values():
        own = {a.escalation for a in kind.actions.values() if a.escalation is not None}
        for name, action in kind.actions.items():
            problem = _escalation_problem(name, action)
            if problem is not None:
                raise TypeError(problem)
            if declared.setdefault(name, (action.escalation, action.guarded)) != \
                    (action.escalation, action.guarded):
                raise TypeError(f"{name}: kinds declare it with different escalations or guards")
            if action.escalation is not None:
                escalations[name] = action.escalation
            if action.guarded:
                if len(own) != 1:  # the guard a device is under is its kind's one escalation
                    raise TypeError(f"{kind.name} {name}: a guarded action needs exactly one "
                                    "escalation in its kind")
                guards[name] = next(iter(own))
    return escalations, guards


# action -> the params value that needs another role; guarded action -> the guard it respects
ESCALATIONS, GUARDS = _derive_escalations()


# Every ``status`` and ``reason`` a ``command_result`` can carry, in one place: the contract's
# schema is generated from these (issue 20 #7). ``status`` of the command itself:
STATUSES = ("executed", "rejected", "failed", "unknown", "dropped")
# Later results of a long-running action, from its driver (same ``cmd_id``; ``cmd_id`` null for a
# step of a stored light schedule): a queued play ends played/interrupted/refused/failed.
FOLLOW_UP_STATUSES = ("played", "interrupted", "refused", "failed", "executed")
# reason -> (status, whether a valid signature came first, what it means)
REASONS: dict[str, tuple[str, bool, str]] = {
    "oversized": ("rejected", False, f"envelope over {MAX_COMMAND_BYTES} bytes"),
    "malformed": ("rejected", False, "not a JSON envelope {kid, alg, sig, body} of strings"),
    "unknown_kid": ("rejected", False, "kid not on the gateway's allow-list"),
    "bad_signature": ("rejected", False, "sig does not verify over the UTF-8 bytes of body"),
    "bad_body": ("rejected", True, "body is not a valid command (detail lists field errors)"),
    "unknown_action": ("rejected", True, "action not in the action catalogue"),
    "wrong_role": ("rejected", True, "the kid's roles do not include the action's role"),
    "wrong_aud": ("rejected", True, "aud is another gateway"),
    "unsupported_action": ("rejected", True, "the device's kind cannot do the action"),
    "unknown_device": ("rejected", True, "no such device on this gateway"),
    "bad_params": ("rejected", True, "params do not validate (detail lists field errors)"),
    "expired": ("rejected", True, "exp is not after the gateway's trusted now"),
    "iat_in_future": ("rejected", True, f"iat more than {IAT_SKEW_S:g} s after the trusted now"),
    "duplicate": ("rejected", True, "cmd_id seen before (journal on disk)"),
    "counter_rollback": ("rejected", True, "ctr not above the last accepted for (kid, iss)"),
    "counter_jump": ("rejected", True, f"ctr more than {MAX_CTR_AHEAD_US} above the trusted "
                     f"now in microseconds (untrusted clock: {MAX_CTR_STEP_US} above the last)"),
    "too_many_issuers": ("rejected", True, "a kid's issuer counters are full (iss)"),
    "replay_state_lost": ("rejected", True, "replay state lost; refused until re-established"),
    "unsafe": ("rejected", True, "a device safety rule refused it (detail says which)"),
    "suppressed": ("rejected", False, "summary of rejections anyone can cause (D41, D78)"),
    "inbound_full": ("dropped", False, "envelopes dropped unread: inbound queue full"),
    "device_error": ("failed", True, "the device refused or did not confirm (detail)"),
    "timeout": ("failed", True, f"the device did not answer within {EXECUTE_TIMEOUT_S:g} s"),
    "internal_error": ("failed", True, "a gateway bug; the uplink went on"),
    "interrupted": ("unknown", True, "the agent stopped while it executed; never re-run"),
}
# Rejections whose command id is echoed as ``cmd_id_unverified`` when the body has one that is a
# UUIDv7: the platform matches the rejection to its command without trusting the gateway to
# have verified it (issue 20 #7).
UNVERIFIED_ID_REASONS = frozenset({"unknown_kid", "bad_signature", "bad_body"})


def action_catalogue() -> dict[str, dict[str, Any]]:
    """Return each supported action's role, device kinds and params JSON Schema (2020-12).

    The contract publishes this (issue 20 #8); an escalating params value (``ESCALATIONS``:
    ``priority: emergency``) needs its own role instead. Only the CLI and the tests call it:
    it imports pydantic, which the running agent does not (D86).
    """
    from pydantic import TypeAdapter  # noqa: PLC0415 - the JSON Schemas only, never at run time

    return {action: {"role": ACTION_ROLES[action], "kinds": sorted(ACTION_KINDS[action]),
                     "device": action not in GATEWAY_ACTIONS,
                     "params": TypeAdapter(model).json_schema()}
            for action, model in PARAMS.items()}


def role_catalogue() -> dict[str, list[str]]:
    """Return each role (edge.config.ROLES) and the actions it allows."""
    out: dict[str, list[str]] = {role: [] for role in ROLES}
    for action in PARAMS:
        out[ACTION_ROLES[action]].append(action)
    for action, esc in ESCALATIONS.items():
        out[esc.role].append(f"{action} ({esc.field} {esc.value})")
    for action, esc in GUARDS.items():
        out[esc.role].append(f"{action} (during {esc.during})")
    return out


def reason_catalogue() -> dict[str, dict[str, Any]]:
    """Return every ``command_result`` reason: status, authenticated, rate-limited, text."""
    return {reason: {"status": status, "authenticated": authed,
                     "rate_limited": reason in RATE_LIMITED or reason == "suppressed",
                     "description": text}
            for reason, (status, authed, text) in REASONS.items()}
