"""Settings.from_env: the one place the environment is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbeat.errors import BackbeatError, ConfigError
from backbeat.settings import Settings


def test_defaults_are_the_local_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.backend == "local"
    assert s.data_dir == (tmp_path / ".backbeat").resolve()
    assert s.project == "backbeat-local"
    assert s.events_bucket == "backbeat-events"
    assert (s.pubsub_emulator_host, s.firestore_emulator_host, s.storage_emulator_host) == (None, None, None)


def test_every_variable_is_read(tmp_path: Path) -> None:
    s = Settings.from_env({
        "BACKBEAT_BACKEND": " GCP ",
        "BACKBEAT_DATA_DIR": str(tmp_path / "data"),
        "BACKBEAT_PROJECT": "proj-1",
        "BACKBEAT_EVENTS_BUCKET": "ev-bucket",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:2",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:3",
    })  # fmt: skip
    assert s.backend == "gcp"
    assert s.data_dir == (tmp_path / "data").resolve() and s.data_dir.is_absolute()
    assert (s.project, s.events_bucket) == ("proj-1", "ev-bucket")
    assert s.pubsub_emulator_host == "127.0.0.1:1"
    assert s.firestore_emulator_host == "127.0.0.1:2"
    assert s.storage_emulator_host == "http://127.0.0.1:3"


def test_google_cloud_project_is_the_fallback_project() -> None:
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "from-gcf"}).project == "from-gcf"
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "x", "BACKBEAT_PROJECT": "wins"}).project == "wins"


def test_empty_values_mean_unset() -> None:
    s = Settings.from_env({"BACKBEAT_BACKEND": "", "PUBSUB_EMULATOR_HOST": "", "BACKBEAT_PROJECT": ""})
    assert s.backend == "local" and s.pubsub_emulator_host is None and s.project == "backbeat-local"


@pytest.mark.parametrize("bad", ["aws", "gcp2", "loc al"])
def test_bad_backend_is_a_config_error_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError, match="BACKBEAT_BACKEND") as info:
        Settings.from_env({"BACKBEAT_BACKEND": bad})
    assert bad.strip().lower() in str(info.value)
    assert isinstance(info.value, BackbeatError)
