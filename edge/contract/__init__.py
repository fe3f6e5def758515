"""The published platform contract: JSON Schemas (2020-12) of every message, as shipped files.

The files under ``edge/contract/schemas/`` are the single source: ``edge schema`` prints them,
the reference receiver validates with them (``hil/receiver/schemas.py``), the Node.js
conformance consumer (tests/contract/) compiles them, and docs/contract/asyncapi.yaml and
openapi.yaml ``$ref`` them. Pure: reads package data, no other I/O.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

# Semantic version of the wire contract (docs/contract/CHANGELOG.md); the body's ``v`` is its
# major version and changes only when an old receiver could misread a new message.
CONTRACT_VERSION = "1.1.5"
SCHEMA_BASE_URI = "https://edge.invalid/contract/1/"
# short name -> file, in the order ``edge schema`` prints them
SCHEMA_FILES = {
    "envelope": "envelope.schema.json",
    "envelope_v2": "envelope-v2.schema.json",
    "batch": "batch.schema.json",
    "event": "event.schema.json",
    "state": "gateway-state.schema.json",
    "command": "command.schema.json",
    "command_result": "command-result.schema.json",
    "work_coverage": "work-coverage.schema.json",
    "defs": "defs.schema.json",
}


def schema_text(file: str) -> str:
    """Return one schema file's text as shipped."""
    return (resources.files(__package__) / "schemas" / file).read_text(encoding="utf-8")


def schema(name: str) -> dict[str, Any]:
    """Return the schema named ``name`` (a key of SCHEMA_FILES); KeyError if unknown."""
    doc: dict[str, Any] = json.loads(schema_text(SCHEMA_FILES[name]))
    return doc


def schemas() -> dict[str, dict[str, Any]]:
    """Return every schema by short name (what ``edge schema`` prints)."""
    return {name: schema(name) for name in SCHEMA_FILES}


def bundle() -> dict[str, Any]:
    """Return ``edge schema``'s document: the contract version and every schema."""
    return {"contract_version": CONTRACT_VERSION, "schemas": schemas()}
