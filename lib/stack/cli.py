"""`backbeat up|down|status|package` (being written)."""

from __future__ import annotations

from typing import Any


def register(app: Any) -> None:
    """Add the stack's top-level commands to the root app."""
