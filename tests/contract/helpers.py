"""Helpers for the contract tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from backbeat.cloud.ports import Bus


def wait_for(cond: Callable[[], bool], timeout_s: float = 20.0, bus: Bus | None = None) -> bool:
    """Poll ``cond`` (draining ``bus`` first) until true or ``timeout_s``; returns the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if bus is not None:
            bus.drain(timeout_s=max(0.1, deadline - time.monotonic()))
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
