"""functions/manifest.yaml: loads, fills defaults, expands {event_type}, names the bad key on error."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from backbeat.errors import BackbeatError
from backbeat.stack.cron import CronError, parse_cron
from backbeat.stack.manifest import ManifestError, load_manifest

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "version": 1,
    "defaults": {"memory": "512Mi", "max_delivery_attempts": 7},
    "event_types": {"schemas_dir": "schemas"},
    "buckets": {"events": {"env": "BACKBEAT_EVENTS_BUCKET", "default": "backbeat-events"}},
    "topics": ["hour-closed"],
    "functions": {
        "ingest": {
            "source": "functions/ingest",
            "entry_point": "handle",
            "trigger": {"topic": "events.{event_type}"},
            "dead_letter_topic": "ingest-dead-letter",
            "env": {"BACKBEAT_EVENTS_BUCKET": "${bucket.events}", "WHERE": "${project}/x", "DEBUG": True},
            "roles": ["roles/storage.objectCreator"],
            "publishes": ["hour-closed"],
            "timeout_s": 120,
        },
        "close_bucket": {
            "source": "functions/close_bucket",
            "entry_point": "handle",
            "trigger": {"schedule": "*/5 * * * *"},
        },
        "dedupe": {
            "source": "functions/dedupe",
            "entry_point": "handle",
            "trigger": {"bucket": "events", "prefix": "staging/"},
            "retry": False,
        },
    },
}


def _project(tmp_path: Path, data: dict, types: tuple[str, ...] = ("play", "skip")) -> Path:
    """A project folder: pyproject.toml, functions/manifest.yaml, schemas/<type>/v1.avsc, sources."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "schemas").mkdir(parents=True, exist_ok=True)
    for t in types:
        (tmp_path / "schemas" / t).mkdir(parents=True, exist_ok=True)
        (tmp_path / "schemas" / t / "v1.avsc").write_text("{}")
    for name in ("ingest", "close_bucket", "dedupe"):
        (tmp_path / "functions" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "functions" / name / "main.py").write_text("def handle(e):\n    pass\n")
    path = tmp_path / "functions" / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _with(path: list[str], value: object, delete: bool = False) -> dict:
    import copy

    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def test_valid_manifest_loads_with_defaults_and_expansion(tmp_path: Path) -> None:
    m = load_manifest(_project(tmp_path, BASE))
    assert m.root == tmp_path.resolve()
    assert m.event_types == ("play", "skip")
    ingest = m.functions["ingest"]
    assert ingest.trigger.kind == "topic"
    assert ingest.trigger.topics == ("events.play", "events.skip")
    assert ingest.memory == "512Mi"  # from defaults
    assert ingest.timeout_s == 120  # own setting wins
    assert ingest.max_delivery_attempts == 7
    assert ingest.runtime == "python311"  # built-in default
    assert ingest.source == (tmp_path / "functions" / "ingest").resolve()
    assert ingest.env["DEBUG"] == "true"
    close = m.functions["close_bucket"]
    assert close.trigger.kind == "schedule" and close.trigger.topics == ("tick.close_bucket",)
    assert close.deployed_name == "close-bucket"
    dedupe = m.functions["dedupe"]
    assert (dedupe.trigger.kind, dedupe.trigger.bucket, dedupe.trigger.prefix) == (
        "bucket",
        "events",
        "staging/",
    )
    assert dedupe.retry is False and dedupe.trigger.topics == ()
    assert m.all_topics() == [
        "events.play",
        "events.skip",
        "hour-closed",
        "ingest-dead-letter",
        "tick.close_bucket",
    ]
    env = m.function_env(ingest, "my-proj", environ={"BACKBEAT_EVENTS_BUCKET": "real-events"})
    assert env == {"BACKBEAT_EVENTS_BUCKET": "real-events", "WHERE": "my-proj/x", "DEBUG": "true"}
    assert m.function_env(ingest, "p", environ={})["BACKBEAT_EVENTS_BUCKET"] == "backbeat-events"
    m.check_sources()


def test_missing_or_empty_schemas_dir_means_no_event_types(tmp_path: Path) -> None:
    m = load_manifest(_project(tmp_path, BASE, types=()))
    assert m.event_types == ()
    assert m.functions["ingest"].trigger.topics == ()
    assert "no event-type folders" in m.event_types_note
    (tmp_path / "b").mkdir()
    m2 = load_manifest(_project(tmp_path / "b", _with(["event_types", "schemas_dir"], "nowhere"), types=()))
    assert "does not exist" in m2.event_types_note


@pytest.mark.parametrize(
    ("path", "value", "delete", "expected"),
    [
        (["version"], 2, False, "version:"),
        (["functions", "ingest", "trigger"], None, True, "functions.ingest.trigger: required"),
        (["functions", "ingest", "entry_point"], None, True, "functions.ingest.entry_point: required"),
        (["functions", "ingest", "memroy"], "1Gi", False, "functions.ingest.memroy: unknown key"),
        (["functions", "ingest", "memory"], "lots", False, "functions.ingest.memory: 'lots' does not match"),
        (["functions", "ingest", "timeout_s"], "60", False, "functions.ingest.timeout_s:"),
        (
            ["functions", "ingest", "max_delivery_attempts"],
            2,
            False,
            "functions.ingest.max_delivery_attempts:",
        ),
        (["functions", "ingest", "roles"], ["storage.admin"], False, "functions.ingest.roles.0:"),
        (["functions", "ingest", "signature"], "event", False, "functions.ingest.signature:"),
        (["functions", "Bad-Name"], BASE["functions"]["dedupe"], False, "functions.Bad-Name: invalid name"),
        (["functions", "ingest", "trigger"], {}, False, "functions.ingest.trigger: needs exactly one of"),
        (
            ["functions", "ingest", "trigger"],
            {"topic": "a-topic", "schedule": "* * * * *"},
            False,
            "functions.ingest.trigger: needs exactly one of",
        ),
        (
            ["functions", "ingest", "trigger", "prefix"],
            "x/",
            False,
            "functions.ingest.trigger.prefix: only allowed",
        ),
        (["functions", "ingest", "trigger", "topic"], "ev.{type}", False, "functions.ingest.trigger.topic:"),
        (
            ["functions", "dedupe", "trigger", "bucket"],
            "nosuch",
            False,
            "functions.dedupe.trigger.bucket: unknown",
        ),
        (["functions", "close_bucket", "trigger", "schedule"], "61 * * * *", False, "trigger.schedule: cron"),
        (["functions", "close_bucket", "trigger", "schedule"], "* * * *", False, "has 4 fields"),
        (
            ["functions", "ingest", "env", "X"],
            "${bucket.nope}",
            False,
            "functions.ingest.env.X: unknown placeholder",
        ),
        (["functions", "ingest", "env", "lower"], "v", False, "functions.ingest.env.lower: invalid name"),
        (["functions", "ingest", "dead_letter_topic"], "events.play", False, "own trigger topic"),
        (["functions", "ingest", "min_instances"], 50, False, "functions.ingest.min_instances: is larger"),
        (["buckets", "events", "default"], "UPPER", False, "buckets.events.default:"),
        (["topics"], ["ok-topic", "x"], False, "topics.1:"),
        (["surprise"], 1, False, "surprise: unknown key"),
    ],
)
def test_bad_key_raises_manifest_error_naming_it(
    tmp_path: Path, path: list[str], value: object, delete: bool, expected: str
) -> None:
    manifest = _project(tmp_path, _with(path, value, delete))
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert expected in str(info.value)
    assert str(manifest) in str(info.value)
    assert isinstance(info.value, BackbeatError)


def test_unreadable_and_invalid_yaml_are_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nfunctions:\n  a: [unclosed\n")
    with pytest.raises(ManifestError, match=r"line \d+ column \d+ is not valid YAML"):
        load_manifest(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ManifestError, match="expected a mapping"):
        load_manifest(bad)


def test_missing_main_py_is_reported_by_check_sources(tmp_path: Path) -> None:
    path = _project(tmp_path, BASE)
    (tmp_path / "functions" / "dedupe" / "main.py").unlink()
    m = load_manifest(path)
    m.check_sources(["ingest"])
    with pytest.raises(ManifestError, match=r"functions\.dedupe\.source: .*main\.py does not exist"):
        m.check_sources()


def test_repository_manifests_are_valid() -> None:
    for rel in ("functions/manifest.yaml", "tests/e2e/fixtures/manifest.yaml"):
        m = load_manifest(REPO / rel)
        m.check_sources()
        assert m.functions


def test_cron_matching_and_next_firing() -> None:
    every5 = parse_cron("*/5 * * * *")
    assert every5.matches(datetime(2026, 1, 1, 10, 15, tzinfo=UTC))
    assert not every5.matches(datetime(2026, 1, 1, 10, 16, tzinfo=UTC))
    assert every5.next_after(datetime(2026, 1, 1, 10, 16, 30, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 20, tzinfo=UTC
    )
    hourly = parse_cron("7 * * * *")
    assert hourly.next_after(datetime(2026, 1, 1, 10, 7, tzinfo=UTC)) == datetime(
        2026, 1, 1, 11, 7, tzinfo=UTC
    )
    # both day fields restricted: either matches (unix cron); 2026-03-02 is a Monday
    either = parse_cron("0 12 1 * mon")
    assert either.matches(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    assert either.matches(datetime(2026, 4, 1, 12, 0, tzinfo=UTC))  # a Wednesday, day 1
    assert not either.matches(datetime(2026, 3, 3, 12, 0, tzinfo=UTC))
    sunday = parse_cron("30 6 * * 7")  # 7 is Sunday too
    assert sunday.next_after(datetime(2026, 3, 2, tzinfo=UTC)) == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    yearly = parse_cron("0 0 1 jan *")
    assert yearly.next_after(datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    ranged = parse_cron("0-10/5,59 9-17 * * mon-fri")
    assert sorted(ranged.minutes) == [0, 5, 10, 59] and sorted(ranged.weekdays) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("60 * * * *", "minute value 60 is outside 0-59"),
        ("* 24 * * *", "hour value 24"),
        ("* * 0 * *", "day-of-month value 0"),
        ("* * * foo *", "month field has 'foo'"),
        ("*/0 * * * *", "step '0'"),
        ("5-1 * * * *", "runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_bad_cron_is_named(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        cron = parse_cron(expr)
        cron.next_after(datetime(2026, 1, 1, tzinfo=UTC), limit_days=800)


def test_docs_example_matches_the_schema(tmp_path: Path) -> None:
    """The manifest example in docs/manifest.md is a valid manifest (the docs stay true)."""
    text = (REPO / "docs" / "manifest.md").read_text()
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    path = _project(tmp_path, yaml.safe_load(textwrap.dedent(block)))
    (tmp_path / "lib" / "delivery" / "schemas" / "play").mkdir(parents=True)
    m = load_manifest(path)
    assert m.functions["ingest"].trigger.topics == ("events.play",)
