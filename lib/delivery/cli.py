"""`backbeat events` and `backbeat hours` commands (being written)."""

from __future__ import annotations

import typer

events_app = typer.Typer(no_args_is_help=True)
hours_app = typer.Typer(no_args_is_help=True)
