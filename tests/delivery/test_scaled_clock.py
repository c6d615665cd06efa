"""The scaled bucket clock (``BACKBEAT_HOUR_SECONDS``): bucket naming, its inverse, and hours that
close and deduplicate end to end on the ``backbeat up`` stack when an "hour" lasts 15 real seconds."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from backbeat.cloud import connect
from backbeat.delivery import hours as H
from backbeat.delivery.config import DeliveryConfig
from backbeat.errors import ConfigError

from .helpers import assert_exactly_once
from .test_stack_e2e import (
    BUCKET,
    PROJECT,
    REG,
    Stack,
    _producer,
    delivery_manifest,
    require_emulators,
    run_cli,
)


@pytest.fixture
def scaled() -> Iterator[None]:
    H.set_hour_seconds(60)
    try:
        yield
    finally:
        H.set_hour_seconds(None)


def test_default_is_the_plain_utc_hour() -> None:
    t = datetime(2026, 3, 4, 5, 59, 59, tzinfo=UTC)
    assert H.hour_seconds() == 3600
    assert H.hour_key(t) == "2026-03-04T05"
    assert H.hour_end("2026-03-04T05") == datetime(2026, 3, 4, 6, tzinfo=UTC)
    assert H.final_prefix("play", "2026-03-04T05") == "final/play/dt=2026-03-04/hour=05/"


def test_scaled_buckets_are_named_by_virtual_hours_and_map_back(scaled) -> None:
    t = datetime(2026, 11, 27, 10, 23, 45, tzinfo=UTC)
    key = H.hour_key(t)
    minutes = int((t - H.SCALE_EPOCH).total_seconds()) // 60
    assert key == (H.SCALE_EPOCH + timedelta(hours=minutes)).strftime("%Y-%m-%dT%H")
    assert H.hour_start(key) == datetime(2026, 11, 27, 10, 23, tzinfo=UTC)
    assert H.hour_end(key) == datetime(2026, 11, 27, 10, 24, tzinfo=UTC)
    assert H.hour_key(H.hour_end(key)) == H.shift(key, 1) != key
    assert H.hour_key(H.hour_start(key) - timedelta(microseconds=1)) == H.shift(key, -1)
    start = H.key_time(key)
    assert H.final_prefix("play", key) == f"final/play/dt={start:%Y-%m-%d}/hour={start:%H}/"


def test_hour_seconds_setting_is_validated() -> None:
    assert DeliveryConfig.from_env({"BACKBEAT_HOUR_SECONDS": "60"}).hour_seconds == 60
    assert DeliveryConfig.from_env({}).hour_seconds == 3600
    for bad in ("abc", "5", "7200"):
        with pytest.raises(ConfigError, match="BACKBEAT_HOUR_SECONDS"):
            DeliveryConfig.from_env({"BACKBEAT_HOUR_SECONDS": bad})


HOUR_S = 15


@pytest.mark.e2e
@pytest.mark.emulators
@pytest.mark.slow
def test_scaled_hours_close_and_dedupe_on_the_stack(tmp_path) -> None:
    """Live events over three 15-second hours, 20% of the batches republished; close_bucket ticked
    through the relay every 2 s: every hour reaches _SUCCESS with nothing lost or duplicated."""
    require_emulators()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_EMULATOR_HOST") and not k.startswith("BACKBEAT_")
    }
    env.update(
        BACKBEAT_PROJECT=PROJECT,
        BACKBEAT_GRACE_S="2",
        BACKBEAT_HOUR_SECONDS=str(HOUR_S),
        BACKBEAT_EVENTS_BUCKET=BUCKET,
    )
    data_dir = tmp_path / "data"
    manifest = delivery_manifest(tmp_path / "manifest.yaml")
    up = run_cli(["up", "--manifest", str(manifest), "--data-dir", str(data_dir)], env)
    assert up.returncode == 0, f"backbeat up failed:\n{up.stdout}\n{up.stderr}"
    stop = threading.Event()
    saved = dict(os.environ)
    H.set_hour_seconds(HOUR_S)
    try:
        stack = Stack(data_dir, env)
        os.environ.update(stack.client_env)
        platform = connect(stack.settings)
        producer = _producer(platform, 5)
        producer.batch_size = 40
        rng = random.Random(5)
        schema = REG.latest("play")
        first = H.hour_key(datetime.now(UTC) + H.bucket_length())
        time.sleep(max(0.0, (H.hour_start(first) - datetime.now(UTC)).total_seconds()))
        hours = [H.shift(first, i) for i in range(3)]

        def ticker() -> None:
            while not stop.wait(2.0):
                try:
                    stack.tick()
                except OSError:
                    pass

        threading.Thread(target=ticker, daemon=True).start()
        from backbeat.delivery.synth import make_events

        sent: set[str] = set()
        republished = 0
        while datetime.now(UTC) < H.hour_end(hours[-1]) - timedelta(seconds=0.5):
            for env_ in producer.envelopes("play", make_events(schema, 80, rng=rng, start=datetime.now(UTC))):
                producer.publish_envelope(env_)
                sent.update(env_.event_ids)
                if rng.random() < 0.2:
                    producer.publish_envelope(producer.republish(env_))
                    republished += len(env_.event_ids)
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(platform.blobs.stat(BUCKET, H.success_name("play", h)) for h in hours):
                break
            time.sleep(0.5)
        check = assert_exactly_once(platform, BUCKET, {"play": sent})
        assert {h for (_, h) in check.successes} >= set(hours), "not every scaled hour reached _SUCCESS"
        assert republished > 0
        assert sum(s["duplicates"] for s in check.successes.values()) == republished
        platform.close()
    finally:
        stop.set()
        H.set_hour_seconds(None)
        os.environ.clear()
        os.environ.update(saved)
        down = run_cli(["down", "--data-dir", str(data_dir)], env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
