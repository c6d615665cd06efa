"""``recommend``: an HTTP function serving the recommendations the dag example pipeline published.

    GET ?user_id=user-0003&n=10   -> {"user_id", "version", "tracks": [{"track_id", "score"}, ...]}
    GET ?track_id=track-00001&n=5 -> {"track_id", "version", "similar": [{"track_id", "distance"}, ...]}
    POST (a Pub/Sub push body)    -> re-read recommend/LATEST now (204)

The files come from ``BACKBEAT_RECS_BUCKET`` (default ``backbeat-recs``) through the blobs port and
are cached per instance; all logic is in ``backbeat.dag.examples.serving``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import functions_framework

_lock = threading.Lock()
_service: Any = None


def service() -> Any:
    global _service
    with _lock:
        if _service is None:
            from backbeat.cloud import connect
            from backbeat.dag.examples.serving import RecommendationService
            from backbeat.settings import get_settings

            platform = connect(get_settings())
            bucket = os.environ.get("BACKBEAT_RECS_BUCKET", "backbeat-recs")
            cache = os.environ.get("BACKBEAT_RECS_CACHE", "/tmp/backbeat-recommend")
            _service = RecommendationService(platform.blobs, bucket, cache)
        return _service


def _reply(body: dict[str, Any], status: int = 200) -> tuple[str, int, dict[str, str]]:
    return json.dumps(body), status, {"Content-Type": "application/json"}


@functions_framework.http
def handle(request: Any) -> tuple[str, int, dict[str, str]]:
    from backbeat.dag.examples.serving import NotPublished, UnknownKey

    svc = service()
    if request.method == "POST":
        svc._checked = 0.0  # the next request re-reads the LATEST pointer
        return "", 204, {}
    args = request.args
    try:
        n = int(args.get("n", "10"))
    except ValueError:
        return _reply({"error": f"n={args.get('n')!r} is not an integer"}, 400)
    if not 1 <= n <= 100:
        return _reply({"error": "n must be between 1 and 100"}, 400)
    try:
        if args.get("user_id"):
            return _reply(svc.for_user(args["user_id"], n))
        if args.get("track_id"):
            return _reply(svc.similar(args["track_id"], n))
        return _reply({"error": "give user_id or track_id"}, 400)
    except UnknownKey as exc:
        return _reply({"error": str(exc)}, 404)
    except NotPublished as exc:
        return _reply({"error": str(exc)}, 503)
