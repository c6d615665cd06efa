"""``backbeat events`` (types, publish) and ``backbeat hours`` (status, tick, dedupe).

They run against whatever backend the settings select. On ``local`` the commands attach the
delivery handlers to the in-process bus first (what the manifest's subscriptions do on Google
Cloud), so ``events publish`` ingests synchronously and ``hours tick`` runs dedupe before it
returns. On ``gcp`` (the emulator stack or a real project) they only publish / tick, and the
deployed functions do the rest.
"""

from __future__ import annotations

from pathlib import Path

import typer

events_app = typer.Typer(no_args_is_help=True, help="Event types and the producer: types, publish.")
hours_app = typer.Typer(no_args_is_help=True, help="Hourly buckets: status, tick, dedupe.")


def _open(wire: bool, *, dedupe: bool = True):
    from backbeat.cloud import connect
    from backbeat.delivery.service import Delivery
    from backbeat.settings import get_settings

    settings = get_settings()
    platform = connect(settings)
    delivery = Delivery.from_settings(platform, settings)
    subs = []
    if platform.backend == "local":
        if wire:
            subs = delivery.wire_local(dedupe=dedupe)
        else:
            delivery.ensure_resources()
    return platform, delivery, subs


def _close(platform, subs) -> None:
    for s in subs:
        s.close()
    platform.close()


@events_app.command("types")
def types() -> None:
    """List the registered event types, one per line."""
    from backbeat.delivery.registry import default_registry

    for t in default_registry().types():
        typer.echo(t)


@events_app.command("publish")
def publish(
    type_: str = typer.Option(..., "--type", help="Event type (see `backbeat events types`)."),
    count: int = typer.Option(..., "--count", min=1, help="Number of distinct events."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated stream (same seed = same event ids)."),
    duplicate_rate: float = typer.Option(
        0.0,
        "--duplicate-rate",
        min=0.0,
        max=1.0,
        help="Share of batches republished as new messages (same ids).",
    ),
    late_rate: float = typer.Option(
        0.0,
        "--late-rate",
        min=0.0,
        max=1.0,
        help="Share of events stamped one hour earlier (held back by the client).",
    ),
    ledger: Path | None = typer.Option(None, "--ledger", help="Write the acknowledged event ids here."),
    received_at: str | None = typer.Option(None, "--received-at", help="Edge time (ISO-8601); default now."),
    spread_s: float = typer.Option(0.0, "--spread-s", help="Spread received_at over this many seconds."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Events per message."),
    encoding: str = typer.Option("avro", "--encoding", help="avro | jsonl"),
    version: int | None = typer.Option(None, "--schema-version", help="Schema version (default latest)."),
) -> None:
    """Generate a realistic seeded stream and publish it through the producer library."""
    import random
    from datetime import UTC, datetime

    from rich.progress import Progress

    from backbeat.delivery.hours import parse_time
    from backbeat.delivery.producer import Producer
    from backbeat.delivery.synth import make_events
    from backbeat.delivery.watermark import BacklogWatermark

    platform, delivery, subs = _open(True, dedupe=False)
    try:
        schema = delivery.registry.get(type_, version)
        start = parse_time(received_at) if received_at else datetime.now(UTC)
        rng = random.Random(seed)
        events = make_events(schema, count, rng=rng, start=start, spread_s=spread_s, late_rate=late_rate)
        wm = BacklogWatermark(platform.documents) if delivery.config.watermark == "backlog" else None
        producer = Producer(
            platform.bus,
            delivery.registry,
            watermark=wm,
            batch_size=batch_size,
            encoding=encoding,
            rng=random.Random(seed + 1),
        )
        with Progress(transient=True) as progress:
            task = progress.add_task(f"publishing {type_}", total=count)
            report = producer.send(
                type_,
                events,
                version=version,
                duplicate_rate=duplicate_rate,
                progress=lambda n: progress.advance(task, n),
            )
        if platform.backend == "local":
            platform.bus.drain()
        if ledger:
            ledger.parent.mkdir(parents=True, exist_ok=True)
            ledger.write_text("".join(f"{i}\n" for i in report.acked_ids))
        typer.echo(
            f"published {report.events} {type_} events in {report.batches} batches "
            f"(+{report.republished} republished) to events.{type_}; acked ids: {len(report.acked_ids)}"
        )
    finally:
        _close(platform, subs)


@hours_app.command("status")
def status(
    now: str | None = typer.Option(None, "--now", help="Clock for the lag column (ISO-8601)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """Each type/hour: state, files, rows, dead letters, dedupe counts and lag."""
    import json

    from backbeat.delivery.hours import parse_time

    platform, delivery, subs = _open(False)
    try:
        rows = delivery.status(parse_time(now) if now else None)
    finally:
        _close(platform, subs)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hours in {delivery.bucket}")
    cols = ["type", "hour", "state", "files", "rows", "dead_letters", "rows_out", "duplicates", "lag_s"]
    for c in cols:
        table.add_column(c, justify="right" if c not in ("type", "hour", "state") else "left", no_wrap=True)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in cols])
    Console(width=max(Console().width, 130)).print(table)


@hours_app.command("tick")
def tick_cmd(
    now: str | None = typer.Option(None, "--now", help="Clock of this tick (ISO-8601); default now."),
) -> None:
    """Run one close_bucket tick: close every hour that may close (dedupe follows via the bus)."""
    from backbeat.delivery.dedupe import read_success
    from backbeat.delivery.hours import parse_time

    platform, delivery, subs = _open(True)
    try:
        report = delivery.tick(parse_time(now) if now else None)
        if platform.backend == "local":
            platform.bus.drain()
        for c in report.closed:
            line = (
                f"closed {c.event_type} {c.hour}: {c.files} files, {c.rows} rows, "
                f"{c.dead_letter_events} dead letters"
            )
            done = (
                read_success(platform, delivery.bucket, c.event_type, c.hour)
                if platform.backend == "local"
                else None
            )
            if done:
                line += (
                    f" -> deduped {done['rows_out']} rows ({done['duplicates']} duplicates, "
                    f"{done['skewed']} skewed)"
                )
            typer.echo(line)
        for t, h, why in report.waiting:
            typer.echo(f"waiting {t} {h}: {why}")
        if not report.closed and not report.waiting:
            typer.echo("nothing to close")
    finally:
        _close(platform, subs)


@hours_app.command("dedupe")
def dedupe_cmd(
    type_: str = typer.Option(..., "--type"),
    hour: str = typer.Option(..., "--hour", help="YYYY-MM-DDTHH"),
    engine: str | None = typer.Option(None, "--engine", help="function | spark (default by size)"),
) -> None:
    """(Re)run dedupe and export of one closed hour (a no-op when its _SUCCESS is current)."""
    platform, delivery, subs = _open(False)
    try:
        r = delivery.dedupe_and_export(type_, hour, force_engine=engine)
        d = r.dedupe
        typer.echo(
            f"{type_} {hour}: rows_in={d.rows_in} rows_out={d.rows_out} duplicates={d.duplicates} "
            f"skewed={d.skewed} engine={d.engine}{' (already done)' if d.rerun_noop else ''} "
            f"export={r.export}"
        )
    finally:
        _close(platform, subs)
