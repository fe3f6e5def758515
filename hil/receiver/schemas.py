"""Validation against the published contract schemas (edge/contract/schemas), nothing else.

The only module that imports a JSON Schema validator: the reference receiver checks what it
accepts with the same files a platform is given (issue 20: no second, hand-written definition).
``jsonschema-rs`` (Rust) because the pure-Python ``jsonschema`` took 80-275 ms for a 200-event
batch on the test VM (the receiver handles 5 k events/s). This one validates a parsed 200-event
batch (68-77 KB of captured events) in 0.3-0.5 ms, 0.9-1.6 ms with the JSON parse (the pydantic
model it replaced took 1.6 ms with the parse; D62): measured 2026-12-02 with
``python -m tests.contract.time_validation`` (timeit, best and median of 7 x 200 calls, two
runs, on the 2-core test VM beside a CI run; jsonschema-rs 0.61.2). Validators are compiled once.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema_rs

from edge.contract import SCHEMA_FILES, schema

MAX_ERRORS = 5  # a hostile message can fail thousands of times: name the first few only


@functools.cache
def registry() -> jsonschema_rs.Registry:
    """Every published schema under its ``$id`` (relative ``$ref`` resolve against it)."""
    return jsonschema_rs.Registry([(schema(n)["$id"], schema(n)) for n in SCHEMA_FILES])


@functools.cache
def validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """Return the compiled validator of the schema named ``name`` (edge.contract names).

    Formats are asserted (``date-time``), as the Node consumer's Ajv does with ajv-formats.
    """
    return jsonschema_rs.Draft202012Validator(schema(name), registry=registry(),
                                              validate_formats=True)


# JSON may escape a lone surrogate (``"\\ud800"``): Python's json makes it a str that is not
# valid Unicode, which the Rust validator cannot take (it raised UnicodeEncodeError per message
# with a traceback: issue 19 re-test #4). No published schema admits one: a plain refusal.
LONE_SURROGATE = "(root): a string holds a lone UTF-16 surrogate (not Unicode text)"


def is_valid(name: str, doc: Any) -> bool:
    """Return whether ``doc`` is valid against the schema named ``name``."""
    try:
        return bool(validator(name).is_valid(doc))
    except UnicodeEncodeError:
        return False


def errors(name: str, doc: Any) -> list[str]:
    """Return up to MAX_ERRORS short descriptions of why ``doc`` fails ``name``; [] if valid."""
    out = []
    try:
        for error in validator(name).iter_errors(doc):
            where = "/".join(str(p) for p in error.instance_path) or "(root)"
            out.append(f"{where}: {error.message[:120]}")
            if len(out) >= MAX_ERRORS:
                break
    except UnicodeEncodeError:
        return [LONE_SURROGATE]
    return out
