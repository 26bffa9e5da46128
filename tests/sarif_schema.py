"""Validating SARIF logs against the official SARIF 2.1.0 schema (tests/schemas/), offline."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema.validators import validator_for
from referencing import Registry

SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "sarif-schema-2.1.0.json"


def _no_network(uri: str):
    raise AssertionError(f"validating SARIF tried to fetch {uri}; every $ref must resolve inside the schema")


def validate(document: dict) -> None:
    """Assert that ``document`` is a valid SARIF 2.1.0 log, with the validator the schema declares."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = validator_for(schema)          # the draft named by the schema's own "$schema"
    cls.check_schema(schema)
    validator = cls(schema, registry=Registry(retrieve=_no_network))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "invalid SARIF:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:10])
