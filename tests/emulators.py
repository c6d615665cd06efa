"""Session fixtures that run the Google Cloud emulators for the tests (a pytest plugin, loaded by
``tests/conftest.py``).

Each emulator starts lazily, the first time a test asks for it, on a free 127.0.0.1 port, and is
stopped (its whole process group) at the end of the session. When an emulator cannot be run:
with ``CI`` set the test **fails**; without it the test is skipped only if the tool itself is
missing (gcloud, or the fake-gcs-server wheel) -- an emulator that is installed but does not
start is always a failure.

Fixtures: ``pubsub_emulator``, ``firestore_emulator``, ``fake_gcs`` (each an
:class:`~backbeat.stack.emulators.EmulatorProcess`), ``emulator_env`` (the three
``*_EMULATOR_HOST`` variables) and ``gcp_settings`` (a ``gcp`` :class:`~backbeat.settings.Settings`
pointing at all three).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backbeat.settings import Settings
from backbeat.stack.emulators import (
    EmulatorError,
    EmulatorProcess,
    fake_gcs_binary,
    start_fake_gcs,
    start_firestore,
    start_pubsub,
)

EMULATOR_PROJECT = "backbeat-test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(why: str) -> None:
    if _in_ci():
        pytest.fail(f"CI is set and {why}", pytrace=False)
    pytest.skip(why)


def _require_gcloud() -> None:
    if shutil.which("gcloud") is None:
        _unavailable("gcloud (with the Pub/Sub and Firestore emulators) is not installed")


class _Lazy:
    """Start an emulator once per session (thread-safe), remember a failure, stop it at the end."""

    def __init__(self, start: Callable[[], EmulatorProcess]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self.proc: EmulatorProcess | None = None
        self.error: EmulatorError | None = None

    def get(self) -> EmulatorProcess:
        with self._lock:
            if self.proc is None and self.error is None:
                try:
                    self.proc = self._start()
                except EmulatorError as exc:
                    self.error = exc
            if self.error is not None:
                pytest.fail(f"emulator failed to start: {self.error}", pytrace=False)
            assert self.proc is not None
            return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="session")
def emulator_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-logs")


@pytest.fixture(scope="session")
def _emulators(emulator_log_dir: Path) -> Iterator[dict[str, _Lazy]]:
    lazies = {
        "pubsub": _Lazy(lambda: start_pubsub(EMULATOR_PROJECT, log_dir=emulator_log_dir)),
        "firestore": _Lazy(lambda: start_firestore(EMULATOR_PROJECT, log_dir=emulator_log_dir)),
        "fake-gcs": _Lazy(lambda: start_fake_gcs(log_dir=emulator_log_dir)),
    }
    yield lazies
    for lazy in lazies.values():
        lazy.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(_emulators: dict[str, _Lazy]) -> EmulatorProcess:
    _require_gcloud()
    return _emulators["pubsub"].get()


@pytest.fixture(scope="session")
def firestore_emulator(_emulators: dict[str, _Lazy]) -> EmulatorProcess:
    _require_gcloud()
    return _emulators["firestore"].get()


@pytest.fixture(scope="session")
def fake_gcs(_emulators: dict[str, _Lazy]) -> EmulatorProcess:
    try:
        fake_gcs_binary()
    except EmulatorError as exc:
        _unavailable(str(exc))
    return _emulators["fake-gcs"].get()


@pytest.fixture(scope="session")
def emulator_env(
    pubsub_emulator: EmulatorProcess, firestore_emulator: EmulatorProcess, fake_gcs: EmulatorProcess
) -> dict[str, str]:
    """``PUBSUB_EMULATOR_HOST``, ``FIRESTORE_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST``."""
    return {**pubsub_emulator.env, **firestore_emulator.env, **fake_gcs.env}


def gcp_settings_for(**hosts: str | None) -> Settings:
    """A ``gcp`` Settings for the test project with the given emulator hosts."""
    return Settings(backend="gcp", project=EMULATOR_PROJECT, **hosts)


@pytest.fixture(scope="session")
def gcp_settings(emulator_env: dict[str, str]) -> Settings:
    return gcp_settings_for(
        pubsub_emulator_host=emulator_env["PUBSUB_EMULATOR_HOST"],
        firestore_emulator_host=emulator_env["FIRESTORE_EMULATOR_HOST"],
        storage_emulator_host=emulator_env["STORAGE_EMULATOR_HOST"],
    )
