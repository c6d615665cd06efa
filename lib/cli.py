"""The ``backbeat`` command.

Each sub-system owns its own typer app in ``backbeat/<system>/cli.py``; this module only mounts
them, so adding a command never means editing a shared file. Sub-command modules keep heavy imports
inside their commands so that ``backbeat --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

from backbeat import __version__

# (command group, module, attribute, help)
SUB_APPS: list[tuple[str, str, str, str]] = [
    (
        "kv",
        "backbeat.kvstore.cli",
        "app",
        "Sparkey-compatible key/value stores: info, get, dump, build, verify.",
    ),
    ("ann", "backbeat.ann.cli", "app", "Annoy-compatible nearest-neighbour indexes: build, query, info."),
    ("dag", "backbeat.dag.cli", "app", "Luigi-style task graphs: run, status, show."),
    ("events", "backbeat.delivery.cli", "events_app", "Event types and the producer: types, publish."),
    ("hours", "backbeat.delivery.cli", "hours_app", "Hourly buckets: status, tick."),
]
# Top-level commands registered by a module's ``register(app)`` function.
REGISTRARS: list[tuple[str, str]] = [
    ("backbeat.stack.cli", "register"),  # up, down, status, package
    ("backbeat.demo", "register"),  # demo
]

app = typer.Typer(
    name="backbeat",
    help="Backbeat: event delivery, task graphs, key/value and nearest-neighbour stores for Google Cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backbeat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Backbeat's command line."""


def _mount() -> None:
    for name, module, attr, help_text in SUB_APPS:
        sub = getattr(importlib.import_module(module), attr)
        app.add_typer(sub, name=name, help=help_text)
    for module, attr in REGISTRARS:
        getattr(importlib.import_module(module), attr)(app)


_mount()


def main() -> None:
    """Entry point of the console script: typed Backbeat errors print one clear line, exit 1."""
    from backbeat.errors import BackbeatError

    try:
        # Without standalone mode click returns (rather than raises) a typer.Exit's code.
        code = app(standalone_mode=False)
    except BackbeatError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise SystemExit(1) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.secho("aborted", err=True)
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
