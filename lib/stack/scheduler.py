"""The local stand-in for Cloud Scheduler: publishes a tick on ``tick.<function>`` per its cron.

Cloud Scheduler (as Terraform wires it) publishes a Pub/Sub message at each firing of the job's
cron, in UTC; the function is subscribed to that topic like any other topic trigger. Here a
daemon thread wakes at each minute boundary and publishes the same message. The tick's data is
JSON ``{"function": name, "scheduled_time": "YYYY-MM-DDTHH:MM:00Z"}`` with the same two keys as
attributes, so a handler can tell which minute it serves (and deduplicate a repeated tick).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from backbeat.stack.cron import Cron, parse_cron

log = logging.getLogger("backbeat.stack.scheduler")

Publish = Callable[[str, bytes, Mapping[str, str]], str]


def tick_topic(function: str) -> str:
    return f"tick.{function}"


def tick_message(function: str, when: datetime) -> tuple[bytes, dict[str, str]]:
    """Data and attributes of the tick for ``function`` at minute ``when``."""
    stamp = when.astimezone(UTC).replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:00Z")
    attrs = {"function": function, "scheduled_time": stamp}
    return json.dumps(attrs).encode(), attrs


class Scheduler:
    """Fires every schedule whose cron matches the current UTC minute, until :meth:`stop`."""

    def __init__(
        self, schedules: Mapping[str, str], publish: Publish, now: Callable[[], datetime] | None = None
    ):
        self.crons: dict[str, Cron] = {fn: parse_cron(expr) for fn, expr in schedules.items()}
        self.publish = publish
        self.now = now or (lambda: datetime.now(UTC))
        self.fired: list[tuple[str, str]] = []  # (function, scheduled_time), most recent last
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fire(self, function: str, when: datetime | None = None) -> str:
        """Publish one tick for ``function`` now (KeyError if it has no schedule)."""
        if function not in self.crons:
            raise KeyError(function)
        data, attrs = tick_message(function, when or self.now())
        message_id = self.publish(tick_topic(function), data, attrs)
        self.fired.append((function, attrs["scheduled_time"]))
        del self.fired[:-100]
        return message_id

    def run_minute(self, minute: datetime) -> list[str]:
        """Publish the ticks due at ``minute``; returns the functions ticked."""
        due = [fn for fn, cron in self.crons.items() if cron.matches(minute)]
        for fn in due:
            try:
                self.fire(fn, minute)
            except Exception as exc:  # keep ticking the others; the emulator may be restarting
                log.warning("tick for %s at %s failed: %s", fn, minute, exc)
        return due

    def _loop(self) -> None:
        last: datetime | None = None
        while not self._stop.is_set():
            now = self.now()
            minute = now.replace(second=0, microsecond=0)
            if minute != last:
                if last is not None:  # not the partial minute we started in
                    self.run_minute(minute)
                last = minute
            wait = (minute + timedelta(minutes=1) - now).total_seconds()
            self._stop.wait(max(0.05, min(wait, 5.0)))

    def start(self) -> None:
        if self.crons and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="backbeat-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
