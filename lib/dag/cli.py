"""``backbeat dag``: run a task graph, show it, and read the run records.

    backbeat dag run my.module:MyTask --date 2026-01-01 --workers 4
    backbeat dag run my.module:MyTask --date 2026-01-01 --dry-run
    backbeat dag show my.module:MyTask --date 2026-01-01 --out graph.html
    backbeat dag status [--run RUN_ID]

Task parameters follow the command as ``--name value`` (``--name=value``; dashes or underscores;
``--flag``/``--no-flag`` for booleans). ``run`` exits 0 only when every task is complete; on any
failure it prints a JSON summary to stdout and exits 1.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import typer

from backbeat.dag.errors import ModuleTaskError, ParameterError

app = typer.Typer(no_args_is_help=True, help="Luigi-style task graphs: run, status, show.")
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def load_task_class(spec: str) -> type:
    """``package.module:TaskClass`` (or ``package.module.TaskClass``) -> the class."""
    from backbeat.dag.task import Task

    if ":" in spec:
        module_name, _, name = spec.partition(":")
    else:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        raise ModuleTaskError(f"{spec!r}: expected module:TaskClass")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModuleTaskError(f"{spec!r}: cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ModuleTaskError(f"{spec!r}: {module_name} has no task class {name!r}")
    return cls


def parse_task_args(cls: type, args: list[str]) -> Any:
    """Build the task from ``--name value`` pairs, parsing each with its parameter's type."""
    from backbeat.dag.parameters import BoolParameter

    index = cls._param_index
    texts: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ParameterError(f"{cls.get_task_family()}: unexpected argument {arg!r} (use --name value)")
        key, eq, value = arg[2:].partition("=")
        name = key.replace("-", "_")
        negated = False
        if name not in index and name.startswith("no_") and isinstance(index.get(name[3:]), BoolParameter):
            name, negated = name[3:], True
        param = index.get(name)
        if param is None:
            known = ", ".join("--" + n.replace("_", "-") for n in index) or "none"
            raise ParameterError(f"{cls.get_task_family()}: unknown parameter --{key} (known: {known})")
        if eq:
            texts[name] = value
        elif isinstance(param, BoolParameter):
            texts[name] = "false" if negated else "true"
        else:
            if i + 1 >= len(args):
                raise ParameterError(f"{cls.get_task_family()}: --{key} needs a value")
            i += 1
            texts[name] = args[i]
        i += 1
    return cls.from_str_params(texts)


def _platform() -> tuple[Any, Any]:
    from backbeat.cloud import connect
    from backbeat.settings import Settings

    settings = Settings.from_env()
    return connect(settings), settings


def _parse_resources(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        name, eq, value = item.partition("=")
        if not eq or not value.strip().isdigit():
            raise ParameterError(f"--resource {item!r}: expected name=count")
        out[name.strip()] = int(value)
    return out


@app.command("run", context_settings=_EXTRA)
def run_cmd(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="module:TaskClass"),
    workers: int = typer.Option(1, "--workers", "-w", help="Parallel workers."),
    executor: str = typer.Option("thread", "--executor", help="thread or process."),
    resource: list[str] = typer.Option(None, "--resource", help="Resource cap name=count (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would run; run nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary even on success."),
    leases: bool = typer.Option(
        True, "--leases/--no-leases", help="Lease each task id in the documents port."
    ),
) -> None:
    """Run a task and everything it needs."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backbeat.dag.scheduler import build

    cls = load_task_class(task)
    root = parse_task_args(cls, list(ctx.args))
    platform, settings = _platform()
    console = Console(stderr=True)
    try:
        with Progress(
            TextColumn("[bold]dag"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=dry_run,
        ) as bar:
            job = bar.add_task("tasks", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(job, completed=done, total=total)

            summary = build(
                [root],
                workers=workers,
                executor=executor,
                resources=_parse_resources(resource),
                platform=platform,
                settings=settings,
                leases=leases,
                dry_run=dry_run,
                progress=progress,
            )
    finally:
        platform.close()
    if dry_run:
        typer.echo(
            json.dumps({"would_run": summary.would_run, "counts": summary.counts, "ok": summary.ok}, indent=2)
        )
        raise typer.Exit(0 if summary.ok else 1)
    if summary.ok and not as_json:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.counts.items()))
        console.print(
            f"[green]ok[/green] {root.task_id}: {counts} in {summary.seconds:.2f}s (run {summary.run_id})"
        )
        return
    typer.echo(summary.to_json())
    if not summary.ok:
        raise typer.Exit(1)


def run_argv(argv: list[str] | None = None) -> bool:
    """``luigi.run`` compatible: ``[module:]Task --param value ... [--workers N]`` -> success."""
    from backbeat.dag.scheduler import build
    from backbeat.dag.task import Register

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise ModuleTaskError("no task given")
    spec, rest = argv[0], argv[1:]
    workers = 1
    if "--workers" in rest:
        k = rest.index("--workers")
        workers = int(rest[k + 1])
        del rest[k : k + 2]
    rest = [a for a in rest if a != "--local-scheduler"]
    cls = load_task_class(spec) if (":" in spec or "." in spec) else Register.get_task_cls(spec)
    return build([parse_task_args(cls, rest)], workers=workers).ok


@app.command("show", context_settings=_EXTRA)
def show_cmd(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="module:TaskClass"),
    out: str = typer.Option(
        None, "--out", "-o", help="File to write (.dot, .mmd, .html); stdout if omitted."
    ),
    fmt: str = typer.Option(None, "--format", help="dot, mermaid or html (default: from --out, else dot)."),
    run: str = typer.Option(None, "--run", help="Colour tasks by this run's records (done, failed, ...)."),
) -> None:
    """Write the task graph with each task's state (complete, pending, missing, or a run's)."""
    from backbeat.dag.context import use_platform
    from backbeat.dag.viz import Graph

    cls = load_task_class(task)
    root = parse_task_args(cls, list(ctx.args))
    platform, settings = _platform()
    try:
        use_platform(platform, settings)
        states = None
        if run:
            from backbeat.dag.records import run_tasks

            states = {r["task_id"]: r["state"] for r in run_tasks(platform.documents, run)}
            if not states:
                raise ModuleTaskError(f"--run {run}: no task records for that run id")
        graph = Graph.from_tasks([root], states)
        if out:
            graph.write(out, fmt)
            typer.echo(f"wrote {out} ({len(graph.ids)} tasks, {len(graph.edges)} edges)", err=True)
        else:
            fmt = fmt or "dot"
            typer.echo({"dot": graph.to_dot, "mermaid": graph.to_mermaid, "html": graph.to_html}[fmt]())
    finally:
        platform.close()


@app.command("status")
def status_cmd(
    run: str = typer.Option(None, "--run", help="Show the tasks of this run id."),
    limit: int = typer.Option(10, "--limit", help="How many recent runs."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Recent runs (from the documents port), or the task records of one run."""
    from rich.console import Console
    from rich.table import Table

    from backbeat.dag.records import recent_runs, run_tasks

    platform, _ = _platform()
    try:
        if run:
            rows = sorted(
                run_tasks(platform.documents, run),
                key=lambda r: (r.get("state") != "failed", r.get("task_id", "")),
            )
            if as_json:
                typer.echo(json.dumps(rows, indent=2, default=str))
                return
            table = Table(title=f"run {run}")
            for col in ("task", "state", "attempts", "seconds", "error"):
                table.add_column(col)
            for r in rows:
                table.add_row(
                    r.get("task_id", ""),
                    r.get("state", ""),
                    str(r.get("attempts", "")),
                    f"{r.get('seconds') or 0:.2f}",
                    (r.get("error") or "")[:120],
                )
            Console().print(table)
            return
        runs = recent_runs(platform.documents, limit)
        if as_json:
            typer.echo(json.dumps(runs, indent=2, default=str))
            return
        table = Table(title="recent dag runs")
        for col in ("run", "state", "roots", "seconds", "counts"):
            table.add_column(col)
        for r in runs:
            counts = ", ".join(f"{k}={v}" for k, v in sorted((r.get("counts") or {}).items()))
            table.add_row(
                r.get("run_id", ""),
                r.get("state", ""),
                ", ".join(r.get("roots", [])[:3]),
                f"{r.get('seconds') or 0:.2f}",
                counts,
            )
        Console().print(table)
    finally:
        platform.close()
