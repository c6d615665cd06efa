"""ingest (Pub/Sub ``events.<type>``) and ingest_dead_letters (``ingest-dead-letter``): thin adapters.

The logic is ``backbeat.delivery.ingest``; see docs/delivery.md.
"""

import functions_framework

from backbeat.delivery import functions as delivery_functions


@functions_framework.cloud_event
def handle(event):  # noqa: ANN001, ANN201 - a cloudevents CloudEvent
    delivery_functions.on_events(event)


@functions_framework.cloud_event
def handle_dead_letter(event):  # noqa: ANN001, ANN201
    delivery_functions.on_dead_letter(event)
