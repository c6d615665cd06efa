"""The delivery stage of ``backbeat demo`` on both clocks, checked from the bucket it leaves behind.

Real hours: the three hours before the current one are replayed through ``received_at`` (a few
seconds). Scaled clock (``BACKBEAT_HOUR_SECONDS``): the stream is published live and each scaled
hour closes on the wall clock only after its end plus grace. Each test reads every staging file
(what ingest stored) and every _SUCCESS-referenced final file back itself: every stored event id is
in the final files exactly once, none is there that was not stored, the poison batch is reported.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from rich.console import Console

from backbeat.cloud import connect
from backbeat.delivery import demo
from backbeat.delivery import hours as H
from backbeat.demo import DemoContext, run_demo
from backbeat.settings import Settings

from .helpers import assert_exactly_once

TYPES = set(demo.PER_HOUR)


@pytest.fixture
def clock() -> Iterator[Any]:
    """Set the bucket length for one test; always back to the environment's afterwards."""
    yield H.set_hour_seconds
    H.set_hour_seconds(None)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[DemoContext]:
    settings = Settings(backend="local", data_dir=tmp_path / "data")
    platform = connect(settings)
    yield DemoContext(platform, settings, tmp_path, Console(record=True, width=200))
    platform.close()


def staged_ids(platform: Any, bucket: str) -> dict[str, set[str]]:
    """Event ids of every batch ingest stored in staging/, per type."""
    ids: dict[str, set[str]] = {}
    for info in platform.blobs.list(bucket, "staging/"):
        event_type = info.name.split("/")[1]
        for rec in fastavro.reader(io.BytesIO(platform.blobs.get(bucket, info.name))):
            ids.setdefault(event_type, set()).add(rec["event_id"])
    return ids


def check_bucket(platform: Any, bucket: str, figures: dict[str, Any], keys: list[str]) -> dict:
    """Exactly once from staging to final, counts that add up, duplicates/late/poison all exercised."""
    staged = staged_ids(platform, bucket)
    assert set(staged) == TYPES
    check = assert_exactly_once(platform, bucket, staged)
    successes = check.successes
    assert set(successes) == {(t, h) for t in TYPES for h in keys}
    for s in successes.values():
        assert s["rows_in"] - s["duplicates"] == s["rows_out"], s
    delivered = sum(len(c) for c in check.ids.values())
    assert delivered == sum(s["rows_out"] for s in successes.values()) == figures["delivered"]
    # what the producer had acknowledged = what is in the final files + the dead-lettered batch
    assert figures["acked"] == delivered + figures["dead_letters"] and figures["dead_letters"] == 25
    assert sum(s.get("dead_letter_events", 0) for s in successes.values()) == 25
    assert figures["duplicates_removed"] == sum(s["duplicates"] for s in successes.values()) > 0
    assert figures["skewed"] == sum(s["skewed"] for s in successes.values()) > 0  # late rows, diverted
    assert sum(s.get("duplicates_prior_hours", 0) for s in successes.values()) > 0  # the resent batch
    assert (figures["lost"], figures["dup_ids"]) == (0, 0)
    return successes


def test_default_demo_replays_the_last_three_real_hours(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    before = datetime.now(UTC)
    [result] = run_demo(tmp_path / "demo", [("delivery", "backbeat.delivery.demo")], console)
    after = datetime.now(UTC)
    assert result.ok, result.error
    assert result.figures["mode"] == "replay" and result.figures["hours_closed"] == 18
    options = [[H.hour_key(t - timedelta(hours=k)) for k in (3, 2, 1)] for t in {before, after}]
    platform = connect(Settings(backend="local", data_dir=(tmp_path / "demo" / "data").resolve()))
    try:
        bucket = Settings(backend="local").events_bucket
        keys = sorted({h for (_, h) in demo.final_ids(platform, bucket)[1]})
        assert keys in options  # the three full hours before now, real UTC hours
        check_bucket(platform, bucket, result.figures, keys)
    finally:
        platform.close()
    out = console.export_text()
    assert "lost 0, duplicates 0" in out and "(replay, 3600-second hours)" in out


def test_replay_on_a_scaled_clock_uses_scaled_hours(ctx: DemoContext, clock: Any) -> None:
    clock(60)
    before = datetime.now(UTC)
    figures = demo.run_stage(ctx, live=False)
    keys = ctx.shared["delivery"]["hours"]
    assert len(keys) == 3 and keys == [H.shift(keys[0], i) for i in range(3)]
    for k in keys:  # 60-second buckets within the last few minutes, named as virtual hours
        assert H.hour_end(k) - H.hour_start(k) == timedelta(seconds=60)
        assert before - timedelta(minutes=4) <= H.hour_start(k) < before
    assert H.key_time(keys[0]).year > 2100
    check_bucket(ctx.platform, ctx.settings.events_bucket, figures, keys)


@pytest.mark.slow
def test_scaled_clock_runs_live_and_each_hour_closes_after_its_end_and_grace(
    ctx: DemoContext, clock: Any
) -> None:
    """Two 10-second hours published as they pass: each closes on the wall clock, never before its
    end + grace, and is deduplicated with nothing lost (~25 s)."""
    clock(10)
    started = datetime.now(UTC)
    figures = demo.run_stage(ctx, live=True, hours=2, volume=0.5)
    finished = datetime.now(UTC)
    assert figures["mode"] == "live" and figures["hour_s"] == 10
    keys = ctx.shared["delivery"]["hours"]
    assert keys == [keys[0], H.shift(keys[0], 1)]
    assert started - timedelta(seconds=10) <= H.hour_start(keys[0]) and H.hour_end(keys[1]) <= finished
    check_bucket(ctx.platform, ctx.settings.events_bucket, figures, keys)
    out = ctx.console.export_text()
    for k in keys:
        for t in TYPES:
            doc = ctx.platform.documents.get(H.hour_doc(t, k))
            closed_at = datetime.fromisoformat(doc["closed_at"])
            assert H.hour_end(k) + timedelta(seconds=demo.grace_s()) <= closed_at <= finished, (t, k, doc)
        assert f"closed {k} (" in out  # each hour is shown as it closes, before the final table
        assert out.index(f"closed {k} (") < out.index("event delivery")
    assert "(live, 10-second hours)" in out and "lost 0, duplicates 0" in out


def test_stage_entry_picks_replay_for_real_hours_and_live_for_a_scaled_clock(
    ctx: DemoContext, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def mode(name: str) -> Any:
        def fake(*args: Any, **kwargs: Any) -> list[str]:
            seen.append(name)
            raise RuntimeError("stop here")

        return fake

    monkeypatch.setattr(demo, "_replay", mode("replay"))
    monkeypatch.setattr(demo, "_live", mode("live"))
    for seconds in (None, 60):
        clock(seconds)
        with pytest.raises(RuntimeError, match="stop here"):
            demo.run(ctx)
    assert seen == ["replay", "live"]
