"""`backbeat events ...` and `backbeat hours ...` as a user runs them (subprocesses, local backend)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import fastavro

from backbeat.delivery.registry import default_registry

REPO = Path(__file__).resolve().parents[2]


def cli(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BACKBEAT_") and not k.endswith("_EMULATOR_HOST")
    }
    full.update({"BACKBEAT_DATA_DIR": str(data_dir), "BACKBEAT_GRACE_S": "60", **env})
    return subprocess.run(
        [sys.executable, "-m", "backbeat.cli", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_events_types_lists_the_registry_one_per_line(tmp_path):
    res = cli(["events", "types"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == default_registry().types()


def test_publish_ledger_tick_status_round_trip(tmp_path):
    data = tmp_path / "data"
    ledger = tmp_path / "ledger.txt"
    res = cli(
        [
            "events",
            "publish",
            "--type",
            "play",
            "--count",
            "2500",
            "--seed",
            "4",
            "--duplicate-rate",
            "0.5",
            "--late-rate",
            "0.1",
            "--ledger",
            str(ledger),
            "--received-at",
            "2026-05-01T10:20:00Z",
            "--spread-s",
            "600",
            "--batch-size",
            "500",
        ],
        data,
    )
    assert res.returncode == 0, res.stderr
    acked = ledger.read_text().splitlines()
    assert len(acked) == len(set(acked)) == 2500
    status = cli(["hours", "status", "--json"], data)
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    assert {(r["hour"], r["state"]) for r in rows} == {("2026-05-01T09", "OPEN"), ("2026-05-01T10", "OPEN")}
    assert sum(r["rows"] for r in rows) > 2500  # duplicates were republished
    tick = cli(["hours", "tick", "--now", "2026-05-01T10:59:00Z"], data)
    assert tick.returncode == 0, tick.stderr
    assert "closed play 2026-05-01T09" in tick.stdout and "waiting play 2026-05-01T10" in tick.stdout
    tick = cli(["hours", "tick", "--now", "2026-05-01T11:01:30Z"], data)
    assert "closed play 2026-05-01T10" in tick.stdout and "deduped" in tick.stdout
    final: list[str] = []
    bucket = data / "buckets" / "backbeat-events"
    for success in bucket.glob("final/play/dt=*/hour=*/_SUCCESS"):
        s = json.loads(success.read_text())
        for part in s["parts"]:
            final += [r["event_id"] for r in fastavro.reader(io.BytesIO((bucket / part).read_bytes()))]
    assert sorted(final) == sorted(acked)  # the outside check: every acknowledged id exactly once
    status = cli(["hours", "status"], data)
    assert status.stdout.count("CLOSED") == 2
    again = cli(["hours", "dedupe", "--type", "play", "--hour", "2026-05-01T10"], data)
    assert "(already done)" in again.stdout and "export=duplicate" in again.stdout


def test_bad_input_is_one_clear_line(tmp_path):
    res = cli(["events", "publish", "--type", "nope", "--count", "3"], tmp_path)
    assert res.returncode == 1 and "unknown event type 'nope'" in res.stderr and "Traceback" not in res.stderr
    res = cli(["hours", "tick", "--now", "yesterday"], tmp_path)
    assert res.returncode == 1 and "not an ISO-8601 time: 'yesterday'" in res.stderr
    res = cli(["hours", "status"], tmp_path, BACKBEAT_GRACE_S="soon")
    assert res.returncode == 1 and "BACKBEAT_GRACE_S='soon' is not a number" in res.stderr
