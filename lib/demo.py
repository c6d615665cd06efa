"""``backbeat demo``: the main job, every workflow stage on the embedded (local) backend.

Each system contributes one stage, a function ``run(ctx: DemoContext) -> dict`` in
``backbeat/<system>/demo.py`` that does real work on ``ctx.platform`` (a ``local`` platform rooted
in ``ctx.workdir``) and returns the figures worth showing. Stages run in order (the dag pipeline
reads what event delivery produced) and the command prints one summary table. It fails (exit 1)
when any stage fails, after running the rest.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (stage, module): in the order they run.
STAGES: list[tuple[str, str]] = [
    ("platform", "backbeat.cloud.demo"),
    ("kvstore", "backbeat.kvstore.demo"),
    ("ann", "backbeat.ann.demo"),
    ("delivery", "backbeat.delivery.demo"),
    ("dag", "backbeat.dag.demo"),
]


@dataclass
class DemoContext:
    """What a stage gets: the platform, a scratch folder, a console, and what earlier stages left."""

    platform: Any
    settings: Any
    workdir: Path
    console: Any
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    stage: str
    ok: bool
    seconds: float
    figures: dict[str, Any]
    error: str = ""


def run_demo(
    workdir: Path, stages: list[tuple[str, str]] | None = None, console: Any = None
) -> list[StageResult]:
    """Run every stage against a fresh local platform under ``workdir``; never raises for a stage."""
    from rich.console import Console

    from backbeat.cloud import connect
    from backbeat.settings import Settings

    console = console or Console()
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(backend="local", data_dir=workdir.resolve() / "data")
    platform = connect(settings)
    ctx = DemoContext(platform=platform, settings=settings, workdir=workdir.resolve(), console=console)
    results: list[StageResult] = []
    try:
        for name, module in stages or STAGES:
            console.rule(f"[bold]{name}")
            start = time.perf_counter()
            try:
                figures = importlib.import_module(module).run(ctx) or {}
                results.append(StageResult(name, True, time.perf_counter() - start, dict(figures)))
            except Exception as exc:  # a failed stage is reported, the others still run
                console.print(traceback.format_exc(), style="red", markup=False)
                results.append(
                    StageResult(name, False, time.perf_counter() - start, {}, f"{type(exc).__name__}: {exc}")
                )
    finally:
        platform.close()
    return results


def render(results: list[StageResult], console: Any) -> None:
    from rich.table import Table

    table = Table(title="backbeat demo")
    table.add_column("stage")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("figures")
    for r in results:
        figures = ", ".join(f"{k}={v}" for k, v in r.figures.items()) if r.ok else r.error
        table.add_row(r.stage, "[green]ok" if r.ok else "[red]FAILED", f"{r.seconds:.2f}", figures)
    console.print(table)


def register(app: Any) -> None:
    import typer

    @app.command("demo")
    def demo(
        workdir: Path = typer.Option(Path(".backbeat/demo"), help="Scratch folder (wiped first)."),
        stage: list[str] = typer.Option(None, help="Run only these stages (repeatable)."),
    ) -> None:
        """Run the main scenario end to end on the embedded backend and print a summary table."""
        import shutil

        from rich.console import Console

        console = Console()
        if workdir.exists():
            shutil.rmtree(workdir)
        chosen = [s for s in STAGES if not stage or s[0] in stage]
        unknown = set(stage or ()) - {s[0] for s in STAGES}
        if unknown:
            raise typer.BadParameter(
                f"unknown stage(s) {sorted(unknown)}; choose from {[s[0] for s in STAGES]}"
            )
        results = run_demo(workdir, chosen, console)
        render(results, console)
        if not all(r.ok for r in results):
            raise typer.Exit(1)
