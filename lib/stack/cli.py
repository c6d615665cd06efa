"""``backbeat up | down | status | package``: the local emulation stack and the deployable zips.

Heavy imports stay inside the commands so ``backbeat --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

MANIFEST_HELP = "Path of the manifest (default: $BACKBEAT_MANIFEST or functions/manifest.yaml)."
DATA_DIR_HELP = "Where the stack keeps its state file and logs (default: $BACKBEAT_DATA_DIR or .backbeat)."


def _data_dir(data_dir: Path | None) -> Path:
    from backbeat.settings import Settings

    return (data_dir or Settings.from_env().data_dir).resolve()


def _parse_ports(ports: list[str]) -> dict[str, int]:
    from backbeat.stack.runner import StackError

    out: dict[str, int] = {}
    for item in ports:
        name, _, value = item.partition("=")
        if name not in ("pubsub", "firestore", "gcs", "relay") or not value.isdigit():
            raise StackError(f"--port {item!r}: expected pubsub=N, firestore=N, gcs=N or relay=N")
        out[name] = int(value)
    return out


def _print_state(state: Any, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from backbeat.stack.runner import piece_healthy, stack_dir

    console = Console()
    console.width = max(console.width, 120)  # piped output: keep one row per piece
    table = Table(title=title)
    for col in ("piece", "pid", "port", "url", "healthy"):
        table.add_column(col, no_wrap=True)
    for p in state.pieces:
        ok = piece_healthy(p)
        table.add_row(p.name, str(p.pid), str(p.port), p.url, "[green]yes[/]" if ok else "[red]no[/]")
    console.print(table)
    console.print(f"logs: {stack_dir(Path(state.data_dir)) / 'logs'}")
    if state.event_types:
        console.print(f"event types: {', '.join(state.event_types)}")
    else:
        console.print(f"event types: none ({state.event_types_note or 'no schemas folder'})")
    if state.env:
        console.print("export these to talk to the stack:")
        for k, v in state.env.items():
            typer.echo(f"export {k}={v}")


def register(app: typer.Typer) -> None:
    """Add the stack's top-level commands to the root app."""

    @app.command()
    def up(
        manifest: Path | None = typer.Option(None, "--manifest", help=MANIFEST_HELP),
        foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops the stack."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
        port: list[str] = typer.Option(
            [], "--port", help="Fix a port: pubsub=N, firestore=N, gcs=N, relay=N."
        ),
    ) -> None:
        """Start the local stack (emulators, one functions-framework per function, wiring)."""
        from backbeat.settings import Settings
        from backbeat.stack import emulators
        from backbeat.stack.manifest import load_manifest
        from backbeat.stack.runner import (
            STACK_START_TIMEOUT_S,
            LocalStack,
            StackError,
            _tail,
            check_port_free,
            pid_alive,
            read_state,
            run_attached,
            stack_dir,
            state_path,
            stop_stack,
        )

        ddir = _data_dir(data_dir)
        ports = _parse_ports(port)
        m = load_manifest(manifest)
        m.check_sources()
        emulators._gcloud()  # a clear error now rather than from the detached supervisor
        emulators.fake_gcs_binary()
        for name, p in ports.items():
            check_port_free(p, name)
        existing = read_state(ddir)
        if existing is not None:
            if pid_alive(existing.supervisor_pid) and existing.status in ("starting", "ready"):
                raise StackError(
                    f"a stack is already running here (supervisor pid {existing.supervisor_pid}, "
                    f"state {state_path(ddir)}); run `backbeat down` first"
                )
            stop_stack(ddir)  # a stale record: make sure nothing of it survives
        project = Settings.from_env().project
        logs = stack_dir(ddir) / "logs"
        if logs.exists():  # logs and emulator data of the previous run of this data dir
            shutil.rmtree(logs)
        logs.mkdir(parents=True, exist_ok=True)

        if foreground:
            stack = LocalStack(m, ddir, project, ports)

            def ready(state: Any) -> None:
                _print_state(state, "backbeat stack (foreground; Ctrl-C stops it)")

            code = run_attached(stack, on_ready=ready)
            if code == 1:
                raise StackError(stack.state.error or "the stack failed to start")
            typer.echo("stack stopped")
            raise SystemExit(0 if code in (0, 130) else code)

        sup_log = logs / "supervisor.log"
        argv = [
            sys.executable,
            "-m",
            "backbeat.stack.runner",
            "--manifest",
            str(m.path),
            "--data-dir",
            str(ddir),
            "--project",
            project,
            "--ports",
            json.dumps(ports),
        ]
        with open(sup_log, "ab") as out:
            sup = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=dict(os.environ),
            )
        deadline = time.monotonic() + STACK_START_TIMEOUT_S
        state = None
        from rich.console import Console

        with Console(stderr=True).status("starting the local stack (emulators, functions)..."):
            while time.monotonic() < deadline:
                state = read_state(ddir)
                if (
                    state is not None
                    and state.supervisor_pid == sup.pid
                    and state.status in ("ready", "failed")
                ):
                    break
                if sup.poll() is not None:
                    state = read_state(ddir)
                    break
                time.sleep(0.2)
        if state is None or state.status != "ready" or sup.poll() is not None:
            error = state.error if state is not None and state.error else f"supervisor log:\n{_tail(sup_log)}"
            sup.poll()
            if sup.returncode is None:
                sup.terminate()
            stop_stack(ddir)
            if state is None or state.status not in ("ready", "failed"):
                error = f"the stack did not become ready within {STACK_START_TIMEOUT_S:.0f}s; {error}"
            raise StackError(error)
        _print_state(
            state, f"backbeat stack up (supervisor pid {state.supervisor_pid}; `backbeat down` stops it)"
        )

    @app.command()
    def down(data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)) -> None:
        """Stop the local stack: every process group, no listening port left behind."""
        from backbeat.stack.runner import stop_stack

        pieces = stop_stack(_data_dir(data_dir))
        if not pieces:
            typer.echo("no stack is running here")
            return
        typer.echo(f"stopped {len(pieces)} pieces: {', '.join(p.name for p in pieces)}")

    @app.command()
    def status(data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)) -> None:
        """Show each piece of the local stack: pid, port, healthy or not (exit 1 if any is not)."""
        from backbeat.stack.runner import pid_alive, piece_healthy, read_state

        state = read_state(_data_dir(data_dir))
        if state is None:
            typer.echo("no stack is running here (backbeat up starts one)")
            raise SystemExit(3)  # typer.Exit codes are lost under standalone_mode=False
        sup = "running" if pid_alive(state.supervisor_pid) else "NOT running"
        _print_state(state, f"backbeat stack: {state.status}, supervisor pid {state.supervisor_pid} {sup}")
        if state.error:
            typer.echo(f"error: {state.error}")
        if state.status != "ready" or not all(piece_healthy(p) for p in state.pieces):
            raise SystemExit(1)

    @app.command()
    def package(
        out: Path = typer.Option(Path("dist/functions"), "--out", help="Folder for the zips."),
        manifest: Path | None = typer.Option(None, "--manifest", help=MANIFEST_HELP),
        function: list[str] = typer.Option([], "--function", "-f", help="Only these functions (repeatable)."),
    ) -> None:
        """Build one deterministic deployable zip per function: main.py, requirements.txt, backbeat/."""
        from rich.console import Console
        from rich.progress import Progress

        from backbeat.stack.manifest import ManifestError, load_manifest
        from backbeat.stack.packaging import build_zip

        m = load_manifest(manifest)
        names = function or list(m.functions)
        unknown = [n for n in names if n not in m.functions]
        if unknown:
            raise ManifestError(
                f"{m.path}: functions.{unknown[0]}: no such function (have {', '.join(m.functions)})"
            )
        m.check_sources(names)
        results = []
        with Progress(transient=True, console=Console(stderr=True)) as progress:
            task = progress.add_task("packaging", total=len(names))
            for name in names:
                results.append(build_zip(m, name, out))
                progress.advance(task)
        for r in results:
            typer.echo(f"{r.path}  {r.size} bytes  {r.entries} files  sha256 {r.sha256}")
