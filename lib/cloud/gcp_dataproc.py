"""The ``gcp`` adapter of the dataproc port, over the official google-cloud-dataproc client.

Requests go in and answers come out as plain dicts with ``dataproc_v1`` field names (snake_case,
enums by name), exactly what :class:`backbeat.dag.dataproc_sim.DataprocSimulation` and
:class:`backbeat.cloud.local_dataproc.LocalDataproc` take and give, so the dag templates and the
dedupe Spark path run unchanged on all three. Dataproc is regional: every call goes to the
``<region>-dataproc.googleapis.com`` endpoint (the global one rejects regional resources), with one
client per (service, region), built on first use. Errors become the port's: NotFound,
AlreadyExists, InvalidArgument (400), TransientError (unavailable, deadline, throttled...), and
CloudError otherwise, each naming the resource.

``channel_factory`` (endpoint -> grpc channel) exists for tests: it points the real client at a
local gRPC server (see tests/unit/test_gcp_dataproc.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from backbeat.cloud._gcp import map_error
from backbeat.cloud.ports import CloudError

SERVICES = {
    "jobs": ("JobControllerClient", "job_controller", "JobControllerGrpcTransport"),
    "clusters": ("ClusterControllerClient", "cluster_controller", "ClusterControllerGrpcTransport"),
    "batches": ("BatchControllerClient", "batch_controller", "BatchControllerGrpcTransport"),
}


def endpoint(region: str) -> str:
    """The regional endpoint every Dataproc call for ``region`` must use."""
    if not region or region == "global":
        return "dataproc.googleapis.com:443"
    return f"{region}-dataproc.googleapis.com:443"


def to_plain(message: Any) -> dict[str, Any]:
    """A proto-plus message (Job, Cluster, Batch) as a dict: snake_case names, enums as names."""
    return type(message).to_dict(message, preserving_proto_field_name=True, use_integers_for_enums=False)


class GcpDataproc:
    def __init__(
        self,
        *,
        channel_factory: Callable[[str], Any] | None = None,
        credentials: Any = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.channel_factory = channel_factory
        self.credentials = credentials
        self.timeout_s = timeout_s
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                import importlib

                from google.cloud import dataproc_v1

                cls_name, module, transport_name = SERVICES[service]
                cls = getattr(dataproc_v1, cls_name)
                host = endpoint(region)
                if self.channel_factory is not None:
                    package = f"google.cloud.dataproc_v1.services.{module}.transports"
                    transports = importlib.import_module(package)
                    transport = getattr(transports, transport_name)(
                        host=host, channel=self.channel_factory(host)
                    )
                    client = cls(transport=transport)
                else:
                    client = cls(credentials=self.credentials, client_options={"api_endpoint": host})
                self._clients[key] = client
            return client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from google.api_core import exceptions as gx

        from backbeat.dag.dataproc_sim import InvalidArgument

        try:
            return fn()
        except CloudError:
            raise
        except (gx.InvalidArgument, gx.BadRequest) as exc:
            raise InvalidArgument(f"{what}: {exc.message}") from exc
        except (gx.GoogleAPIError, ConnectionError, TimeoutError) as exc:
            raise map_error(exc, what) from exc

    # ------------------------------------------------------------------ clusters
    def create_cluster(self, project: str, region: str, cluster: Mapping[str, Any]) -> dict[str, Any]:
        name = cluster.get("cluster_name", "")
        client = self._client("clusters", region)
        op = self._call(
            f"create cluster projects/{project}/regions/{region}/clusters/{name}",
            lambda: client.create_cluster(
                request={"project_id": project, "region": region, "cluster": dict(cluster)},
                timeout=self.timeout_s,
            ),
        )
        return {"name": op.operation.name, "done": bool(op.operation.done), "cluster_name": name}

    def get_cluster(self, project: str, region: str, name: str) -> dict[str, Any]:
        client = self._client("clusters", region)
        return to_plain(
            self._call(
                f"cluster projects/{project}/regions/{region}/clusters/{name}",
                lambda: client.get_cluster(
                    request={"project_id": project, "region": region, "cluster_name": name},
                    timeout=self.timeout_s,
                ),
            )
        )

    def delete_cluster(self, project: str, region: str, name: str) -> dict[str, Any]:
        client = self._client("clusters", region)
        op = self._call(
            f"delete cluster projects/{project}/regions/{region}/clusters/{name}",
            lambda: client.delete_cluster(
                request={"project_id": project, "region": region, "cluster_name": name},
                timeout=self.timeout_s,
            ),
        )
        return {"name": op.operation.name, "done": bool(op.operation.done)}

    def list_clusters(self, project: str, region: str, filter: str = "") -> list[dict[str, Any]]:
        client = self._client("clusters", region)
        request = {"project_id": project, "region": region, "filter": filter}
        return self._call(
            f"clusters of projects/{project}/regions/{region}",
            lambda: [to_plain(c) for c in client.list_clusters(request=request, timeout=self.timeout_s)],
        )

    # ------------------------------------------------------------------ jobs
    def submit_job(
        self, project: str, region: str, job: Mapping[str, Any], request_id: str
    ) -> dict[str, Any]:
        job_id = (job.get("reference") or {}).get("job_id", "")
        client = self._client("jobs", region)
        request = {"project_id": project, "region": region, "job": dict(job), "request_id": request_id}
        return to_plain(
            self._call(
                f"submit job projects/{project}/regions/{region}/jobs/{job_id}",
                lambda: client.submit_job(request=request, timeout=self.timeout_s),
            )
        )

    def get_job(self, project: str, region: str, job_id: str) -> dict[str, Any]:
        client = self._client("jobs", region)
        return to_plain(
            self._call(
                f"job projects/{project}/regions/{region}/jobs/{job_id}",
                lambda: client.get_job(
                    request={"project_id": project, "region": region, "job_id": job_id},
                    timeout=self.timeout_s,
                ),
            )
        )

    # ------------------------------------------------------------------ serverless batches
    def create_batch(
        self, project: str, region: str, batch: Mapping[str, Any], batch_id: str, request_id: str = ""
    ) -> dict[str, Any]:
        name = f"projects/{project}/locations/{region}/batches/{batch_id}"
        client = self._client("batches", region)
        request: dict[str, Any] = {
            "parent": f"projects/{project}/locations/{region}",
            "batch": dict(batch),
            "batch_id": batch_id,
        }
        if request_id:
            request["request_id"] = request_id
        op = self._call(
            f"create batch {name}", lambda: client.create_batch(request=request, timeout=self.timeout_s)
        )
        # the operation carries metadata, not the batch: report it as the API has just accepted it
        return {"name": name, "state": "PENDING", "operation": op.operation.name}

    def get_batch(self, project: str, region: str, batch_id: str) -> dict[str, Any]:
        name = f"projects/{project}/locations/{region}/batches/{batch_id}"
        client = self._client("batches", region)
        return to_plain(
            self._call(
                f"batch {name}", lambda: client.get_batch(request={"name": name}, timeout=self.timeout_s)
            )
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.transport.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
