"""One settings object, read once from the environment (the Cloud Functions convention).

Variables:
    BACKBEAT_BACKEND        ``local`` (default) or ``gcp``
    BACKBEAT_DATA_DIR       root of the local backend (default ``./.backbeat``); bucket ``B``'s object ``O``
                            lives at ``$BACKBEAT_DATA_DIR/buckets/B/O``; documents and bus state beside it
    BACKBEAT_PROJECT        Google Cloud project id (default ``backbeat-local``)
    BACKBEAT_EVENTS_BUCKET  bucket of event delivery (default ``backbeat-events``)
    PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST
                            switch the ``gcp`` adapters to the emulators
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from backbeat.errors import ConfigError

BACKENDS = ("local", "gcp")


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    data_dir: Path = field(default_factory=lambda: Path(".backbeat").resolve())
    project: str = "backbeat-local"
    events_bucket: str = "backbeat-events"
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None
    storage_emulator_host: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        backend = env.get("BACKBEAT_BACKEND", "local").strip().lower() or "local"
        if backend not in BACKENDS:
            raise ConfigError(f"BACKBEAT_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
        return cls(
            backend=backend,
            data_dir=Path(env.get("BACKBEAT_DATA_DIR") or ".backbeat").resolve(),
            project=env.get("BACKBEAT_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or "backbeat-local",
            events_bucket=env.get("BACKBEAT_EVENTS_BUCKET") or "backbeat-events",
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST") or None,
            firestore_emulator_host=env.get("FIRESTORE_EMULATOR_HOST") or None,
            storage_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests build their own with ``Settings.from_env(env)``."""
    return Settings.from_env()
