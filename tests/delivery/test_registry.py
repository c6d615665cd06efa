from __future__ import annotations

import json

import pytest

from backbeat.delivery.errors import SchemaError, UnknownEventType
from backbeat.delivery.registry import Registry, default_registry


def test_ships_at_least_six_types_each_keyed_by_event_id_and_received_at():
    reg = default_registry()
    assert {"play", "skip", "search", "page_view", "ad_impression", "error"} <= set(reg.types())
    for t in reg.types():
        for v in reg.versions(t):
            s = reg.get(t, v)
            assert s.field_names[:2] == ["event_id", "received_at"]
    play = reg.latest("play")
    assert play.version == 2 and {"user_id", "track_id"} <= set(play.field_names)


def test_adding_a_type_is_adding_a_schema_file(tmp_path):
    d = tmp_path / "podcast_episode"
    d.mkdir()
    (d / "v1.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Episode",
                "fields": [
                    {"name": "event_id", "type": "string"},
                    {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                    {"name": "show", "type": "string"},
                ],
            }
        )
    )
    assert Registry(tmp_path).types() == ["podcast_episode"]


@pytest.mark.parametrize(
    "fields, needle",
    [
        ([{"name": "id", "type": "string"}, {"name": "x", "type": "long"}], "event_id"),
        ([{"name": "event_id", "type": "string"}, {"name": "received_at", "type": "string"}], "received_at"),
    ],
)
def test_a_schema_without_the_key_fields_is_refused_naming_the_file(tmp_path, fields, needle):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "v1.avsc").write_text(json.dumps({"type": "record", "name": "B", "fields": fields}))
    with pytest.raises(SchemaError, match=needle) as err:
        Registry(tmp_path)
    assert "bad/v1.avsc" in str(err.value)


def test_unparsable_and_misnamed_schema_files(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "v1.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match="v1.avsc"):
        Registry(tmp_path)
    (tmp_path / "bad" / "v1.avsc").unlink()
    (tmp_path / "bad" / "version1.json").write_text("{}")
    with pytest.raises(SchemaError, match="v<N>.avsc"):
        Registry(tmp_path)


def test_unknown_type_and_version_name_what_exists():
    reg = default_registry()
    with pytest.raises(UnknownEventType, match="registered: ad_impression"):
        reg.get("nope")
    with pytest.raises(UnknownEventType, match=r"versions: \[1, 2\]"):
        reg.get("play", 9)
