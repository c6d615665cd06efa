"""Hourly/daily ranges: gaps found with one listing, newest first, task_limit, UTC."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import backbeat.dag as dag
from backbeat.dag.ranges import RangeDaily, RangeHourly, missing_datetimes

UTC = dt.UTC


class HourlyOut(dag.Task):
    hour = dag.DateHourParameter()
    bucket = dag.Parameter(default="derived")

    def output(self):
        return dag.GCSTarget(self.bucket, f"hourly/{self.hour:%Y-%m-%dT%H}.txt")

    def run(self) -> None:
        self.output().put_bytes(b"x")


class CountingBlobs:
    """Wraps the real local blobs to count listings and existence checks."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.lists = 0
        self.stats = 0

    def list(self, *a, **k):
        self.lists += 1
        return self.inner.list(*a, **k)

    def stat(self, *a, **k):
        self.stats += 1
        return self.inner.stat(*a, **k)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_gaps_by_one_listing_newest_first(platform) -> None:
    blobs = platform.blobs
    blobs.ensure_bucket("derived")
    start = dt.datetime(2026, 1, 1, 0, tzinfo=UTC)
    present = {0, 1, 2, 5, 9}
    for h in present:
        blobs.put("derived", f"hourly/{(start + dt.timedelta(hours=h)):%Y-%m-%dT%H}.txt", b"x")
    counting = CountingBlobs(blobs)
    platform.blobs = counting
    try:
        gaps = missing_datetimes(HourlyOut, start, start + dt.timedelta(hours=12))
    finally:
        platform.blobs = blobs
    expected = sorted((start + dt.timedelta(hours=h) for h in range(12) if h not in present), reverse=True)
    assert gaps == expected
    assert counting.lists == 1 and counting.stats == 0


def test_range_hourly_task_limit_and_build(platform) -> None:
    start = dt.datetime(2026, 1, 1, 0, tzinfo=UTC)
    rng = RangeHourly(of=HourlyOut, start=start, stop=start + dt.timedelta(hours=6), task_limit=2)
    assert [t.hour.hour for t in rng.requires()] == [5, 4]  # newest first
    summary = dag.build([rng])
    assert summary.ok
    # the next run fills the next two gaps
    rng2 = RangeHourly(of=HourlyOut, start=start, stop=start + dt.timedelta(hours=6), task_limit=2)
    assert [t.hour.hour for t in rng2.requires()] == [3, 2]
    rng3 = RangeHourly(of=HourlyOut, start=start, stop=start + dt.timedelta(hours=6), task_limit=10)
    assert dag.build([rng3]).ok
    assert RangeHourly(of=HourlyOut, start=start, stop=start + dt.timedelta(hours=6)).complete()


def test_range_hourly_default_window_is_utc_now() -> None:
    rng = RangeHourly(of=HourlyOut, hours_back=3)
    start, stop = rng.window()
    now = dt.datetime.now(UTC)
    assert stop.tzinfo is not None and stop <= now and now - stop < dt.timedelta(hours=1)
    assert stop - start == dt.timedelta(hours=3)


class DailyFile(dag.Task):
    day = dag.DateParameter()
    folder = dag.Parameter()

    def output(self):
        return dag.LocalTarget(Path(self.folder) / f"{self.day}.txt")

    def run(self) -> None:
        with self.output().open("w") as f:
            f.write("d")


def test_range_daily_on_local_files(tmp_path: Path) -> None:
    (tmp_path / "2026-01-02.txt").write_text("d")
    rng = RangeDaily(
        of=DailyFile, of_params={"folder": str(tmp_path)}, start=dt.date(2026, 1, 1), stop=dt.date(2026, 1, 5)
    )
    assert rng.gaps() == [dt.date(2026, 1, 4), dt.date(2026, 1, 3), dt.date(2026, 1, 1)]
    assert dag.build([rng]).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"2026-01-0{i}.txt" for i in range(1, 5)]


class ClosedHour(dag.ExternalTask):
    hour = dag.DateHourParameter()

    def output(self):
        return dag.HourClosedTarget("play", self.hour)


def test_gaps_of_event_delivery_hours(platform) -> None:
    platform.blobs.ensure_bucket("backbeat-events")
    for h in (1, 3):
        platform.blobs.put("backbeat-events", f"final/play/dt=2026-01-01/hour={h:02d}/_SUCCESS", b"{}")
        platform.blobs.put("backbeat-events", f"final/play/dt=2026-01-01/hour={h:02d}/part.avro", b"x")
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    gaps = missing_datetimes(ClosedHour, start, start + dt.timedelta(hours=4))
    assert [g.hour for g in gaps] == [2, 0]
