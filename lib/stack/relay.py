"""The push relay: turns Pub/Sub emulator pushes into the CloudEvents Eventarc would deliver.

Every push subscription of the local stack points here (``POST /push/<function>/<topic>``), and
the relay POSTs a binary-mode CloudEvent (``ce-*`` headers) to the function's functions-framework
server. Why a relay rather than pushing straight at the function (functions-framework does accept
a raw push body and converts it): Eventarc's shape differs from that conversion, and a faithful
local run needs the differences:

* topic triggers get ``google.cloud.pubsub.topic.v1.messagePublished`` with source
  ``//pubsub.googleapis.com/projects/P/topics/T`` and data ``{"message": {...}, "subscription": ...}``;
* bucket triggers get ``google.cloud.storage.object.v1.finalized`` with source
  ``//storage.googleapis.com/projects/_/buckets/B``, subject ``objects/NAME`` and the object
  resource as data (fake-gcs-server publishes GCS notifications into one topic; the relay keeps
  the events of the function's bucket and prefix and acknowledges the rest);
* ``retry: false`` drops a failed event (answers 204) as Cloud Functions does; ``retry: true``
  answers 500 so the emulator redelivers, and its dead-letter policy (which the emulator honours,
  checked by the e2e test) moves the message to the dead-letter topic after
  ``max_delivery_attempts``;
* ``deliveryAttempt``: real Pub/Sub puts it in the push body of a subscription with a dead-letter
  policy (1 on the first delivery, then counting redeliveries), and handlers read it
  (``backbeat.delivery.functions.message_from_event``). The emulator's *pull* response carries it, but
  its *push* body does not (checked against gcloud's emulator 2025-06). So for routes with a
  dead-letter policy the relay passes the body's value through when present and otherwise counts
  the pushes it received per (subscription, message id) itself; the emulator counts the same
  pushes, and ``tests/e2e/test_stack_deadletter.py`` checks the handler sees 1..5 and the
  dead-letter message says ``CloudPubSubDeadLetterSourceDeliveryCount=5``. The CloudEvent carries it
  as ``data.deliveryAttempt`` beside ``message`` and ``subscription`` (the push body's shape);
* ``http`` functions get the raw push body, as a push subscription to an HTTPS endpoint would.

``POST /tick/<function>`` publishes a scheduler tick now (handy for trying schedule functions);
``GET /healthz`` answers 200.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("backbeat.stack.relay")

PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
STORAGE_FINALIZED_TYPE = "google.cloud.storage.object.v1.finalized"
STORAGE_ROUTE = "_storage"


@dataclass(frozen=True)
class Route:
    """Where one function's events go and how they are shaped."""

    function: str
    url: str  # the function's functions-framework base URL
    signature: str  # cloudevent | http
    retry: bool
    timeout_s: float
    bucket: str | None = None  # real bucket name, for bucket triggers
    prefix: str = ""
    # set when the subscription has a dead-letter policy: the relay then reports deliveryAttempt
    max_delivery_attempts: int | None = None


@dataclass(frozen=True)
class Delivery:
    """What the relay decided for one push: HTTP status to answer the emulator, and why."""

    status: int
    outcome: str  # delivered | failed-retry | failed-dropped | filtered


def pubsub_cloudevent(
    project: str, topic: str, push: Mapping[str, Any], delivery_attempt: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of the CloudEvent Eventarc sends for a Pub/Sub message (with
    ``deliveryAttempt`` beside ``message`` when the subscription has a dead-letter policy)."""
    msg = dict(push["message"])
    message = {
        "data": msg.get("data", ""),
        "attributes": msg.get("attributes", {}),
        "messageId": msg.get("messageId") or msg.get("message_id"),
        "publishTime": msg.get("publishTime") or msg.get("publish_time"),
    }
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(message["messageId"]),
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-type": PUBSUB_TYPE,
        "ce-time": str(message["publishTime"]),
        "content-type": "application/json",
    }
    data: dict[str, Any] = {"message": message, "subscription": push.get("subscription", "")}
    if delivery_attempt is not None:
        data["deliveryAttempt"] = delivery_attempt
    return headers, json.dumps(data).encode()


def storage_cloudevent(push: Mapping[str, Any]) -> tuple[dict[str, str], bytes, dict[str, Any]]:
    """Headers, body and decoded object resource of a GCS finalize notification's CloudEvent."""
    msg = push["message"]
    obj = json.loads(base64.b64decode(msg.get("data", "")) or b"{}")
    attrs = msg.get("attributes", {})
    bucket = obj.get("bucket") or attrs.get("bucketId", "")
    name = obj.get("name") or attrs.get("objectId", "")
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(msg.get("messageId") or msg.get("message_id")),
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-type": STORAGE_FINALIZED_TYPE,
        "ce-subject": f"objects/{name}",
        "ce-time": str(obj.get("updated") or msg.get("publishTime")),
        "content-type": "application/json",
    }
    return headers, json.dumps(obj).encode(), obj


class Relay:
    """Holds the routes; :meth:`deliver` handles one push (also callable without the HTTP server)."""

    def __init__(self, project: str, routes: Mapping[str, Route], tick: Callable[[str], str] | None = None):
        self.project = project
        self.routes = dict(routes)
        self.tick = tick
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        # (subscription, message id) -> pushes seen so far, only for messages not yet acknowledged
        self._attempts: dict[tuple[str, str], int] = {}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def delivery_attempt(self, route: Route, push: Mapping[str, Any]) -> int | None:
        """This push's ``deliveryAttempt`` (None when the route has no dead-letter policy, as in
        Pub/Sub): the push body's own value when the emulator sends one, else the relay's count."""
        if route.max_delivery_attempts is None:
            return None
        msg = push.get("message") or {}
        key = (str(push.get("subscription", "")), str(msg.get("messageId") or msg.get("message_id") or ""))
        given = push.get("deliveryAttempt")
        with self._lock:
            try:
                attempt = int(given) if given is not None else self._attempts.get(key, 0) + 1
            except (TypeError, ValueError):
                attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
        return attempt

    def _settled(self, route: Route, push: Mapping[str, Any], attempt: int | None, acked: bool) -> None:
        """Forget a message's count once Pub/Sub will not push it again (acked or dead-lettered)."""
        if attempt is None or not (acked or attempt >= (route.max_delivery_attempts or 0)):
            return
        msg = push.get("message") or {}
        key = (str(push.get("subscription", "")), str(msg.get("messageId") or msg.get("message_id") or ""))
        with self._lock:
            if self._attempts.get(key) == attempt:  # a concurrent redelivery may have counted on
                del self._attempts[key]

    def deliver(self, function: str, topic: str, push: Mapping[str, Any]) -> Delivery:
        route = self.routes[function]
        attempt = self.delivery_attempt(route, push)
        result = self._deliver(route, topic, push, attempt)
        self._settled(route, push, attempt, acked=result.status < 300)
        return result

    def _deliver(self, route: Route, topic: str, push: Mapping[str, Any], attempt: int | None) -> Delivery:
        function = route.function
        if route.signature == "http":
            if attempt is not None:
                push = {**push, "deliveryAttempt": attempt}
            headers, body = {"content-type": "application/json"}, json.dumps(push).encode()
        elif topic == STORAGE_ROUTE:
            headers, body, obj = storage_cloudevent(push)
            attrs = push["message"].get("attributes", {})
            if (
                attrs.get("eventType", "OBJECT_FINALIZE") != "OBJECT_FINALIZE"
                or obj.get("bucket") != route.bucket
                or not str(obj.get("name", "")).startswith(route.prefix)
            ):
                self._count(f"{function}:filtered")
                return Delivery(204, "filtered")
        else:
            headers, body = pubsub_cloudevent(self.project, topic, push, attempt)
        req = urllib.request.Request(route.url + "/", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=route.timeout_s) as resp:  # noqa: S310 - loopback
                resp.read()
            self._count(f"{function}:delivered")
            return Delivery(204, "delivered")
        except (urllib.error.URLError, OSError) as exc:
            code = getattr(exc, "code", None)
            log.warning(
                "function %s failed on event %s (attempt %s): %s",
                function,
                headers.get("ce-id", "?"),
                attempt or "?",
                code or exc,
            )
        if route.retry:
            self._count(f"{function}:failed-retry")
            return Delivery(500, "failed-retry")
        self._count(f"{function}:failed-dropped")
        return Delivery(204, "failed-dropped")


class _Handler(BaseHTTPRequestHandler):
    relay: Relay  # set on the subclass made by serve()

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per push is too much
        log.debug(fmt, *args)

    def _answer(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path == "/healthz":
            self._answer(200, json.dumps({"ok": True, "counts": self.relay.counts}).encode())
        else:
            self._answer(404)

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        parts = self.path.strip("/").split("/")
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(parts) == 3 and parts[0] == "push" and parts[1] in self.relay.routes:
            try:
                push = json.loads(raw)
                push["message"]  # noqa: B018 - shape check
            except (ValueError, KeyError, TypeError):
                self._answer(400, b'{"error": "not a Pub/Sub push body"}')
                return
            result = self.relay.deliver(parts[1], parts[2], push)
            self._answer(result.status)
        elif len(parts) == 2 and parts[0] == "tick" and self.relay.tick is not None:
            try:
                message_id = self.relay.tick(parts[1])
            except KeyError:
                self._answer(404, json.dumps({"error": f"no schedule function {parts[1]!r}"}).encode())
                return
            self._answer(200, json.dumps({"messageId": message_id}).encode())
        else:
            self._answer(404, json.dumps({"error": f"no route {self.path}"}).encode())


def serve(relay: Relay, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the relay's HTTP server on a daemon thread; ``server.server_port`` is where it listens."""
    handler = type("RelayHandler", (_Handler,), {"relay": relay})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="backbeat-relay", daemon=True).start()
    return server
