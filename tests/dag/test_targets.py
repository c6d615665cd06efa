"""Targets: atomic local files, create-only GCS objects, flag folders, event-delivery hours."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

import backbeat.dag as dag
from backbeat.dag.errors import TargetError


def test_local_target_is_atomic(tmp_path: Path) -> None:
    target = dag.LocalTarget(tmp_path / "sub" / "out.txt")
    with pytest.raises(RuntimeError):
        with target.open("w") as f:
            f.write("half of it")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert os.listdir(tmp_path / "sub") == []  # no temp file left behind
    with target.open("w") as f:
        f.write("héllo")
    assert target.exists() and Path(target.path).read_text(encoding="utf-8") == "héllo"
    with target.open("r") as f:
        assert f.read() == "héllo"


def test_local_target_is_invisible_until_closed(tmp_path: Path) -> None:
    target = dag.LocalTarget(tmp_path / "out.bin", format=dag.format.Nop)
    f = target.open("w")
    f.write(b"\x00\x01")
    assert not target.exists()
    f.close()
    assert Path(target.path).read_bytes() == b"\x00\x01"


def test_local_temporary_path(tmp_path: Path) -> None:
    target = dag.LocalTarget(tmp_path / "tool-output")
    with target.temporary_path() as tmp:
        Path(tmp).write_text("from a tool")
        assert not target.exists()
    assert Path(target.path).read_text() == "from a tool"


def test_gcs_target_create_only_through_the_blobs_port(platform) -> None:
    target = dag.GCSTarget("gs://outputs/a/b.json")
    assert not target.exists()
    with target.open("w") as f:
        json.dump({"x": 1}, f)
    assert target.exists()
    assert json.loads(platform.blobs.get("outputs", "a/b.json")) == {"x": 1}
    with pytest.raises(TargetError, match="already exists"):
        with dag.GCSTarget("outputs", "a/b.json").open("w") as f:
            f.write("again")
    assert json.loads(target.open("r").read()) == {"x": 1}


def test_gcs_target_failed_write_uploads_nothing(platform) -> None:
    target = dag.GCSTarget("gs://outputs/c.txt")
    with pytest.raises(ZeroDivisionError):
        with target.open("w") as f:
            f.write("partial")
            raise ZeroDivisionError("crash mid-write")
    assert not target.exists()


def test_flag_target_writes_success_last(platform) -> None:
    target = dag.GCSFlagTarget("gs://outputs/folder")
    order: list[str] = []
    original_put = platform.blobs.put

    def spy(bucket, name, data, **kw):
        order.append(name)
        return original_put(bucket, name, data, **kw)

    platform.blobs.put = spy
    try:
        with target.writer() as w:
            w.put("part-0", b"a")
            assert not target.exists()
            w.put("part-1", b"bb")
    finally:
        platform.blobs.put = original_put
    assert order == ["folder/part-0", "folder/part-1", "folder/_SUCCESS"]
    assert target.exists()
    assert target.read_flag()["parts"] == {"part-0": 1, "part-1": 2}


def test_flag_target_failed_attempt_leaves_no_flag_and_is_cleaned_on_retry(platform) -> None:
    target = dag.GCSFlagTarget("gs://outputs/f2/")
    with pytest.raises(RuntimeError):
        with target.writer() as w:
            w.put("part-0", b"old")
            raise RuntimeError("crash")
    assert not target.exists()
    with target.writer() as w:
        w.put("part-0", b"new")
    assert platform.blobs.get("outputs", "f2/part-0") == b"new"


def test_hour_closed_target_path(platform) -> None:
    hour = dt.datetime(2026, 1, 2, 3, 30, tzinfo=dt.UTC)
    target = dag.HourClosedTarget("play", hour)
    assert (target.bucket, target.name) == ("backbeat-events", "final/play/dt=2026-01-02/hour=03/")
    assert not target.exists()
    platform.blobs.ensure_bucket("backbeat-events")
    platform.blobs.put("backbeat-events", "final/play/dt=2026-01-02/hour=03/part-0.avro", b"x")
    assert not target.exists()  # data without the marker is not a closed hour
    platform.blobs.put("backbeat-events", "final/play/dt=2026-01-02/hour=03/_SUCCESS", b"{}")
    assert target.exists()
    assert target.data_files() == ["final/play/dt=2026-01-02/hour=03/part-0.avro"]
