"""Fixtures of the event-delivery tests: a fresh ``local`` platform (directory blobs, SQLite
documents, SQLite bus) per test, with the delivery handlers wired the way the manifest wires them."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from backbeat.cloud import connect
from backbeat.delivery.config import DeliveryConfig
from backbeat.delivery.producer import Producer
from backbeat.delivery.registry import default_registry
from backbeat.delivery.service import Delivery
from backbeat.delivery.watermark import BacklogWatermark
from backbeat.settings import Settings

BUCKET = "events-test"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(backend="local", data_dir=tmp_path / "data", events_bucket=BUCKET)


@pytest.fixture
def platform(settings) -> Iterator:
    p = connect(settings)
    yield p
    p.close()


@pytest.fixture
def delivery(platform, settings) -> Delivery:
    d = Delivery.from_settings(platform, settings, config=DeliveryConfig(grace_s=60, lookback_hours=6))
    d.ensure_resources()
    return d


@pytest.fixture
def wired(delivery) -> Iterator[Delivery]:
    subs = delivery.wire_local()
    yield delivery
    for s in subs:
        s.close()


@pytest.fixture
def producer(platform) -> Producer:
    return Producer(
        platform.bus,
        default_registry(),
        watermark=BacklogWatermark(platform.documents),
        rng=random.Random(7),
        backoff_s=0.0,
    )
