"""A demo function: logs one line per CloudEvent it receives (smoke test of the wiring).

``backbeat up`` serves it on the ``echo`` topic; ``gcloud pubsub topics publish echo --message hi``
(with ``PUBSUB_EMULATOR_HOST`` exported) shows up in its log under ``.backbeat/stack/logs/``.
"""

from __future__ import annotations

import base64
import json
import logging

import functions_framework

from backbeat import __version__

log = logging.getLogger("echo")


@functions_framework.cloud_event
def handle(event) -> None:  # noqa: ANN001 - a cloudevents CloudEvent
    data = event.get_data()
    message = data.get("message", {}) if isinstance(data, dict) else {}
    payload = base64.b64decode(message["data"]).decode("utf-8", "replace") if message.get("data") else None
    print(
        json.dumps(
            {
                "backbeat": __version__,
                "id": event["id"],
                "type": event["type"],
                "source": event["source"],
                "payload": payload,
                "attributes": message.get("attributes", {}),
            }
        ),
        flush=True,
    )
