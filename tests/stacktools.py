"""Helpers shared by the tests that run the `backbeat up` stack as a user would (CLI subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def require_emulators(purpose: str = "the local stack") -> None:
    """Skip locally, fail under CI, when the Google Cloud SDK emulators are missing."""
    missing = [tool for tool in ("gcloud", "java") if shutil.which(tool) is None]
    if missing:
        msg = f"{purpose} needs {', '.join(missing)} (Google Cloud SDK with the emulators, Java)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(msg)
        pytest.skip(msg)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``backbeat <args>`` in a subprocess from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "backbeat.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
