"""``backbeat demo`` stage "dag": the example recommendation pipeline over the closed play hours.

Uses the hours event delivery closed in the earlier stage (``ctx.shared["delivery"]``); without
them (stage run alone) it writes a synthetic set of closed hours in the same layout. It builds the
pipeline with two worker threads, builds it again to show that nothing reruns, and asks the
``recommend`` function's service for one user's recommendations.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_HOUR = re.compile(r"^final/play/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/_SUCCESS$")


def closed_play_hours(blobs: Any, bucket: str) -> list[dt.datetime]:
    from backbeat.cloud.ports import NotFound

    hours = []
    try:
        for info in blobs.list(bucket, "final/play/"):
            m = _HOUR.match(info.name)
            if m:
                hours.append(dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:00+00:00"))
    except NotFound:
        return []
    return sorted(hours)


def newest_contiguous(hours: list[dt.datetime]) -> tuple[dt.datetime, dt.datetime] | None:
    """The newest run of consecutive hours, as ``[start, stop)``."""
    if not hours:
        return None
    stop = hours[-1] + dt.timedelta(hours=1)
    start = hours[-1]
    present = set(hours)
    while start - dt.timedelta(hours=1) in present:
        start -= dt.timedelta(hours=1)
    return start, stop


def run(ctx: Any) -> dict[str, Any]:
    import backbeat.dag as dag
    from backbeat.dag.examples import recommend as R
    from backbeat.dag.examples.serving import RecommendationService
    from backbeat.dag.examples.synth import write_synthetic_plays
    from backbeat.dag.viz import Graph

    platform, console = ctx.platform, ctx.console
    shared = ctx.shared.get("delivery") or {}
    bucket = shared.get("bucket") or ctx.settings.events_bucket
    window = newest_contiguous(closed_play_hours(platform.blobs, bucket))
    source = "event delivery"
    if window is None:
        source = "synthetic"
        start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=4)
        write_synthetic_plays(platform.blobs, bucket, start, hours=3)
        window = (start, start + dt.timedelta(hours=3))
    start, stop = window
    console.print(f"plays from {source}: closed hours {start:%Y-%m-%dT%H} .. {stop:%Y-%m-%dT%H} (exclusive)")
    root = R.Publish(start=start, stop=stop, events_bucket=bucket)
    graph = Graph.from_tasks([root])
    html = ctx.workdir / "dag-graph.html"
    graph.write(str(html))
    first = dag.build([root], workers=2, platform=platform, settings=ctx.settings)
    if not first.ok:
        console.print(first.to_json(), markup=False)
        raise dag.DagError(f"pipeline failed: {first.failed or first.missing}")
    second = dag.build([root], platform=platform, settings=ctx.settings)
    if not second.ok or second.counts.get("done"):
        raise dag.DagError(f"rerun should do nothing, did {second.counts}")
    svc = RecommendationService(platform.blobs, R.RECS_BUCKET, str(ctx.workdir / "recommend-cache"))
    reader_users = [k.decode() for k, _ in svc._current()["reader"].items()]
    user = sorted(reader_users)[0]
    recs = svc.for_user(user, 5)
    console.print(f"recommendations for {user}: {[t['track_id'] for t in recs['tracks']]}")
    console.print(f"graph: {html}")
    return {
        "source": source,
        "hours": len(R.hours_between(start, stop)),
        "tasks_run": first.counts.get("done", 0),
        "rerun_done": second.counts.get("done", 0),
        "users": len(reader_users),
        "version": recs["version"],
        "seconds": round(first.seconds, 2),
    }
