"""Fixtures of the dag tests: a real local platform (directory blobs, SQLite documents)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backbeat.dag import context


@pytest.fixture()
def platform(tmp_path: Path) -> Iterator[Any]:
    from backbeat.cloud import connect
    from backbeat.settings import Settings

    settings = Settings(backend="local", data_dir=tmp_path / "data")
    plat = connect(settings)
    context.use_platform(plat, settings)
    try:
        yield plat
    finally:
        plat.close()
        context.use_platform(None)
        context._settings = None
        context._clients.clear()


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    yield
    context._clients.clear()
