"""The example pipeline end to end on the local platform, and the ``recommend`` HTTP function
served by a real functions-framework process."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import backbeat.dag as dag
from backbeat.dag import context
from backbeat.dag.examples import recommend as R
from backbeat.dag.examples.synth import genre_of, write_synthetic_plays

START = dt.datetime(2026, 1, 1, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from backbeat.cloud import connect
    from backbeat.settings import Settings

    data = tmp_path_factory.mktemp("pipeline") / "data"
    settings = Settings(backend="local", data_dir=data)
    platform = connect(settings)
    info = write_synthetic_plays(
        platform.blobs, settings.events_bucket, START, hours=3, users=120, plays_per_hour=900
    )
    root = R.Publish(start=START, stop=START + dt.timedelta(hours=3))
    try:  # two worker threads each driving multi-threaded BLAS thrash a small, busy machine
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed is at stake
        summary = dag.build([root], workers=2, platform=platform, settings=settings)
    else:
        with threadpool_limits(1):
            summary = dag.build([root], workers=2, platform=platform, settings=settings)
    yield {
        "platform": platform,
        "settings": settings,
        "info": info,
        "root": root,
        "summary": summary,
        "data": data,
    }
    platform.close()
    context.use_platform(None)
    context._settings = None


def test_pipeline_builds_and_rerun_skips(built) -> None:
    summary = built["summary"]
    assert summary.ok, summary.to_json()
    assert summary.counts == {"done": 8, "complete": 3}  # 3 closed hours are external, already there
    again = dag.build([built["root"]], platform=built["platform"], settings=built["settings"])
    assert again.ok and again.counts == {"complete": 1}


def test_published_files(built, tmp_path: Path) -> None:
    blobs = built["platform"].blobs
    pointer = json.loads(blobs.get(R.RECS_BUCKET, "recommend/LATEST"))
    manifest = json.loads(blobs.get(R.RECS_BUCKET, pointer["manifest"]))
    assert manifest["version"] == "20260101T00-20260101T03-d16" == pointer["version"]
    assert manifest["users"] == 120
    # every folder's _SUCCESS names its parts with their real sizes
    for folder in ("index", "users"):
        prefix = f"recommend/{manifest['version']}/{folder}/"
        flag = json.loads(blobs.get(R.RECS_BUCKET, prefix + "_SUCCESS"))
        for part, size in flag["parts"].items():
            assert blobs.stat(R.RECS_BUCKET, prefix + part).size == size
    # the ann file opens in annoy itself
    from annoy import AnnoyIndex

    ann_path = tmp_path / "items.ann"
    blobs.download_to(R.RECS_BUCKET, manifest["files"]["ann"], ann_path)
    index = AnnoyIndex(manifest["dim"], "angular")
    index.load(str(ann_path))
    assert (
        index.get_n_items()
        == manifest["items"]
        == len(json.loads(blobs.get(R.RECS_BUCKET, manifest["files"]["items"])))
    )


def test_recommendations_follow_each_users_taste(built, tmp_path: Path) -> None:
    from backbeat.dag.examples.serving import RecommendationService

    svc = RecommendationService(built["platform"].blobs, R.RECS_BUCKET, str(tmp_path / "cache"))
    info = built["info"]
    hits = total = 0
    for user, genres in info["tastes"].items():
        try:
            recs = svc.for_user(user, 5)["tracks"]
        except dag.DagError:
            continue  # a user with no plays in the window
        assert len(recs) == 5
        total += len(recs)
        hits += sum(genre_of(r["track_id"], info["tracks_per_genre"]) in genres for r in recs)
    assert total >= 5 * 100
    assert hits / total > 0.8, f"only {hits}/{total} recommendations in the users' genres"


def test_window_with_an_open_hour_waits_and_publishes_nothing(built) -> None:
    platform = built["platform"]
    root = R.Publish(start=START, stop=START + dt.timedelta(hours=4))  # hour 3 is not closed
    summary = dag.build([root], platform=platform, settings=built["settings"])
    assert not summary.ok
    assert summary.missing == [R.PlayHourClosed(START + dt.timedelta(hours=3)).task_id]
    assert not root.output().exists()
    assert json.loads(platform.blobs.get(R.RECS_BUCKET, "recommend/LATEST"))["version"].endswith("T03-d16")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_recommend_function_over_http(built, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "BACKBEAT_BACKEND": "local",
        "BACKBEAT_DATA_DIR": str(built["data"]),
        "BACKBEAT_RECS_BUCKET": R.RECS_BUCKET,
        "BACKBEAT_RECS_CACHE": str(tmp_path / "cache"),
        "OPENBLAS_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        "handle",
        "--source",
        str(ROOT / "functions" / "recommend" / "main.py"),
        "--signature-type",
        "http",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(base + "?user_id=user-0001&n=3")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.poll() is not None else ""
                    raise AssertionError(f"functions-framework did not start: {out[-2000:]}") from None
                time.sleep(0.2)
        assert status == 200, body
        assert body["version"] == "20260101T00-20260101T03-d16" and len(body["tracks"]) == 3
        genres = built["info"]["tastes"]["user-0001"]
        assert sum(genre_of(t["track_id"], 30) in genres for t in body["tracks"]) >= 2
        status, body = _get(base + "?track_id=track-00001&n=4")
        assert status == 200 and len(body["similar"]) == 4
        assert all(t["track_id"] != "track-00001" for t in body["similar"])
        assert _get(base + "?user_id=nobody")[0] == 404
        assert _get(base + "?n=3")[0] == 400
        assert _get(base + "?user_id=user-0001&n=many")[0] == 400
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
