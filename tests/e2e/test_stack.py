"""`backbeat up` / `status` / `down` for real: emulators, functions-framework, push, notifications.

The stack is started with the real CLI (a subprocess) from the test manifest
(``tests/e2e/fixtures/manifest.yaml``), whose functions append every CloudEvent they receive to
``$RECORDER_DIR/<function>.jsonl``. Messages are published with google-cloud-pubsub and objects
written with google-cloud-storage, as a producer would. With ``CI`` set, missing emulators fail.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stacktools import require_emulators, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.emulators, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MANIFEST = FIXTURES / "manifest.yaml"
BACKBEAT = [sys.executable, "-m", "backbeat.cli"]
PROJECT = "backbeat-e2e"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def records(folder: Path, function: str) -> list[dict[str, Any]]:
    path = folder / f"{function}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Stack:
    def __init__(
        self, data_dir: Path, record_dir: Path, env: dict[str, str], up: subprocess.CompletedProcess[str]
    ):
        self.data_dir = data_dir
        self.record_dir = record_dir
        self.env = env
        self.up = up
        self.state = json.loads((data_dir / "stack" / "state.json").read_text())

    def piece(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state["pieces"] if p["name"] == name)

    def client_env(self) -> dict[str, str]:
        return self.state["env"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_emulators()
    base = tmp_path_factory.mktemp("stack")
    data_dir, record_dir = base / "data", base / "records"
    env = {**os.environ, "RECORDER_DIR": str(record_dir), "BACKBEAT_PROJECT": PROJECT}
    env.pop("BACKBEAT_MANIFEST", None)
    up = run_cli(["up", "--manifest", str(MANIFEST), "--data-dir", str(data_dir)], env)
    assert up.returncode == 0, f"backbeat up failed:\n{up.stdout}\n{up.stderr}"
    st = Stack(data_dir, record_dir, env, up)
    try:
        yield st
    finally:
        run_cli(["down", "--data-dir", str(data_dir)], env, timeout=120)


@pytest.fixture()
def client_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in stack.client_env().items():
        monkeypatch.setenv(k, v)
    return stack.client_env()


def test_up_prints_every_piece_and_the_env_to_export(stack: Stack) -> None:
    out = stack.up.stdout
    for name in (
        "pubsub emulator",
        "firestore emulator",
        "fake-gcs-server",
        "function recorder",
        "function failer",
    ):
        assert name in out
    for var in (
        "PUBSUB_EMULATOR_HOST",
        "FIRESTORE_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "BACKBEAT_BACKEND",
    ):
        assert f"export {var}=" in out
    assert "export BACKBEAT_TEST_DATA_BUCKET=backbeat-e2e-data" in out
    status = run_cli(["status", "--data-dir", str(stack.data_dir)], stack.env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" yes ") >= len(stack.state["pieces"])


def test_published_message_arrives_as_pubsub_cloudevent(stack: Stack, client_env: dict[str, str]) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    message_id = publisher.publish(
        publisher.topic_path(PROJECT, "e2e-records"), b"hello", origin="test"
    ).result(30)
    got = wait_for(
        lambda: [r for r in records(stack.record_dir, "recorder") if r["id"] == message_id],
        30,
        "the recorder",
    )
    event = got[0]
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/e2e-records"
    msg = event["data"]["message"]
    assert base64.b64decode(msg["data"]) == b"hello"
    assert msg["attributes"] == {"origin": "test"}
    assert msg["messageId"] == message_id
    # the function ran with the manifest's env (placeholders resolved) and the gcp backend on emulators
    assert event["env"]["DATA_BUCKET"] == "backbeat-e2e-data"
    assert event["env"]["PROJECT_SEEN"] == PROJECT
    assert event["env"]["PUBSUB_EMULATOR_HOST"] == client_env["PUBSUB_EMULATOR_HOST"]
    assert event["backend"] == "gcp"


def test_object_write_arrives_as_storage_cloudevent_filtered_by_prefix(
    stack: Stack, client_env: dict[str, str]
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    bucket = client.bucket("backbeat-e2e-data")
    bucket.blob("other/ignored.txt").upload_from_string(b"not for gcs_recorder")
    blob = bucket.blob("incoming/a.txt")
    blob.upload_from_string(b"payload")
    got = wait_for(
        lambda: [
            r for r in records(stack.record_dir, "gcs-recorder") if r["subject"] == "objects/incoming/a.txt"
        ],
        30,
        "the gcs_recorder",
    )
    event = got[0]
    assert event["type"] == "google.cloud.storage.object.v1.finalized"
    assert event["source"] == "//storage.googleapis.com/projects/_/buckets/backbeat-e2e-data"
    assert event["data"]["name"] == "incoming/a.txt"
    assert event["data"]["bucket"] == "backbeat-e2e-data"
    assert int(event["data"]["size"]) == len(b"payload")
    relay = stack.piece("push relay + scheduler")

    def filtered() -> bool:
        with urllib.request.urlopen(relay["url"] + "/healthz", timeout=5) as resp:
            return json.loads(resp.read())["counts"].get("gcs_recorder:filtered", 0) >= 1

    wait_for(filtered, 15, "the relay to filter other/ignored.txt")
    subjects = {r["subject"] for r in records(stack.record_dir, "gcs-recorder")}
    assert "objects/other/ignored.txt" not in subjects


def test_scheduler_tick_reaches_the_schedule_function(stack: Stack) -> None:
    relay = stack.piece("push relay + scheduler")
    req = urllib.request.Request(relay["url"] + "/tick/ticker", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        message_id = json.loads(resp.read())["messageId"]
    got = wait_for(
        lambda: [r for r in records(stack.record_dir, "ticker") if r["id"] == message_id], 30, "a tick"
    )
    msg = got[0]["data"]["message"]
    assert got[0]["source"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/tick.ticker"
    tick = json.loads(base64.b64decode(msg["data"]))
    assert tick["function"] == "ticker" and tick["scheduled_time"].endswith(":00Z")
    assert msg["attributes"] == tick


def test_failing_function_message_lands_on_its_dead_letter_topic(
    stack: Stack, client_env: dict[str, str]
) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    message_id = publisher.publish(publisher.topic_path(PROJECT, "e2e-fail"), b"doomed", n="1").result(30)
    subscriber = pubsub_v1.SubscriberClient()
    sub = subscriber.subscription_path(PROJECT, "e2e-fail-dead-letter-sub")
    dead: list[Any] = []

    def pulled() -> bool:
        resp = subscriber.pull(request={"subscription": sub, "max_messages": 10}, timeout=5)
        if resp.received_messages:
            subscriber.acknowledge(
                request={"subscription": sub, "ack_ids": [m.ack_id for m in resp.received_messages]}
            )
            dead.extend(m.message for m in resp.received_messages)
        return any(m.data == b"doomed" for m in dead)

    wait_for(pulled, 90, "the dead-lettered message")
    msg = next(m for m in dead if m.data == b"doomed")
    assert msg.attributes["n"] == "1"
    assert msg.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    attempts = [r for r in records(stack.record_dir, "failer") if r["id"] == message_id]
    assert len(attempts) == 5 and all(r["outcome"] == "failed" for r in attempts)
    subscriber.close()


def test_up_twice_is_refused(stack: Stack) -> None:
    again = run_cli(
        ["up", "--manifest", str(MANIFEST), "--data-dir", str(stack.data_dir)], stack.env, timeout=60
    )
    assert again.returncode == 1
    assert "already running" in again.stderr


def test_zz_down_leaves_no_port_and_no_process(stack: Stack) -> None:
    """Runs after the other stack tests (file order): stops the shared stack and checks nothing survives."""
    pieces = stack.state["pieces"]
    ports = [p["port"] for p in pieces]
    pids = [p["pid"] for p in pieces] + [stack.state["supervisor_pid"]]
    assert all(port_open(port) for port in ports)
    down = run_cli(["down", "--data-dir", str(stack.data_dir)], stack.env, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout
    assert [port for port in ports if port_open(port)] == []
    assert [pid for pid in pids if pid_alive(pid)] == []
    for pgid in {p["pgid"] for p in pieces if p["pgid"]}:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    assert not (stack.data_dir / "stack" / "state.json").exists()
    status = run_cli(["status", "--data-dir", str(stack.data_dir)], stack.env)
    assert status.returncode == 3 and "no stack is running" in status.stdout


# ------------------------------------------------------------------------- clear errors, no stack
def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    require_emulators()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli(
            ["up", "--manifest", str(MANIFEST), "--data-dir", str(tmp_path), "--port", f"pubsub={port}"],
            dict(os.environ),
            timeout=60,
        )
    assert res.returncode == 1
    assert f"port {port} (pubsub) is already in use" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text(MANIFEST.read_text().replace("entry_point: fail", "entry_pont: fail"))
    res = run_cli(["up", "--manifest", str(bad), "--data-dir", str(tmp_path)], dict(os.environ), timeout=60)
    assert res.returncode == 1
    assert "functions.failer.entry_point: required" in res.stderr
    assert "functions.failer.entry_pont: unknown key" in res.stderr
    assert "Traceback" not in res.stderr


def test_function_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    require_emulators()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "main.py").write_text("import no_such_module_here  # noqa\n")
    (tmp_path / "manifest.yaml").write_text(
        "version: 1\nfunctions:\n  broken:\n    source: broken\n    entry_point: handle\n"
        "    trigger: {topic: broken-topic}\n"
    )
    data_dir = tmp_path / "data"
    res = run_cli(
        ["up", "--manifest", str(tmp_path / "manifest.yaml"), "--data-dir", str(data_dir)], dict(os.environ)
    )
    assert res.returncode == 1, res.stdout
    assert "function broken exited" in res.stderr
    assert "no_such_module_here" in res.stderr  # the log tail names the cause
    assert not (data_dir / "stack" / "state.json").exists()
    # nothing it started is left behind
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == ""


def test_foreground_stack_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    require_emulators()
    (tmp_path / "fn").mkdir()
    shutil.copy(FIXTURES / "recorder" / "main.py", tmp_path / "fn" / "main.py")
    (tmp_path / "manifest.yaml").write_text(
        "version: 1\nfunctions:\n  solo:\n    source: fn\n    entry_point: record\n"
        "    trigger: {topic: solo-topic}\n"
    )
    data_dir = tmp_path / "data"
    out_path = tmp_path / "out.txt"
    out_file = out_path.open("w")
    proc = subprocess.Popen(
        [
            *BACKBEAT,
            "up",
            "--foreground",
            "--manifest",
            str(tmp_path / "manifest.yaml"),
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        env={**os.environ, "RECORDER_DIR": str(tmp_path / "rec")},
        stdout=out_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state_file = data_dir / "stack" / "state.json"
    try:
        wait_for(
            lambda: state_file.exists() and json.loads(state_file.read_text())["status"] == "ready",
            120,
            "ready",
        )
        state = json.loads(state_file.read_text())
        assert state["supervisor_pid"] == proc.pid  # the CLI process itself supervises
        ports = [p["port"] for p in state["pieces"]]
        assert all(port_open(p) for p in ports)
        wait_for(lambda: "export PUBSUB_EMULATOR_HOST=" in out_path.read_text(), 30, "the printed table")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            run_cli(["down", "--data-dir", str(data_dir)], dict(os.environ), timeout=120)  # no leftovers
        out_file.close()
    out = out_path.read_text()
    assert proc.returncode == 0, out
    assert "export PUBSUB_EMULATOR_HOST=" in out and "stack stopped" in out
    assert [p for p in ports if port_open(p)] == []
    assert [p["pid"] for p in state["pieces"] if p["pgid"] and pid_alive(p["pid"])] == []
    assert not state_file.exists()
