"""The local emulation stack: start every piece the manifest needs, keep a state file, stop it all.

:class:`LocalStack` does the work in the calling process: the Pub/Sub and Firestore emulators and
fake-gcs-server (through :mod:`backbeat.stack.emulators`), one functions-framework server per
function, the push relay and the scheduler (threads of this process), then the topics, buckets,
push subscriptions with dead-letter policies and the storage notification topic.

``backbeat up`` runs this module as a detached supervisor (``python -m backbeat.stack.runner``, in
its own session) and waits for the state file to say ``ready``; ``--foreground`` runs the stack in
the CLI process itself. Every server runs in its own process group; :meth:`LocalStack.stop` and
:func:`stop_stack` stop whole groups, so ``down`` leaves no process and no listening port.

State file: ``<data-dir>/stack/state.json`` (pids, pgids, ports, logs, env to export); logs are in
``<data-dir>/stack/logs/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backbeat.errors import BackbeatError
from backbeat.stack.manifest import Manifest, load_manifest

log = logging.getLogger("backbeat.stack")

HOST = "127.0.0.1"
GCS_NOTIFICATIONS_TOPIC = "backbeat-gcs-notifications"
FUNCTION_START_TIMEOUT_S = 60.0
STACK_START_TIMEOUT_S = 240.0


class StackError(BackbeatError):
    """The stack cannot start, stop or be inspected; the message says which piece and why."""


class _StopRequested(Exception):
    """Raised in the main thread by SIGTERM/SIGINT while the stack is starting or running."""


# ----------------------------------------------------------------------------------- state file
@dataclass
class Piece:
    """One running piece: what it is, where it listens, how to stop it."""

    name: str
    kind: str  # emulator | function | relay
    port: int
    pid: int
    pgid: int | None  # None: lives inside the supervisor process (relay)
    log: str
    url: str
    health: str = ""  # path answering 2xx, or "" for "accepts TCP connections"


@dataclass
class StackState:
    status: str  # starting | ready | failed | stopping
    supervisor_pid: int
    supervisor_pgid: int | None
    manifest: str
    project: str
    data_dir: str
    pieces: list[Piece] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    error: str = ""
    event_types: list[str] = field(default_factory=list)
    event_types_note: str = ""
    started_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StackState:
        d = dict(d)
        d["pieces"] = [Piece(**p) for p in d.get("pieces", [])]
        return cls(**d)


def stack_dir(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / "stack"


def state_path(data_dir: Path) -> Path:
    return stack_dir(data_dir) / "state.json"


def read_state(data_dir: Path) -> StackState | None:
    """The recorded state, or None when no stack was started here (or the file is unreadable)."""
    path = state_path(data_dir)
    try:
        return StackState.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise StackError(
            f"stack state file {path} is unreadable ({exc}); delete it after checking no stack runs"
        ) from None


def write_state(data_dir: Path, state: StackState) -> None:
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still "exists"; treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def piece_healthy(piece: Piece) -> bool:
    """Alive and answering: HTTP 2xx on its health path, or accepting TCP when it has none."""
    from backbeat.stack.emulators import _group_exists, port_open

    if piece.pgid is not None and not _group_exists(piece.pgid):
        return False
    if piece.pgid is None and not pid_alive(piece.pid):
        return False
    if not piece.health:
        return port_open(piece.port)
    try:
        with urllib.request.urlopen(f"{piece.url}{piece.health}", timeout=2) as resp:  # noqa: S310
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ----------------------------------------------------------------------------------- functions
def _function_argv(manifest: Manifest, name: str, port: int) -> list[str]:
    fn = manifest.functions[name]
    return [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(fn.main_py),
        "--target",
        fn.entry_point,
        "--signature-type",
        fn.signature,
        "--host",
        HOST,
        "--port",
        str(port),
    ]


def _spawn(
    argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_http_any(port: int, popen: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until something answers HTTP on the port (any status); False if the process exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/robots.txt", timeout=2):  # noqa: S310
                return True
        except urllib.error.HTTPError:
            return True  # functions-framework answers 404 here: it is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def check_port_free(port: int, what: str) -> None:
    from backbeat.stack.emulators import port_open

    if port_open(port):
        raise StackError(
            f"port {port} ({what}) is already in use on {HOST}; pick another or stop what holds it"
        )


# ------------------------------------------------------------------------------------- the stack
class LocalStack:
    """Start/stop the whole local stack for one manifest. Not thread-safe; one per process."""

    def __init__(
        self,
        manifest: Manifest,
        data_dir: Path,
        project: str,
        ports: Mapping[str, int] | None = None,
        supervisor_pgid: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.data_dir = Path(data_dir).resolve()
        self.project = project
        self.fixed_ports = dict(ports or {})
        self.logs = stack_dir(self.data_dir) / "logs"
        self.state = StackState(
            status="starting",
            supervisor_pid=os.getpid(),
            supervisor_pgid=supervisor_pgid,
            manifest=str(manifest.path),
            project=project,
            data_dir=str(self.data_dir),
            event_types=list(manifest.event_types),
            event_types_note=manifest.event_types_note,
        )
        self._emulators: list[Any] = []
        self._lock = threading.Lock()
        self._functions: dict[str, subprocess.Popen[bytes]] = {}
        self._server: Any = None
        self.scheduler: Any = None
        self.relay: Any = None

    # --------------------------------------------------------------------------- helpers
    def _save(self) -> None:
        with self._lock:  # emulator threads record their pieces concurrently
            write_state(self.data_dir, self.state)

    def _add(self, piece: Piece) -> None:
        self.state.pieces.append(piece)
        self._save()

    def _port(self, name: str) -> int:
        from backbeat.stack.emulators import free_port

        if name in self.fixed_ports:
            check_port_free(self.fixed_ports[name], name)
            return self.fixed_ports[name]
        return free_port()

    def function_env(self, name: str, emulator_env: Mapping[str, str]) -> dict[str, str]:
        fn = self.manifest.functions[name]
        env = dict(os.environ)
        env.update(emulator_env)
        env.update(
            {
                "BACKBEAT_BACKEND": "gcp",
                "BACKBEAT_PROJECT": self.project,
                "GOOGLE_CLOUD_PROJECT": self.project,
                "K_SERVICE": fn.deployed_name,
                "FUNCTION_TARGET": fn.entry_point,
                "FUNCTION_SIGNATURE_TYPE": fn.signature,
                "THREADS": str(max(1, fn.max_instances)),  # max_instances x concurrency 1, as deployed
                "PYTHONUNBUFFERED": "1",
            }
        )
        for b in self.manifest.buckets.values():
            if b.env:
                env[b.env] = b.real_name()
        if fn.trigger.kind == "bucket":  # Eventarc cannot filter by prefix: deployed code needs these
            env["BACKBEAT_TRIGGER_BUCKET"] = self.manifest.buckets[fn.trigger.bucket or ""].real_name()
            env["BACKBEAT_TRIGGER_PREFIX"] = fn.trigger.prefix
        env.update(self.manifest.function_env(fn, self.project))
        return env

    # --------------------------------------------------------------------------- start
    def start(self) -> StackState:
        """Bring every piece up and wire it; on any failure stop what started and raise StackError."""
        try:
            self._start()
            self.state.status = "ready"
            self._save()
        except BaseException as exc:
            if isinstance(exc, _StopRequested | KeyboardInterrupt):
                self.stop()  # asked to stop while starting: leave no state behind
                raise
            self.state.status = "failed"
            self.state.error = str(exc) if isinstance(exc, BackbeatError) else f"{type(exc).__name__}: {exc}"
            self.stop(final_status="failed")
            if isinstance(exc, BackbeatError):
                raise
            raise StackError(f"stack failed to start: {self.state.error}") from exc
        return self.state

    def _start(self) -> None:
        from backbeat.stack import emulators
        from backbeat.stack.pubsub_rest import PubSubRest
        from backbeat.stack.relay import STORAGE_ROUTE, Relay, Route, serve
        from backbeat.stack.scheduler import Scheduler

        m = self.manifest
        m.check_sources()
        self.logs.mkdir(parents=True, exist_ok=True)
        self._save()
        ps_port, fs_port, gcs_port = self._port("pubsub"), self._port("firestore"), self._port("gcs")
        emulator_env = {
            "PUBSUB_EMULATOR_HOST": f"{HOST}:{ps_port}",
            "FIRESTORE_EMULATOR_HOST": f"{HOST}:{fs_port}",
            "STORAGE_EMULATOR_HOST": f"http://{HOST}:{gcs_port}",
        }
        # functions first: their interpreters import while the JVMs boot
        fn_ports = {name: self._port(f"function {name}") for name in m.functions}
        for name, port in fn_ports.items():
            log_path = self.logs / f"function-{name}.log"
            popen = _spawn(
                _function_argv(m, name, port),
                self.function_env(name, emulator_env),
                log_path,
                cwd=m.functions[name].source,
            )
            self._functions[name] = popen
            self._add(
                Piece(
                    name=f"function {name}",
                    kind="function",
                    port=port,
                    pid=popen.pid,
                    pgid=popen.pid,
                    log=str(log_path),
                    url=f"http://{HOST}:{port}",
                )
            )

        def emu(piece_name: str, start: Any, health: str) -> Any:
            proc = start()
            self._emulators.append(proc)
            self._add(
                Piece(
                    name=piece_name,
                    kind="emulator",
                    port=proc.port,
                    pid=proc.pid,
                    pgid=proc.pgid,
                    log=str(proc.log_path),
                    url=proc.url,
                    health=health,
                )
            )
            return proc

        with ThreadPoolExecutor(max_workers=2) as pool:
            f_ps = pool.submit(
                emu, "pubsub emulator", lambda: emulators.start_pubsub(self.project, ps_port, self.logs), "/"
            )
            f_fs = pool.submit(
                emu,
                "firestore emulator",
                lambda: emulators.start_firestore(self.project, fs_port, self.logs),
                "/",
            )
            # functions are checked while the JVMs boot: a broken one fails the start early
            for name, port in fn_ports.items():
                popen = self._functions[name]
                if not _wait_http_any(port, popen, FUNCTION_START_TIMEOUT_S):
                    log_path = self.logs / f"function-{name}.log"
                    state = (
                        f"exited with code {popen.returncode}"
                        if popen.poll() is not None
                        else "did not answer"
                    )
                    raise StackError(
                        f"function {name} {state} on port {port} (functions-framework --source "
                        f"{m.functions[name].main_py} --target {m.functions[name].entry_point}); "
                        f"log {log_path}:\n{_tail(log_path)}"
                    )
            f_ps.result()
            f_fs.result()
        ps = PubSubRest(emulator_env["PUBSUB_EMULATOR_HOST"], self.project)
        for topic in [*m.all_topics(), GCS_NOTIFICATIONS_TOPIC]:
            ps.create_topic(topic)
        emu(
            "fake-gcs-server",
            lambda: emulators.start_fake_gcs(
                gcs_port,
                self.logs,
                pubsub_project=self.project,
                pubsub_topic=GCS_NOTIFICATIONS_TOPIC,
                events=("finalize",),
                pubsub_emulator_host=emulator_env["PUBSUB_EMULATOR_HOST"],
            ),
            "/storage/v1/b",
        )
        for bucket in sorted(set(m.bucket_names().values())):
            _create_bucket(emulator_env["STORAGE_EMULATOR_HOST"], self.project, bucket)

        schedules = {n: f.trigger.schedule for n, f in m.functions.items() if f.trigger.kind == "schedule"}
        self.scheduler = Scheduler(schedules, lambda t, d, a: ps.publish(t, d, a))  # type: ignore[arg-type]
        buckets = m.bucket_names()
        routes = {
            n: Route(
                function=n,
                url=f"http://{HOST}:{fn_ports[n]}",
                signature=f.signature,
                retry=f.retry,
                timeout_s=float(f.timeout_s),
                bucket=buckets.get(f.trigger.bucket or ""),
                prefix=f.trigger.prefix,
                max_delivery_attempts=f.max_delivery_attempts if f.retry and f.dead_letter_topic else None,
            )
            for n, f in m.functions.items()
        }
        self.relay = Relay(self.project, routes, tick=self.scheduler.fire)
        relay_port = self._port("relay")
        self._server = serve(self.relay, HOST, relay_port)
        self._add(
            Piece(
                name="push relay + scheduler",
                kind="relay",
                port=relay_port,
                pid=os.getpid(),
                pgid=None,
                log="",
                url=f"http://{HOST}:{relay_port}",
                health="/healthz",
            )
        )

        for dlt in sorted({f.dead_letter_topic for f in m.functions.values() if f.dead_letter_topic}):
            ps.create_subscription(f"{dlt}-sub", dlt)  # pull: dead letters stay inspectable
        # no retry policy on the push subscriptions: the emulator then redelivers a failed push about
        # once a second (a policy makes it slower and erratic, see PubSubRest.create_subscription), so
        # a poison message reaches its dead-letter topic after max_delivery_attempts in seconds
        for name, fn in m.functions.items():
            dead_letter = fn.dead_letter_topic if fn.retry else None
            ack = min(600, max(10, fn.timeout_s + 5))
            subscribed = list(fn.trigger.topics) if fn.trigger.kind != "bucket" else [GCS_NOTIFICATIONS_TOPIC]
            for topic in subscribed:
                route = STORAGE_ROUTE if fn.trigger.kind == "bucket" else topic
                ps.create_subscription(
                    f"{name}--{topic}",
                    topic,
                    push_endpoint=f"http://{HOST}:{relay_port}/push/{name}/{route}",
                    ack_deadline_s=ack,
                    dead_letter_topic=dead_letter,
                    max_delivery_attempts=fn.max_delivery_attempts,
                )
        self.scheduler.start()
        env = dict(emulator_env)
        env.update(
            {
                "BACKBEAT_BACKEND": "gcp",
                "BACKBEAT_PROJECT": self.project,
                "GOOGLE_CLOUD_PROJECT": self.project,
            }
        )
        for b in m.buckets.values():
            if b.env:
                env[b.env] = b.real_name()
        self.state.env = env

    # --------------------------------------------------------------------------- stop
    def stop(self, final_status: str | None = None) -> None:
        """Stop every piece (functions first, so nothing is mid-delivery), whole process groups."""
        from backbeat.stack.emulators import stop_group

        self.state.status = "stopping" if final_status is None else final_status
        try:
            self._save()
        except OSError:
            pass
        if self.scheduler is not None:
            self.scheduler.stop()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:  # groups stop in parallel: each may wait
            list(pool.map(lambda p: stop_group(p.pid, timeout_s=10, popen=p), self._functions.values()))
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda e: e.stop(timeout_s=15), list(self._emulators)))
        # stop() may run twice (a signal during start); stopped groups are simply gone the second time
        log.info("stack stopped in %.1fs", time.monotonic() - started)
        if final_status is None:
            state_path(self.data_dir).unlink(missing_ok=True)
        else:
            self._save()


def _create_bucket(storage_host: str, project: str, bucket: str) -> None:
    body = json.dumps({"name": bucket}).encode()
    req = urllib.request.Request(
        f"{storage_host}/storage/v1/b?project={project}",
        data=body,
        method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - loopback
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise StackError(
                f"fake-gcs-server refused bucket {bucket!r}: HTTP {exc.code} {exc.read()[:200]!r}"
            ) from None


# ----------------------------------------------------------------------------------- stop_stack
def stop_stack(data_dir: Path, timeout_s: float = 45.0) -> list[Piece]:
    """Stop a running stack (asks the supervisor, then stops any group left). Returns the pieces."""
    from backbeat.stack.emulators import port_open, stop_group

    state = read_state(data_dir)
    if state is None:
        return []
    sup = state.supervisor_pid
    if sup != os.getpid() and pid_alive(sup):
        try:
            os.kill(sup, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.1)
    for piece in state.pieces:  # whatever the supervisor did not (or could not) stop
        if piece.pgid is not None:
            stop_group(piece.pgid, timeout_s=10)
    if state.supervisor_pgid is not None:
        stop_group(state.supervisor_pgid, timeout_s=5)
    busy = [p for p in state.pieces if port_open(p.port)]
    if busy:
        names = ", ".join(f"{p.name} ({p.port})" for p in busy)
        raise StackError(f"after stopping, these ports still accept connections: {names}")
    state_path(data_dir).unlink(missing_ok=True)
    return state.pieces


# ----------------------------------------------------------------------------------- supervisor
def _raise_stop(signum: int, frame: Any) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def run_attached(stack: LocalStack, on_ready: Any = None) -> int:
    """Start the stack, call ``on_ready(state)``, block until SIGTERM/SIGINT, then stop it all.

    Returns 0 after a requested stop, 130 if the stop came while starting, 1 if the start failed
    (the state file then keeps ``failed`` and the error for ``backbeat up`` to show).
    """
    requested = threading.Event()
    running = False

    def on_signal(signum: int, frame: Any) -> None:
        # while starting, interrupt the start at once; once running, only flag the request: an
        # exception raised at an arbitrary point (inside a lock held by logging or the console)
        # could leave that lock taken and hang the stop that follows
        if not running:
            _raise_stop(signum, frame)
        requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        state = stack.start()
        running = True
        if on_ready is not None:
            on_ready(state)
        while not requested.wait(0.5):
            pass
    except (_StopRequested, KeyboardInterrupt):
        code = 0 if stack.state.status == "ready" else 130
    except BackbeatError as exc:
        log.error("%s", exc)
        code = 1
    finally:  # one stop, not interruptible by a second Ctrl-C; idempotent after a failed start
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if code != 1:
                stack.stop()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    return code


def main(argv: list[str] | None = None) -> int:
    """The detached supervisor of ``backbeat up``."""
    parser = argparse.ArgumentParser(prog="python -m backbeat.stack.runner")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--ports", default="{}", help="JSON {piece: port}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data_dir = Path(args.data_dir)
    try:
        manifest = load_manifest(args.manifest)
    except BackbeatError as exc:
        write_state(
            data_dir,
            StackState(
                status="failed",
                supervisor_pid=os.getpid(),
                supervisor_pgid=os.getpgid(0),
                manifest=args.manifest,
                project=args.project,
                data_dir=str(data_dir),
                error=str(exc),
            ),
        )
        return 1
    stack = LocalStack(
        manifest, data_dir, args.project, json.loads(args.ports), supervisor_pgid=os.getpgid(0)
    )
    return run_attached(stack, on_ready=lambda s: log.info("stack ready: %s", [p.name for p in s.pieces]))


if __name__ == "__main__":
    sys.exit(main())
