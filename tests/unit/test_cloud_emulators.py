"""lib/stack/emulators.py: process groups, health checks and typed errors (fake-gcs-server is fast
enough to start here; the gcloud emulators are exercised by the contract suite's fixtures)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from backbeat.errors import BackbeatError
from backbeat.stack import emulators as em


def test_fake_gcs_starts_answers_and_stops_its_whole_group(tmp_path: Path) -> None:
    proc = em.start_fake_gcs(log_dir=tmp_path)
    try:
        assert proc.alive() and em.port_open(proc.port)
        assert proc.host == f"127.0.0.1:{proc.port}"
        assert proc.env == {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{proc.port}"}
        assert proc.pgid == os.getpgid(proc.pid) != os.getpgid(0)  # its own process group
        with urllib.request.urlopen(f"{proc.url}/storage/v1/b", timeout=5) as resp:
            assert resp.status == 200
        again = em.EmulatorProcess.from_dict(proc.to_dict())  # what `backbeat down` would rebuild
        assert again.pgid == proc.pgid and again.alive()
    finally:
        proc.stop()
    assert not proc.alive()
    assert not em.port_open(proc.port)
    proc.stop()  # idempotent


def test_a_busy_port_is_an_emulator_error_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(em.EmulatorError) as info:
            em.start_fake_gcs(port=port, log_dir=tmp_path, timeout_s=20)
    assert isinstance(info.value, BackbeatError)
    text = str(info.value)
    assert "fake-gcs" in text and str(port) in text
    assert "address already in use" in text.lower()  # the log tail says why


def test_missing_gcloud_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(em.EmulatorError, match="gcloud is not on PATH"):
        em.start_pubsub("p")
    with pytest.raises(em.EmulatorError, match="gcloud"):
        em.start_firestore("p")


def test_fake_gcs_events_need_a_pubsub_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    with pytest.raises(em.EmulatorError, match="pubsub_emulator_host"):
        em.start_fake_gcs(pubsub_project="p", pubsub_topic="t")
    with pytest.raises(em.EmulatorError, match="both"):
        em.start_fake_gcs(pubsub_topic="t")


def test_stop_group_kills_children_that_outlive_the_leader() -> None:
    # the leader forks a child and then waits; stopping must take both (like gcloud -> java)
    p = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE,
                         start_new_session=True, text=True)  # fmt: skip
    assert p.stdout is not None
    child = int(p.stdout.readline())
    os.kill(child, 0)
    start = time.monotonic()
    em.stop_group(p.pid, timeout_s=5, popen=p)
    assert time.monotonic() - start < 10
    with pytest.raises(ProcessLookupError):
        os.killpg(p.pid, 0)
    assert p.poll() is not None


@pytest.mark.emulators
def test_fake_gcs_publishes_object_events_into_the_pubsub_emulator(pubsub_emulator: em.EmulatorProcess,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """The wiring `backbeat up` relies on: an object write in a bucket becomes a Pub/Sub message."""
    from backbeat.cloud.gcp_blobs import GcsBlobs
    from backbeat.cloud.gcp_bus import PubSubBus
    from backbeat.cloud.ports import Message
    from backbeat.settings import Settings

    project = "backbeat-test"
    ps_settings = Settings(backend="gcp", project=project, pubsub_emulator_host=pubsub_emulator.host)
    bus = PubSubBus(ps_settings)
    bus.ensure_topic("gcs-events-unit")
    got: list[Message] = []
    bus.subscribe("gcs-events-unit", "gcs-events-unit-sub", got.append)
    gcs = em.start_fake_gcs(
        log_dir=tmp_path,
        pubsub_project=project,
        pubsub_topic="gcs-events-unit",
        event_bucket="landing",
        event_prefix="in/",
        pubsub_emulator_host=pubsub_emulator.host,
    )
    try:
        blobs = GcsBlobs(Settings(backend="gcp", project=project, storage_emulator_host=gcs.url))
        blobs.ensure_bucket("landing")
        blobs.put("landing", "other/skip.txt", b"not under the prefix")
        blobs.put("landing", "in/file.txt", b"hello")
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        bus.drain(timeout_s=2)
    finally:
        gcs.stop()
        bus.close()
    assert len(got) == 1, [m.attributes for m in got]
    attrs = got[0].attributes
    assert attrs["eventType"] == "OBJECT_FINALIZE"
    assert attrs["bucketId"] == "landing" and attrs["objectId"] == "in/file.txt"
