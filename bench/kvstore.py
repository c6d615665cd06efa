"""Key/value store benchmark: Backbeat (Sparkey format) against py-lmdb, dbm and sqlite3.

    python -m bench.kvstore            # 1,000,000 entries (16-byte keys, 100-byte values)
    python -m bench.kvstore --quick    # 100,000 entries

Every system stores the same pairs and then serves the same random keys, after one warm-up pass
over them (the page cache and the process's page tables are warm). Times are this process's CPU
time (``time.process_time``), so a busy shared machine does not add the time spent waiting for a
core; every system runs single-threaded, so CPU time is its latency. Ratios are against py-lmdb,
measured in the same run. Finally N reader processes map one store and their proportional set
size (PSS, from /proc/<pid>/smaps) is summed to show the store's pages are counted once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _data(n: int, seed: int = 1) -> tuple[list[bytes], list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    kb = rng.integers(0, 256, size=n * 16, dtype=np.uint8).tobytes()
    vb = rng.integers(0, 256, size=n * 100, dtype=np.uint8).tobytes()
    keys = [kb[i * 16 : i * 16 + 16] for i in range(n)]
    values = [vb[i * 100 : i * 100 + 100] for i in range(n)]
    queries = [keys[i] for i in rng.integers(0, n, size=n)]
    return keys, values, queries


def _time_gets(
    get: Callable[[bytes], object], queries: list[bytes], check: dict[bytes, bytes] | None
) -> float:
    for k in queries:  # warm-up pass
        get(k)
    start = time.process_time()
    for k in queries:
        get(k)
    elapsed = time.process_time() - start
    if check is not None:
        for k in queries[:1000]:
            assert bytes(get(k)) == check[k], "wrong value"  # type: ignore[arg-type]
    return elapsed / len(queries) * 1e6


def bench_backbeat(
    folder: Path,
    pairs: list[tuple[bytes, bytes]],
    queries: list[bytes],
    truth: dict,
    compression: str,
    block_size: int,
    pure: bool = False,
) -> dict:
    """``pure``: read the store written by the previous run with ``BACKBEAT_KVSTORE_PURE=1``."""
    from backbeat.kvstore import Reader, write_store

    log = folder / f"bb-{compression}.spl"
    write_s = float("nan")
    if not pure:
        start = time.process_time()
        write_store(pairs, log, compression=compression, block_size=block_size)
        write_s = time.process_time() - start
    os.environ["BACKBEAT_KVSTORE_PURE"] = "1" if pure else ""
    try:
        r = Reader(log.with_suffix(".spi"))
    finally:
        os.environ.pop("BACKBEAT_KVSTORE_PURE")
    with r:
        assert r.accelerated is not pure
        get_us = _time_gets(r.get, queries, truth)
        r.get_many(queries)
        start = time.process_time()
        values = r.get_many(queries)
        many = len(queries) / (time.process_time() - start)
        assert values[:1000] == [truth[k] for k in queries[:1000]]
    size = log.stat().st_size + log.with_suffix(".spi").stat().st_size
    label = f"backbeat {compression}" + (f" ({block_size} B blocks)" if compression != "none" else "")
    label += " (pure Python)" if pure else ""
    return {"system": label, "write_s": write_s, "get_us": get_us, "get_many_per_s": many, "bytes": size}


def bench_lmdb(folder: Path, pairs, queries, truth) -> dict:  # noqa: ANN001
    import lmdb

    path = folder / "lmdb"
    start = time.process_time()
    env = lmdb.open(str(path), map_size=1 << 34, writemap=True, sync=False, metasync=False)
    with env.begin(write=True) as txn:
        put = txn.put
        for k, v in pairs:
            put(k, v)
    env.sync(True)
    write_s = time.process_time() - start
    with env.begin(buffers=False) as txn:
        get_us = _time_gets(txn.get, queries, truth)

    def get_own_txn(k: bytes) -> bytes | None:
        with env.begin() as txn:
            return txn.get(k)

    own_us = _time_gets(get_own_txn, queries, truth)
    env.close()
    return {
        "system": "py-lmdb",
        "write_s": write_s,
        "get_us": get_us,
        "bytes": _du(path),
        "txn_per_get_us": own_us,
    }


def bench_dbm(folder: Path, pairs, queries, truth) -> dict:  # noqa: ANN001
    try:
        import dbm.gnu as mod

        name = "dbm.gnu (gdbm)"
    except ImportError:
        import dbm.dumb as mod  # type: ignore[no-redef]

        name = "dbm.dumb (no gdbm in this Python)"
    path = folder / "dbm"
    start = time.process_time()
    db = mod.open(str(path), "n")
    for k, v in pairs:
        db[k] = v
    db.close()
    write_s = time.process_time() - start
    db = mod.open(str(path), "r")
    get_us = _time_gets(db.__getitem__, queries, truth)
    db.close()
    return {"system": name, "write_s": write_s, "get_us": get_us, "bytes": _du(folder, prefix="dbm")}


def bench_sqlite(folder: Path, pairs, queries, truth) -> dict:  # noqa: ANN001
    path = folder / "kv.sqlite3"
    start = time.process_time()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
    con.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", pairs)
    con.commit()
    write_s = time.process_time() - start
    cur = con.cursor()
    stmt = "SELECT v FROM kv WHERE k = ?"

    def get(k: bytes) -> bytes | None:
        row = cur.execute(stmt, (k,)).fetchone()
        return row[0] if row else None

    get_us = _time_gets(get, queries, truth)
    con.close()
    return {"system": "sqlite3", "write_s": write_s, "get_us": get_us, "bytes": path.stat().st_size}


def _du(path: Path, prefix: str | None = None) -> int:
    if path.is_file():
        return path.stat().st_size
    files = path.iterdir() if prefix is None else (p for p in path.iterdir() if p.name.startswith(prefix))
    return sum(p.stat().st_blocks * 512 for p in files if p.is_file())


# ------------------------------------------------------------------------------------------ PSS
def _store_pss(paths: tuple[str, ...]) -> tuple[int, int]:
    """(Rss, Pss) in kB of this process's mappings of the given files."""
    rss = pss = 0
    current = False
    with open(f"/proc/{os.getpid()}/smaps") as fh:
        for line in fh:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                current = any(line.rstrip().endswith(p) for p in paths)
            elif current and first == "Rss:":
                rss += int(line.split()[1])
            elif current and first == "Pss:":
                pss += int(line.split()[1])
    return rss, pss


def _reader_process(index: str, log: str, touched, measure, done, out) -> None:  # noqa: ANN001
    from backbeat.kvstore import Reader

    r = Reader(index, log)
    for mm in (r._im, r._lm):  # touch every page, as a long-running server eventually does
        for off in range(0, len(mm), 4096):
            mm[off]
    touched.set()
    measure.wait(120)  # measure only once every reader has mapped every page
    with open(f"/proc/{os.getpid()}/smaps_rollup") as fh:
        total_pss = next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    out.put((*_store_pss((index, log)), total_pss))
    done.wait(60)


def measure_pss(index: Path, log: Path, n: int) -> dict:
    ctx = multiprocessing.get_context("spawn")  # fresh processes: no mappings inherited from this one
    out = ctx.Queue()
    measure = ctx.Event()
    done = ctx.Event()
    touched = [ctx.Event() for _ in range(n)]
    procs = [
        ctx.Process(target=_reader_process, args=(str(index), str(log), touched[i], measure, done, out))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for e in touched:
        e.wait(120)
    measure.set()
    rows = [out.get(timeout=60) for _ in procs]
    done.set()
    for p in procs:
        p.join(30)
    size_kb = (index.stat().st_size + log.stat().st_size) // 1024
    return {
        "readers": n,
        "store_mb": size_kb / 1024,
        "sum_rss_mb": sum(r[0] for r in rows) / 1024,
        "sum_pss_mb": sum(r[1] for r in rows) / 1024,
        "process_pss_mb": [round(r[2] / 1024, 1) for r in rows],
    }


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 entries instead of 1,000,000")
    parser.add_argument("--entries", type=int, default=0, help="override the number of entries")
    parser.add_argument("--block-size", type=int, default=1024, help="compression block size (default 1024)")
    parser.add_argument("--readers", type=int, default=4, help="reader processes for the PSS measurement")
    parser.add_argument(
        "--skip", action="append", default=[], help="skip a system: pure, lmdb, dbm, sqlite, zstd, snappy"
    )
    args = parser.parse_args(argv)
    n = args.entries or (100_000 if args.quick else 1_000_000)
    keys, values, queries = _data(n)
    pairs = list(zip(keys, values, strict=True))
    truth = dict(pairs)
    folder = Path(tempfile.mkdtemp(prefix="bench-kvstore-"))
    print(f"{n:,} entries, 16-byte keys, 100-byte values, {len(queries):,} random gets (warm), in {folder}")
    rows = []
    try:
        rows.append(bench_backbeat(folder, pairs, queries, truth, "none", 0))
        if "pure" not in args.skip:
            rows.append(bench_backbeat(folder, pairs, queries, truth, "none", 0, pure=True))
        for comp in ("snappy", "zstd"):
            if comp not in args.skip:
                rows.append(bench_backbeat(folder, pairs, queries, truth, comp, args.block_size))
        if "lmdb" not in args.skip:
            rows.append(bench_lmdb(folder, pairs, queries, truth))
        if "dbm" not in args.skip:
            rows.append(bench_dbm(folder, pairs, queries, truth))
        if "sqlite" not in args.skip:
            rows.append(bench_sqlite(folder, pairs, queries, truth))
        lmdb_row = next((r for r in rows if r["system"] == "py-lmdb"), None)
        print()
        print(f"{'system':36} {'write s':>8} {'get us':>8} {'vs lmdb':>8} {'get_many/s':>12} {'MB':>8}")
        for r in rows:
            ratio = f"{lmdb_row['get_us'] / r['get_us']:.2f}x" if lmdb_row else "-"
            many = f"{r['get_many_per_s']:,.0f}" if "get_many_per_s" in r else "-"
            write = "" if r["write_s"] != r["write_s"] else f"{r['write_s']:.2f}"  # nan: not written
            print(
                f"{r['system']:36} {write:>8} {r['get_us']:8.2f} {ratio:>8} {many:>12} "
                f"{r['bytes'] / 1e6:8.1f}"
            )
        if lmdb_row:
            print(f"{'py-lmdb, one read transaction per get':36} {'':8} {lmdb_row['txn_per_get_us']:8.2f}")
        print("(vs lmdb: py-lmdb get time (one long-lived read transaction) / this system's; > 1 is faster)")
        pss = measure_pss(folder / "bb-none.spi", folder / "bb-none.spl", args.readers)
        print()
        print(
            f"{pss['readers']} reader processes on one {pss['store_mb']:.1f} MB store (every page touched): "
            f"sum of RSS of the store mappings {pss['sum_rss_mb']:.1f} MB, "
            f"sum of PSS {pss['sum_pss_mb']:.1f} MB (= counted once); "
            f"whole-process PSS {pss['process_pss_mb']} MB"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
