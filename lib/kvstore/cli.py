"""``backbeat kv``: inspect, query, dump, build and verify Sparkey stores.

A store is named by either of its files (``x.spi`` or ``x.spl``); the other is found beside it.
Heavy imports stay inside the commands so ``backbeat --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Sparkey-compatible key/value stores.")


def _pair(path: Path, log: Path | None = None) -> tuple[Path, Path]:
    if path.suffix == ".spl":
        return path.with_suffix(".spi"), log or path
    if path.suffix == ".spi":
        return path, log or path.with_suffix(".spl")
    return path.with_name(path.name + ".spi"), log or path.with_name(path.name + ".spl")


def _show(data: bytes, as_hex: bool) -> str:
    if as_hex:
        return data.hex()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _key(key: str, as_hex: bool) -> bytes:
    if as_hex:
        try:
            return bytes.fromhex(key)
        except ValueError:
            raise typer.BadParameter(f"{key!r} is not hex") from None
    return key.encode("utf-8")


@app.command()
def info(store: Path = typer.Argument(..., help="The .spi or .spl file.")) -> None:
    """Print the log and index headers."""
    from rich.console import Console
    from rich.table import Table

    from backbeat.kvstore.reader import Reader

    index, log = _pair(store)
    with Reader(index, log) as r:
        lh, hh = r._log.header, r.header
        t = Table(title=f"{index.name} + {log.name}", show_header=False)
        rows = [
            ("live entries", f"{hh.num_entries:,}"),
            ("puts / deletes", f"{lh.num_puts:,} / {lh.num_deletes:,}"),
            ("file identifier", f"{lh.file_identifier:08x}"),
            (
                "compression",
                f"{lh.compression}"
                + (f", {lh.compression_block_size} byte blocks" if lh.compression_type else ""),
            ),
            ("log size", f"{lh.data_end:,} bytes (garbage {hh.garbage_size:,})"),
            ("max key / value", f"{lh.max_key_len:,} / {lh.max_value_len:,} bytes"),
            ("hash", f"{hh.hash_size * 8}-bit MurmurHash3, seed {hh.hash_seed}"),
            ("slots", f"{hh.hash_capacity:,} x {hh.slot_size} bytes (address {hh.address_size})"),
            (
                "displacement",
                f"max {hh.max_displacement}, mean "
                f"{hh.total_displacement / max(1, hh.num_entries):.2f}, collisions {hh.hash_collisions}",
            ),
        ]
        for k, v in rows:
            t.add_row(k, v)
        Console().print(t)


@app.command()
def get(
    store: Path = typer.Argument(..., help="The .spi or .spl file."),
    key: str = typer.Argument(..., help="The key (UTF-8, or hex with --hex)."),
    hex_: bool = typer.Option(False, "--hex", help="Key given and value printed as hex."),
) -> None:
    """Print one value; exit status 1 when the key is absent."""
    from backbeat.kvstore.reader import Reader

    index, log = _pair(store)
    with Reader(index, log) as r:
        value = r.get(_key(key, hex_))
    if value is None:
        typer.secho(f"not found: {key}", err=True, fg="yellow")
        raise typer.Exit(1)
    typer.echo(_show(value, hex_))


@app.command()
def dump(
    store: Path = typer.Argument(..., help="The .spi or .spl file."),
    log_order: bool = typer.Option(
        False, "--log", help="Every log entry (puts and deletes), not only live pairs."
    ),
    limit: int = typer.Option(0, help="Stop after this many lines (0 = all)."),
    hex_: bool = typer.Option(False, "--hex", help="Print keys and values as hex."),
) -> None:
    """Print live pairs as ``key<TAB>value`` lines (``--log``: ``put|delete<TAB>key<TAB>value``)."""
    from backbeat.kvstore.reader import Reader

    index, log = _pair(store)
    out = sys.stdout
    with Reader(index, log) as r:
        rows = r.log_entries() if log_order else (("", k, v) for k, v in r.items())
        for n, (kind, k, v) in enumerate(rows, 1):
            parts = (
                ([kind] if log_order else []) + [_show(k, hex_)] + ([_show(v, hex_)] if v is not None else [])
            )
            out.write("\t".join(parts) + "\n")
            if limit and n >= limit:
                break


def _read_pairs(source: Path, fmt: str, hex_: bool):  # noqa: ANN202 - generator of pairs
    import json

    from backbeat.kvstore.errors import KvStoreError

    with open(source, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            if fmt == "jsonl":
                try:
                    obj = json.loads(line)
                    key, value = obj["key"], obj["value"]
                except (ValueError, KeyError, TypeError):
                    raise KvStoreError(f'{source}:{lineno}: expected {{"key": ..., "value": ...}}') from None
                yield (bytes.fromhex(key), bytes.fromhex(value)) if hex_ else (str(key), str(value))
            else:
                key, sep, value = line.partition(b"\t")
                if not sep:
                    raise KvStoreError(f"{source}:{lineno}: expected key<TAB>value")
                yield (bytes.fromhex(key.decode()), bytes.fromhex(value.decode())) if hex_ else (key, value)


@app.command()
def build(
    source: Path = typer.Argument(
        ..., help="Input: TSV (key<TAB>value) or JSON lines; with --index-only, a .spl log."
    ),
    output: Path = typer.Argument(None, help="The log to write (x.spl); the index goes beside it (x.spi)."),
    compression: str = typer.Option("none", help="none, snappy or zstd."),
    block_size: int = typer.Option(0, help="Compression block size in bytes (0 = 4096)."),
    hash_size: int = typer.Option(0, help="4 or 8 bytes (0 = automatic, like Sparkey)."),
    seed: int = typer.Option(None, help="Hash seed (default random)."),
    fmt: str = typer.Option("tsv", "--format", help="tsv or jsonl."),
    hex_: bool = typer.Option(False, "--hex", help="Keys and values in the input are hex."),
    method: str = typer.Option(
        "auto", help="Index builder: auto, exact (byte-identical to Sparkey) or fast."
    ),
    index_only: bool = typer.Option(
        False, "--index-only", help="Only (re)build the index of an existing log."
    ),
) -> None:
    """Build a store from a file (atomically: temp names, then rename), with a progress bar."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backbeat.kvstore.index import build_index
    from backbeat.kvstore.store import write_store

    start = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        if index_only:
            task = bar.add_task("indexing", total=None)
            index, log = _pair(source)
            header = build_index(
                log,
                index,
                hash_size=hash_size,
                seed=seed,
                method=method,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        else:
            if output is None:
                raise typer.BadParameter("give the output log path (x.spl)")
            if fmt not in ("tsv", "jsonl"):
                raise typer.BadParameter("--format must be tsv or jsonl")
            index, log = _pair(output)
            size = source.stat().st_size
            task = bar.add_task("reading input", total=size)
            counted = _counting(_read_pairs(source, fmt, hex_), lambda n: bar.update(task, completed=n))
            header = write_store(
                counted,
                log,
                index,
                compression=compression,
                block_size=block_size,
                hash_size=hash_size,
                seed=seed,
                method=method,
                progress=lambda done, total: bar.update(
                    task, description="indexing", completed=done, total=total
                ),
            )
    typer.echo(
        f"{log} + {index}: {header.num_entries:,} entries, {header.hash_capacity:,} slots, "
        f"{time.perf_counter() - start:.2f} s"
    )


def _counting(pairs, report):  # noqa: ANN001, ANN202 - progress by input bytes, roughly
    done = 0
    for n, (k, v) in enumerate(pairs, 1):
        done += len(k) + len(v) + 2
        if not n & 0x3FFF:
            report(done)
        yield k, v


@app.command()
def verify(store: Path = typer.Argument(..., help="The .spi or .spl file.")) -> None:
    """Check every log entry and index slot; exit 1 with the file and offset of the first problem."""
    from rich.progress import Progress

    from backbeat.kvstore.verify import verify_store

    index, log = _pair(store)
    with Progress(transient=True) as bar:
        task = bar.add_task("verifying", total=None)
        figures = verify_store(index, log, progress=lambda d, t: bar.update(task, completed=d, total=t))
    typer.echo("ok: " + ", ".join(f"{k}={v:,}" for k, v in figures.items()))
