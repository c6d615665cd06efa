"""``backbeat dag run/status/show``: exit codes, JSON summary, run records, graph files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backbeat.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    values = {
        "BACKBEAT_BACKEND": "local",
        "BACKBEAT_DATA_DIR": str(tmp_path / "data"),
        "CLI_TASKS_DIR": str(tmp_path),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)
    yield values
    from backbeat.dag import context

    context.use_platform(None)
    context._settings = None


def test_run_status_and_records(env, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["dag", "run", "tests.dag.cli_tasks:Hello", "--name", "ann", "--times=2", "--shout"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hello-ann-2.txt").read_text() == "HELLO ANN HELLO ANN"
    res = runner.invoke(app, ["dag", "status", "--json"])
    runs = json.loads(res.stdout)
    assert runs[0]["state"] == "ok" and runs[0]["roots"] == ["Hello(name=ann, times=2, shout=true, folder=)"]
    res = runner.invoke(app, ["dag", "status", "--run", runs[0]["run_id"], "--json"])
    (task,) = json.loads(res.stdout)
    assert task["state"] == "done" and task["attempts"] == 1


def test_failure_exits_non_zero_with_a_json_summary(env) -> None:
    res = CliRunner().invoke(app, ["dag", "run", "tests.dag.cli_tasks:Fails"])
    assert res.exit_code == 1
    summary = json.loads(res.stdout)
    assert summary["ok"] is False
    assert summary["failed"] == ["Fails()"]
    assert "the warehouse is on fire" in summary["errors"]["Fails()"]
    assert summary["counts"] == {"done": 1, "failed": 1}


def test_dry_run_lists_what_would_run(env, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["dag", "run", "tests.dag.cli_tasks:Fails", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["would_run"][-1] == "Fails()" and out["would_run"][0].startswith("Hello(name=dep")
    assert not list(tmp_path.glob("hello-*"))


def test_bad_parameter_is_one_clear_line(env) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "backbeat.cli",
            "dag",
            "run",
            "tests.dag.cli_tasks:Hello",
            "--name",
            "x",
            "--times",
            "many",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "parameter 'times' (int)" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "backbeat.cli", "dag", "run", "tests.dag.nope:Hello"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1 and "cannot import 'tests.dag.nope'" in proc.stderr


def test_show_writes_dot_mermaid_html(env, tmp_path: Path) -> None:
    runner = CliRunner()
    for ext in ("dot", "mmd", "html"):
        out = tmp_path / f"g.{ext}"
        res = runner.invoke(app, ["dag", "show", "tests.dag.cli_tasks:Fails", "--out", str(out)])
        assert res.exit_code == 0, res.output
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and "n1 -> n0;" in dot and 'label="Fails()"' in dot
    mmd = (tmp_path / "g.mmd").read_text()
    assert mmd.startswith("flowchart LR") and "n1 --> n0" in mmd
    html = (tmp_path / "g.html").read_text()
    assert "<!doctype html>" in html and "Fails()" in html
    # colour by a run's records: Hello done, Fails failed
    res = runner.invoke(app, ["dag", "run", "tests.dag.cli_tasks:Fails"])
    assert res.exit_code == 1
    run_id = json.loads(res.stdout)["run_id"]
    res = runner.invoke(
        app, ["dag", "show", "tests.dag.cli_tasks:Fails", "--run", run_id, "--format", "mermaid"]
    )
    assert res.exit_code == 0, res.output
    assert '["Fails()"]:::failed' in res.stdout and ":::done" in res.stdout


def test_luigi_run_entry_point(env, tmp_path: Path) -> None:
    import backbeat.dag as dag

    assert (
        dag.run(["tests.dag.cli_tasks:Hello", "--name", "run", "--local-scheduler", "--workers", "2"]) is True
    )
    assert (tmp_path / "hello-run-1.txt").read_text() == "hello run"
    assert dag.run(["tests.dag.cli_tasks:Fails"]) is False
