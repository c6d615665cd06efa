"""`backbeat demo`, the main job: every stage runs for real on the local backend and succeeds."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from backbeat.demo import STAGES, run_demo


def test_demo_runs_every_stage(tmp_path: Path) -> None:
    console = Console(record=True, width=160)
    results = run_demo(tmp_path / "demo", console=console)
    assert [r.stage for r in results] == [name for name, _ in STAGES]
    failed = {r.stage: r.error for r in results if not r.ok}
    assert not failed, failed
    for r in results:
        assert r.figures, f"stage {r.stage} reported no figures"
    # the data the stages wrote is really there
    assert (tmp_path / "demo" / "data" / "buckets").is_dir()
