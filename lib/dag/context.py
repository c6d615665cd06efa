"""Where GCS targets, leases and run records find the platform when none is passed explicitly.

``build(..., platform=p)`` sets it for the run; ``use_platform(p)`` sets it for code outside a build.
Without either, the platform of the environment's settings is connected on first use.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_platform: Any = None
_settings: Any = None


def use_platform(platform: Any, settings: Any = None) -> None:
    """Make ``platform`` (a backbeat.cloud Platform, or anything with ``.blobs``) the default."""
    global _platform, _settings
    with _lock:
        _platform = platform
        if settings is not None:
            _settings = settings


def current_platform() -> Any:
    global _platform
    with _lock:
        if _platform is None:
            from backbeat.cloud import connect

            _platform = connect(current_settings())
        return _platform


def current_settings() -> Any:
    global _settings
    if _settings is None:
        from backbeat.settings import get_settings

        _settings = get_settings()
    return _settings


def current_blobs() -> Any:
    return current_platform().blobs


def after_fork() -> None:
    """In a forked worker: reconnect instead of sharing the parent's SQLite/HTTP connections (an
    open SQLite connection must not cross a fork). Uses the settings given with the platform, or
    for a local platform its data folder; in-memory test doubles are kept as they are."""
    global _platform
    backend = getattr(_platform, "backend", None)
    if _platform is None or backend not in ("local", "gcp"):
        return
    from backbeat.cloud import connect

    settings = _settings
    if settings is None and backend == "local":
        from pathlib import Path

        from backbeat.settings import Settings

        path = getattr(getattr(_platform, "documents", None), "path", None)
        if path is None:
            return
        settings = Settings(backend="local", data_dir=Path(path).parent)
    if settings is not None:
        _platform = connect(settings)


_clients: dict[str, Any] = {}


def use_client(kind: str, client: Any) -> None:
    """Register the client of a port the templates need: ``"dataproc"`` or ``"bigquery"``."""
    _clients[kind] = client


def current_client(kind: str) -> Any:
    from backbeat.dag.errors import DagError

    client = _clients.get(kind)
    if client is None:
        raise DagError(
            f"no {kind} client configured: call backbeat.dag.context.use_client({kind!r}, client) "
            f"or set the task's `{kind}` attribute"
        )
    return client


def documents_or_none() -> Any:
    """The documents port of an explicitly chosen platform, or None (never connects on its own)."""
    return getattr(_platform, "documents", None)
