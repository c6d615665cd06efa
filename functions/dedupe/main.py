"""dedupe (Pub/Sub ``hour-closed``): thin adapter over ``backbeat.delivery.dedupe`` and ``export``."""

import functions_framework

from backbeat.delivery import functions as delivery_functions


@functions_framework.cloud_event
def handle(event):  # noqa: ANN001, ANN201 - a cloudevents CloudEvent
    delivery_functions.on_hour_closed(event)
