"""`backbeat package`: deterministic zips that run, unpacked, in a fresh virtual environment.

The slow test builds the recorder function's zip, unpacks it into an empty folder, creates a new
venv (no system site-packages), installs the zip's requirements.txt, starts functions-framework from
that folder and delivers a binary-mode CloudEvent to it: the function must import the zipped
``backbeat``, not this checkout. The wheels the requirements resolve to are downloaded once into
``~/.cache/backbeat/wheelhouse/<hash of requirements.txt>``; pip then installs from there with
``--no-index`` (an index round trip per project made the install take minutes here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from backbeat.stack.manifest import load_manifest
from backbeat.stack.packaging import FIXED_TIME, build_zip, library_dir

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "tests" / "e2e" / "fixtures" / "manifest.yaml"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zip_is_deterministic_and_holds_main_requirements_and_backbeat(tmp_path: Path) -> None:
    manifest = load_manifest(MANIFEST)
    lib = tmp_path / "lib"  # a frozen copy: the work tree may change under a parallel edit
    shutil.copytree(library_dir(), lib, ignore=shutil.ignore_patterns("__pycache__"))
    (lib / "__pycache__").mkdir(exist_ok=True)
    (lib / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"junk")
    first = build_zip(manifest, "recorder", tmp_path / "a", library=lib)
    time.sleep(1.1)
    os.utime(lib / "errors.py")  # a new mtime alone must not change the zip
    second = build_zip(manifest, "recorder", tmp_path / "b", library=lib)
    assert first.sha256 == second.sha256 == _sha(second.path)
    assert first.path.read_bytes() == second.path.read_bytes()

    with zipfile.ZipFile(first.path) as zf:
        names = zf.namelist()
        infos = zf.infolist()
        reqs = zf.read("requirements.txt").decode().splitlines()
        assert zf.read("main.py") == (REPO / "tests/e2e/fixtures/recorder/main.py").read_bytes()
        assert (
            zf.read("backbeat/stack/manifest_schema.json")
            == (lib / "stack/manifest_schema.json").read_bytes()
        )
    assert names == sorted(names)
    assert {"main.py", "requirements.txt", "backbeat/__init__.py", "backbeat/errors.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert all(i.date_time == FIXED_TIME for i in infos)
    pins = [r for r in reqs if r and not r.startswith("#")]
    assert all("==" in r for r in pins)
    pinned = {r.split("==")[0].lower() for r in pins}
    assert {"functions-framework", "cloudevents", "google-cloud-pubsub", "numpy", "pyyaml"} <= pinned
    assert "google-cloud-compute" not in pinned  # opt-in only (extra_requirements)

    (lib / "errors.py").write_text((lib / "errors.py").read_text() + "\n# changed\n")
    third = build_zip(manifest, "recorder", tmp_path / "c", library=lib)
    assert third.sha256 != first.sha256


def test_package_cli_prints_path_size_and_sha(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    res = subprocess.run(
        [sys.executable, "-m", "backbeat.cli", "package", "--manifest", str(MANIFEST), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    for fn in ("recorder", "gcs_recorder", "ticker", "failer"):
        zip_path = out / f"{fn}.zip"
        assert zip_path.exists()
        line = next(x for x in res.stdout.splitlines() if x.startswith(str(zip_path)))
        assert f"sha256 {_sha(zip_path)}" in line and f"{zip_path.stat().st_size} bytes" in line
    bad = subprocess.run(
        [sys.executable, "-m", "backbeat.cli", "package", "--manifest", str(MANIFEST), "-f", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "functions.nope: no such function" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wheelhouse(requirements: Path) -> Path:
    """A per-requirements download cache (like pip's own cache, but usable with --no-index)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:16]
    folder = cache / "backbeat" / "wheelhouse" / digest
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _pip(python: str, args: list[str], cwd: Path) -> None:
    res = subprocess.run(
        [python, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )
    assert res.returncode == 0, f"pip {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(unpacked zip folder, venv) -- one fresh venv per session: the install is the slow part."""
    base = tmp_path_factory.mktemp("packaged")
    result = build_zip(load_manifest(MANIFEST), "recorder", base / "dist")
    unpacked = base / "function"
    unpacked.mkdir()
    with zipfile.ZipFile(result.path) as zf:
        zf.extractall(unpacked)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    wheelhouse = _wheelhouse(unpacked / "requirements.txt")
    if not (wheelhouse / ".complete").exists():
        # the first session downloads every wheel the requirements resolve to (slow: one index
        # round trip per project); later sessions install offline from this folder
        _pip(
            python,
            ["download", "--quiet", "--only-binary=:all:", "-d", str(wheelhouse), "-r", "requirements.txt"],
            unpacked,
        )
        (wheelhouse / ".complete").write_text("ok\n")
    _pip(
        python,
        [
            "install",
            "--quiet",
            "--no-compile",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "-r",
            "requirements.txt",
        ],
        unpacked,
    )
    return unpacked, venv


@pytest.mark.e2e
@pytest.mark.slow
def test_unpacked_zip_serves_a_cloudevent_in_a_fresh_venv(
    fresh_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    unpacked, venv = fresh_venv
    # the fresh venv has no backbeat of its own: only the zipped folder can satisfy the import
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.util as u; print(u.find_spec('backbeat'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert probe.stdout.strip() == "None"

    port = _free_port()
    records = tmp_path / "records"
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "RECORDER_DIR": str(records),
        "K_SERVICE": "recorder",
    }
    log = (tmp_path / "ff.log").open("wb")
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "functions-framework"),
            "--source",
            "main.py",
            "--target",
            "record",
            "--signature-type",
            "cloudevent",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=unpacked,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "ff.log").read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/robots.txt", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # answered (404): up
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, "functions-framework did not start"
                time.sleep(0.2)
        obj = {"bucket": "b", "name": "staging/x.avro", "size": "3"}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/",
            data=json.dumps(obj).encode(),
            method="POST",
            headers={
                "ce-specversion": "1.0",
                "ce-id": "evt-123",
                "ce-source": "//storage.googleapis.com/projects/_/buckets/b",
                "ce-type": "google.cloud.storage.object.v1.finalized",
                "ce-subject": "objects/staging/x.avro",
                "ce-time": "2026-01-01T00:00:00Z",
                "content-type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        lines = (records / "recorder.jsonl").read_text().splitlines()
        event = json.loads(lines[-1])
        assert event["id"] == "evt-123" and event["type"] == "google.cloud.storage.object.v1.finalized"
        assert event["subject"] == "objects/staging/x.avro" and event["data"] == obj
        assert event["backend"] == "local"  # backbeat.settings ran from the zip, default backend
        assert Path(event["backbeat_file"]).resolve().is_relative_to(unpacked.resolve())
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
