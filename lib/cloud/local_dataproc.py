"""A local Dataproc whose clusters really run PySpark jobs, so the submission path is tested end to end.

It keeps :class:`~backbeat.dag.dataproc_sim.DataprocSimulation`'s API semantics (strict request
parsing by ``dataproc_v1``, cluster placement, request-id idempotency, AlreadyExists on a known job
id, NotFound) and replaces the simulated lifecycle of ``pyspark_job`` with a real run, the way a
cluster node would do it:

* ``main_python_file_uri`` and every ``python_file_uris`` entry (``gs://bucket/object``) are fetched
  through the **blobs port** into the job's folder; a missing object fails the job (ERROR), as on
  Dataproc;
* the driver runs as ``python -S <main.py> <args>`` in its own process group with ``PYTHONPATH`` =
  the fetched files (zips stay zips, like ``--py-files``) then the interpreter's site-packages.
  ``-S`` keeps this checkout's editable install out of the job, so the job imports exactly the code
  it was shipped; Spark's Python workers get the same interpreter flags and path;
* Spark runs in local mode: the master comes from the cluster's configuration
  (``PYSPARK_SUBMIT_ARGS``, like spark-defaults.conf), never from the job; the job's
  ``properties`` become ``--conf`` entries;
* ``get_job`` reports the process: RUNNING while it runs, DONE on exit 0, ERROR otherwise with
  ``status.details`` = the driver's last stderr lines. The driver output is kept in
  ``<workdir>/<job id>/driveroutput``.

Other job types and batches keep the simulation's behaviour. ``auto_clusters=True`` brings up a
cluster for any name a job's placement gives (what ``connect()`` does for the ``local`` backend).
"""

from __future__ import annotations

import os
import shlex
import site
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbeat.cloud.ports import AlreadyExists, Blobs, CloudError, NotFound
from backbeat.dag.dataproc_sim import DataprocSimulation

DETAIL_LINES = 12


@dataclass
class _Run:
    folder: Path
    proc: subprocess.Popen[bytes] | None
    error: str = ""


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` -> (bucket, name); CloudError naming the URI otherwise."""
    if not uri.startswith("gs://") or "/" not in uri[5:] or uri.endswith("/"):
        raise CloudError(f"{uri!r} is not a gs://bucket/object URI")
    bucket, name = uri[5:].split("/", 1)
    return bucket, name


class LocalDataproc(DataprocSimulation):
    """The dataproc port of the ``local`` backend: PySpark jobs run for real, in subprocesses."""

    def __init__(
        self,
        blobs: Blobs,
        workdir: str | Path,
        *,
        auto_clusters: bool = False,
        spark_master: str = "local[2]",
        python: str | None = None,
        strict: bool = True,
    ) -> None:
        super().__init__(steps=0, strict=strict)
        self.blobs = blobs
        self.workdir = Path(workdir)
        self.auto_clusters = auto_clusters
        self.spark_master = spark_master
        self.python = python or sys.executable
        self.runs: dict[tuple[str, str, str], _Run] = {}
        self._run_lock = threading.Lock()

    # ------------------------------------------------------------------ jobs
    def submit_job(
        self, project: str, region: str, job: Mapping[str, Any], request_id: str
    ) -> dict[str, Any]:
        name = (job.get("placement") or {}).get("cluster_name")
        if self.auto_clusters and name and (project, region, name) not in self.clusters:
            try:
                self.create_cluster(project, region, {"cluster_name": name, "labels": {"local": "1"}})
            except AlreadyExists:
                pass
        body = super().submit_job(project, region, job, request_id)
        job_id = body["reference"]["job_id"]
        key = (project, region, job_id)
        if "pyspark_job" in body:
            with self._run_lock:
                if key not in self.runs:
                    self.runs[key] = self._start(job_id, body["pyspark_job"])
        return self._public(body)  # as submitted (PENDING), like the API; get_job reports the run

    def _start(self, job_id: str, spec: Mapping[str, Any]) -> _Run:
        folder = self.workdir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            main = self._fetch(spec.get("main_python_file_uri", ""), folder)
            path = [str(self._fetch(uri, folder)) for uri in spec.get("python_file_uris") or ()]
        except CloudError as exc:
            return _Run(folder, None, f"the cluster could not fetch the job's files: {exc}")
        path += [p for p in site.getsitepackages() if Path(p).is_dir()]
        worker = folder / "python"
        worker.write_text(f"#!/bin/sh\nexec {shlex.quote(self.python)} -S \"$@\"\n")
        worker.chmod(0o755)
        conf = {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.driver.memory": "1g",
            **dict(spec.get("properties") or {}),
        }
        submit = ["--master", self.spark_master]
        for k, v in sorted(conf.items()):
            submit += ["--conf", f"{k}={v}"]
        cleared = ("PYSPARK_", "SPARK_", "PYTHON", "BACKBEAT_")  # the cluster's env, not the caller's
        env = {k: v for k, v in os.environ.items() if not k.startswith(cleared)}
        env.update(
            PYTHONPATH=os.pathsep.join(path),
            PYSPARK_PYTHON=str(worker),
            PYSPARK_SUBMIT_ARGS=shlex.join([*submit, "pyspark-shell"]),
        )
        out = open(folder / "driveroutput", "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(
                [self.python, "-S", str(main), *map(str, spec.get("args") or ())],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()
        return _Run(folder, proc)

    def _fetch(self, uri: str, folder: Path) -> Path:
        bucket, name = split_gs_uri(uri)
        target = folder / Path(name).name
        try:
            self.blobs.download_to(bucket, name, target)
        except NotFound:
            raise CloudError(f"{uri} does not exist") from None
        return target

    def get_job(self, project: str, region: str, job_id: str) -> dict[str, Any]:
        key = (project, region, job_id)
        run = self.runs.get(key)
        if run is None:
            return super().get_job(project, region, job_id)
        with self._lock:
            body = self.jobs[key]
            if body["status"]["state"] in ("DONE", "ERROR", "CANCELLED"):
                return self._public(body)
            rc = run.proc.poll() if run.proc is not None else 1
            body["driver_output_resource_uri"] = str(run.folder / "driveroutput")
            if rc is None:
                body["status"] = {"state": "RUNNING", "details": ""}
            elif rc == 0 and not run.error:
                body["status"] = {"state": "DONE", "details": ""}
            else:
                body["status"] = {"state": "ERROR", "details": run.error or self._details(run, rc)}
            done = body["status"]["state"] == "DONE"
            public = self._public(body)
        if done and self.on_done is not None:
            self.on_done(public)
        return public

    @staticmethod
    def _details(run: _Run, rc: int) -> str:
        try:
            lines = (run.folder / "driveroutput").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        typed = [ln for ln in lines if ln.startswith("backbeat dedupe job failed:")]
        tail = typed[-1:] or [ln for ln in lines if ln.strip()][-DETAIL_LINES:]
        return f"driver exited with status {rc}: " + "\n".join(tail)

    def wait(self, project: str, region: str, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
        """Block until the job's process ends (tests and the demo), then report it."""
        run = self.runs.get((project, region, job_id))
        if run is not None and run.proc is not None:
            run.proc.wait(timeout=timeout_s)
        return self.get_job(project, region, job_id)

    def close(self) -> None:
        """Stop every job still running (its whole process group)."""
        import signal

        for run in list(self.runs.values()):
            if run.proc is not None and run.proc.poll() is None:
                try:
                    os.killpg(run.proc.pid, signal.SIGTERM)
                    run.proc.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(run.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
