"""close_bucket (scheduled, topic ``tick.close_bucket``): thin adapter over ``backbeat.delivery.close``."""

import functions_framework

from backbeat.delivery import functions as delivery_functions


@functions_framework.cloud_event
def handle(event):  # noqa: ANN001, ANN201 - a cloudevents CloudEvent
    delivery_functions.on_tick(event)
