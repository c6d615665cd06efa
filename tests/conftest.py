"""Shared test configuration: the emulator fixtures live in ``tests/emulators.py`` (a plugin)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # so `tests.emulators` imports however pytest was started
    sys.path.insert(0, str(_ROOT))

pytest_plugins = ["tests.emulators"]
