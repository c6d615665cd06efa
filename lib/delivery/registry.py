"""The event-type registry: one folder per type, one Avro schema file per version.

``schemas/<type>/v<N>.avsc``. Adding a type is adding a folder with a schema file: the producer,
ingest, the manifest's ``{event_type}`` expansion (topics ``events.<type>``) and the CLI all read
this registry. Every schema must start with ``event_id`` (string) and ``received_at`` (long,
``timestamp-micros``): dedupe and bucketing depend on those two fields and nothing else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from backbeat.delivery.errors import SchemaError, UnknownEventType

SCHEMAS_DIR = Path(__file__).with_name("schemas")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


@dataclass(frozen=True)
class EventSchema:
    """One version of one event type; ``parsed`` is fastavro's parsed form (cached)."""

    event_type: str
    version: int
    raw: dict[str, Any]
    path: Path
    parsed: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    canonical: str = field(repr=False, compare=False, default="")

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.raw["fields"]]


def _check_required_fields(raw: dict[str, Any], path: Path) -> None:
    fields = raw.get("fields")
    if raw.get("type") != "record" or not isinstance(fields, list) or len(fields) < 2:
        raise SchemaError(f"{path}: must be an Avro record with at least event_id and received_at")
    first, second = fields[0], fields[1]
    if first.get("name") != "event_id" or first.get("type") != "string":
        raise SchemaError(f"{path}: field 0 must be event_id of type string")
    rt = second.get("type")
    if second.get("name") != "received_at" or not (
        isinstance(rt, dict) and rt.get("type") == "long" and rt.get("logicalType") == "timestamp-micros"
    ):
        raise SchemaError(f"{path}: field 1 must be received_at of type long/timestamp-micros")


def load_schema(path: Path, event_type: str, version: int) -> EventSchema:
    import fastavro
    from fastavro.schema import to_parsing_canonical_form

    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read schema: {exc}") from None
    _check_required_fields(raw, path)
    try:
        parsed = fastavro.parse_schema(raw, _write_hint=True)
    except Exception as exc:  # fastavro raises SchemaParseException, ValueError, KeyError...
        raise SchemaError(f"{path}: invalid Avro schema: {exc}") from None
    return EventSchema(event_type, version, raw, path, parsed, to_parsing_canonical_form(raw))


class Registry:
    """All event types under ``root`` (default: the package's ``schemas`` folder)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root else SCHEMAS_DIR
        if not self.root.is_dir():
            raise SchemaError(f"schema registry folder not found: {self.root}")
        self._schemas: dict[str, dict[int, EventSchema]] = {}
        for type_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not _TYPE_RE.match(type_dir.name):
                raise SchemaError(f"{type_dir}: event type names are [a-z][a-z0-9_]+")
            versions: dict[int, EventSchema] = {}
            for f in sorted(type_dir.iterdir()):
                m = _VERSION_RE.match(f.name)
                if not m:
                    raise SchemaError(f"{f}: schema files are named v<N>.avsc")
                versions[int(m.group(1))] = load_schema(f, type_dir.name, int(m.group(1)))
            if not versions:
                raise SchemaError(f"{type_dir}: no v<N>.avsc schema in it")
            self._schemas[type_dir.name] = versions

    def types(self) -> list[str]:
        return sorted(self._schemas)

    def versions(self, event_type: str) -> list[int]:
        return sorted(self._versions(event_type))

    def _versions(self, event_type: str) -> dict[int, EventSchema]:
        try:
            return self._schemas[event_type]
        except KeyError:
            raise UnknownEventType(
                f"unknown event type {event_type!r}; registered: {', '.join(self.types())}"
            ) from None

    def get(self, event_type: str, version: int | None = None) -> EventSchema:
        """The schema of ``event_type`` at ``version`` (latest when None)."""
        versions = self._versions(event_type)
        if version is None:
            return versions[max(versions)]
        try:
            return versions[int(version)]
        except (KeyError, ValueError):
            raise UnknownEventType(
                f"event type {event_type!r} has no schema version {version!r}; versions: {sorted(versions)}"
            ) from None

    def latest(self, event_type: str) -> EventSchema:
        return self.get(event_type)

    def find_by_canonical(self, event_type: str, canonical: str) -> EventSchema | None:
        for schema in self._versions(event_type).values():
            if schema.canonical == canonical:
                return schema
        return None


@lru_cache(maxsize=4)
def default_registry(root: str | None = None) -> Registry:
    """The process-wide registry (schemas are parsed once per cold start)."""
    return Registry(root)
