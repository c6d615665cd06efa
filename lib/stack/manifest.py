"""Load ``functions/manifest.yaml``: the one description of every function's wiring.

``backbeat up`` (local emulation), ``backbeat package`` and Terraform all read the same file, so
a mistake must be caught once, on load, with the key path that is wrong
(``functions.ingest.trigger.topic: ...``) instead of surfacing later as a half-built stack.

:func:`load_manifest` validates against ``manifest_schema.json`` (structure), then checks what a
schema cannot say (exactly one trigger kind, known buckets, valid cron, placeholders), fills the
defaults and expands ``{event_type}`` topic triggers from the event-type schemas folder (one
sub-folder per type). Paths in the file (``source``, ``schemas_dir``) are relative to the project
root: the nearest folder above the manifest that holds ``pyproject.toml`` (else the manifest's
own folder).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from backbeat.errors import ConfigError

MANIFEST_ENV = "BACKBEAT_MANIFEST"
EVENT_TYPE_PLACEHOLDER = "{event_type}"
SCHEMA_PATH = Path(__file__).with_name("manifest_schema.json")
DEFAULTS: dict[str, Any] = {
    "runtime": "python311",
    "region": "europe-west1",
    "memory": "256Mi",
    "timeout_s": 60,
    "max_instances": 10,
    "min_instances": 0,
    "retry": True,
    "max_delivery_attempts": 5,
}
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_EVENT_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ManifestError(ConfigError):
    """The manifest is unreadable or invalid; the message names the file and the bad key path."""


@dataclass(frozen=True)
class Trigger:
    """What invokes a function. ``kind`` is ``topic``, ``bucket`` or ``schedule``.

    ``topics`` are the concrete Pub/Sub topics the function is subscribed to: the expanded topic
    pattern, ``("tick.<function>",)`` for a schedule, empty for a bucket trigger (bucket events
    arrive through the storage notification topic, filtered by ``bucket`` and ``prefix``).
    """

    kind: str
    topic: str | None = None  # as written, may contain {event_type}
    bucket: str | None = None  # logical bucket name (a key of Manifest.buckets)
    prefix: str = ""
    schedule: str | None = None
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bucket:
    """A logical bucket: the env var that carries its real name, and the name used when unset."""

    name: str
    env: str | None
    default: str

    def real_name(self, environ: Mapping[str, str] | None = None) -> str:
        environ = os.environ if environ is None else environ
        return (environ.get(self.env) if self.env else None) or self.default


@dataclass(frozen=True)
class Function:
    """One function with every default filled in."""

    name: str
    source: Path  # absolute folder holding main.py
    source_rel: str  # as written in the manifest
    entry_point: str
    signature: str
    trigger: Trigger
    dead_letter_topic: str | None
    env: Mapping[str, str]  # raw values, may hold ${bucket.x} / ${project}
    roles: tuple[str, ...]
    publishes: tuple[str, ...]
    runtime: str
    region: str
    memory: str
    timeout_s: int
    max_instances: int
    min_instances: int
    retry: bool
    max_delivery_attempts: int
    description: str = ""
    extra_requirements: tuple[str, ...] = ()  # distributions beyond the base runtime (see packaging)

    @property
    def deployed_name(self) -> str:
        """The Cloud Functions name (``close_bucket`` -> ``close-bucket``)."""
        return self.name.replace("_", "-")

    @property
    def main_py(self) -> Path:
        return self.source / "main.py"


@dataclass(frozen=True)
class Manifest:
    path: Path
    root: Path
    version: int
    defaults: Mapping[str, Any]
    schemas_dir: Path | None
    event_types: tuple[str, ...]
    event_types_note: str  # why there are no event types, when there are none
    buckets: Mapping[str, Bucket]
    topics: tuple[str, ...]  # declared extra topics
    functions: Mapping[str, Function] = field(default_factory=dict)

    def all_topics(self) -> list[str]:
        """Every topic the stack needs: triggers, ticks, dead letters, publishes and extras (sorted)."""
        names: set[str] = set(self.topics)
        for fn in self.functions.values():
            names.update(fn.trigger.topics)
            names.update(fn.publishes)
            if fn.dead_letter_topic:
                names.add(fn.dead_letter_topic)
        return sorted(names)

    def bucket_names(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Logical bucket name -> real bucket name."""
        return {name: b.real_name(environ) for name, b in self.buckets.items()}

    def function_env(
        self, fn: Function, project: str, environ: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The function's env with ``${bucket.<name>}`` and ``${project}`` replaced."""
        buckets = self.bucket_names(environ)

        def sub(match: re.Match[str]) -> str:
            ref = match.group(1)
            if ref == "project":
                return project
            return buckets[ref.removeprefix("bucket.")]

        return {k: _PLACEHOLDER.sub(sub, v) for k, v in fn.env.items()}

    def check_sources(self, names: list[str] | None = None) -> None:
        """Every (named) function's ``main.py`` exists; raise ManifestError naming the first missing."""
        for name in names or list(self.functions):
            fn = self.functions[name]
            if not fn.main_py.is_file():
                raise ManifestError(
                    f"{self.path}: functions.{name}.source: {fn.main_py} does not exist "
                    f"(source {fn.source_rel!r} is relative to {self.root})"
                )


# ------------------------------------------------------------------------------------ loading
def default_manifest_path() -> Path:
    """``$BACKBEAT_MANIFEST``, else ``./functions/manifest.yaml``, else the one beside the package."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    here = Path.cwd() / "functions" / "manifest.yaml"
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / "functions" / "manifest.yaml"


def project_root(manifest_path: Path) -> Path:
    """The nearest folder at or above the manifest's folder holding ``pyproject.toml``."""
    start = manifest_path.resolve().parent
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").exists():
            return folder
    return start


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _key_path(parts: list[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _schema_error(path: Path, data: Any) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if not errors:
        return
    messages = [_describe(err) for err in errors[:3]]
    more = f" (and {len(errors) - 3} more problem(s))" if len(errors) > 3 else ""
    raise ManifestError(f"{path}: {'; '.join(messages)}{more}")


def _describe(err: Any) -> str:
    """One schema error as ``key.path: what is wrong``."""
    where = list(err.absolute_path)
    if err.validator == "required":
        missing = [p for p in err.validator_value if isinstance(err.instance, dict) and p not in err.instance]
        return f"{_key_path(where + missing[:1])}: required"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema["properties"]))
        return f"{_key_path(where + extra[:1])}: unknown key (allowed: {allowed})"
    if "propertyNames" in err.schema_path:
        bad = err.instance
        return f"{_key_path(where + [bad])}: invalid name {bad!r} (must match {err.schema.get('pattern')})"
    if err.validator == "pattern":
        return f"{_key_path(where)}: {err.instance!r} does not match {err.validator_value}"
    return f"{_key_path(where)}: {err.message}"


def discover_event_types(schemas_dir: Path | None) -> tuple[tuple[str, ...], str]:
    """Event types = sub-folders of the schemas folder; ``(types, note)`` where note says why none."""
    if schemas_dir is None:
        return (), "event_types.schemas_dir is not set"
    if not schemas_dir.is_dir():
        return (), f"{schemas_dir} does not exist"
    types = tuple(
        sorted(p.name for p in schemas_dir.iterdir() if p.is_dir() and _EVENT_TYPE_NAME.match(p.name))
    )
    return types, "" if types else f"{schemas_dir} has no event-type folders"


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read, validate and expand the manifest (see module doc). Raises :class:`ManifestError`."""
    import yaml

    path = Path(path) if path is not None else default_manifest_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ManifestError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: (top level): expected a mapping, got {type(data).__name__}")
    _schema_error(path, data)
    return _build(path, data)


def _build(path: Path, data: dict[str, Any]) -> Manifest:
    from backbeat.stack.cron import CronError, parse_cron

    root = project_root(path)
    defaults = {**DEFAULTS, **(data.get("defaults") or {})}
    schemas_rel = (data.get("event_types") or {}).get("schemas_dir")
    schemas_dir = (root / schemas_rel) if schemas_rel else None
    event_types, note = discover_event_types(schemas_dir)
    buckets = {
        name: Bucket(name=name, env=b.get("env"), default=b["default"])
        for name, b in (data.get("buckets") or {}).items()
    }

    def fail(key: str, msg: str) -> ManifestError:
        return ManifestError(f"{path}: {key}: {msg}")

    functions: dict[str, Function] = {}
    for name, raw in data["functions"].items():
        key = f"functions.{name}"
        trig = raw["trigger"]
        kinds = [k for k in ("topic", "bucket", "schedule") if k in trig]
        if len(kinds) != 1:
            raise fail(
                f"{key}.trigger", f"needs exactly one of topic, bucket, schedule (got {kinds or 'none'})"
            )
        kind = kinds[0]
        if "prefix" in trig and kind != "bucket":
            raise fail(f"{key}.trigger.prefix", "only allowed with a bucket trigger")
        if kind == "topic":
            pattern = trig["topic"]
            rest = pattern.replace(EVENT_TYPE_PLACEHOLDER, "")
            if "{" in rest or "}" in rest:
                raise fail(
                    f"{key}.trigger.topic", f"{pattern!r}: the only placeholder is {EVENT_TYPE_PLACEHOLDER}"
                )
            if EVENT_TYPE_PLACEHOLDER in pattern:
                topics = tuple(pattern.replace(EVENT_TYPE_PLACEHOLDER, t) for t in event_types)
            else:
                topics = (pattern,)
            trigger = Trigger(kind="topic", topic=pattern, topics=topics)
        elif kind == "bucket":
            if trig["bucket"] not in buckets:
                known = ", ".join(sorted(buckets)) or "none declared"
                raise fail(f"{key}.trigger.bucket", f"unknown bucket {trig['bucket']!r} (buckets: {known})")
            trigger = Trigger(kind="bucket", bucket=trig["bucket"], prefix=trig.get("prefix", ""))
        else:
            try:
                parse_cron(trig["schedule"])
            except CronError as exc:
                raise fail(f"{key}.trigger.schedule", str(exc)) from None
            trigger = Trigger(kind="schedule", schedule=trig["schedule"], topics=(f"tick.{name}",))

        env: dict[str, str] = {}
        for var, value in (raw.get("env") or {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            for ref in _PLACEHOLDER.findall(text):
                if ref == "project":
                    continue
                if not ref.startswith("bucket.") or ref.removeprefix("bucket.") not in buckets:
                    raise fail(
                        f"{key}.env.{var}",
                        f"unknown placeholder ${{{ref}}} (use ${{project}} or ${{bucket.<name>}} "
                        f"with a bucket declared under buckets)",
                    )
            env[var] = text

        dlt = raw.get("dead_letter_topic")
        if dlt and dlt in trigger.topics:
            raise fail(f"{key}.dead_letter_topic", f"{dlt!r} is the function's own trigger topic")

        def setting(name_: str, raw: dict[str, Any] = raw) -> Any:
            return raw.get(name_, defaults[name_])

        if setting("min_instances") > setting("max_instances"):
            raise fail(f"{key}.min_instances", "is larger than max_instances")
        functions[name] = Function(
            name=name,
            source=(root / raw["source"]).resolve(),
            source_rel=raw["source"],
            entry_point=raw["entry_point"],
            signature=raw.get("signature", "cloudevent"),
            trigger=trigger,
            dead_letter_topic=dlt,
            env=env,
            roles=tuple(raw.get("roles") or ()),
            publishes=tuple(raw.get("publishes") or ()),
            runtime=setting("runtime"),
            region=setting("region"),
            memory=setting("memory"),
            timeout_s=setting("timeout_s"),
            max_instances=setting("max_instances"),
            min_instances=setting("min_instances"),
            retry=setting("retry"),
            max_delivery_attempts=setting("max_delivery_attempts"),
            description=raw.get("description", ""),
            extra_requirements=tuple(raw.get("extra_requirements") or ()),
        )
    return Manifest(
        path=path.resolve(),
        root=root,
        version=data["version"],
        defaults=defaults,
        schemas_dir=schemas_dir,
        event_types=event_types,
        event_types_note=note,
        buckets=buckets,
        topics=tuple(data.get("topics") or ()),
        functions=functions,
    )
