"""Benchmark of backbeat.dag against Luigi 3.8.1's local scheduler, in the same run.

    python -m bench.dag                 # Luigi at 1,000 and 2,000 tasks; backbeat up to 100,000
    python -m bench.dag --luigi-10k     # also Luigi at 10,000 tasks (about 15 minutes here)
    python -m bench.dag --quick         # small sizes, for a smoke run

Graph: a layered fan-in graph of no-op tasks: layers of ``width`` tasks, each task requiring two
tasks of the layer below, one root requiring the top layer. Each case runs in its own subprocess
(fresh interpreter, clean instance caches, its own peak RSS). Ratios are measured, never assumed;
anything extrapolated is printed as an estimate and labelled so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

WIDTH = 100


def _graph_backbeat(n: int):  # noqa: ANN202
    import backbeat.dag as dag

    class Layer(dag.Task):
        layer = dag.IntParameter()
        i = dag.IntParameter()

        def requires(self):  # noqa: ANN202
            if self.layer == 0:
                return []
            w = WIDTH
            return [Layer(self.layer - 1, self.i), Layer(self.layer - 1, (self.i + 1) % w)]

        def run(self) -> None:
            pass

    class Root(dag.Task):
        layers = dag.IntParameter()

        def requires(self):  # noqa: ANN202
            return [Layer(self.layers - 1, i) for i in range(WIDTH)]

        def run(self) -> None:
            pass

    return Root(layers=max(1, n // WIDTH))


def _graph_flat(n: int):  # noqa: ANN202
    import backbeat.dag as dag

    class Leaf(dag.Task):
        i = dag.IntParameter()

        def run(self) -> None:
            pass

    class Top(dag.Task):
        n = dag.IntParameter()

        def requires(self):  # noqa: ANN202
            return [Leaf(i) for i in range(self.n)]

        def run(self) -> None:
            pass

    return Top(n=n - 1)


def _graph_luigi(n: int):  # noqa: ANN202
    import luigi

    class Layer(luigi.Task):
        layer = luigi.IntParameter()
        i = luigi.IntParameter()

        def requires(self):  # noqa: ANN202
            if self.layer == 0:
                return []
            return [Layer(self.layer - 1, self.i), Layer(self.layer - 1, (self.i + 1) % WIDTH)]

        def complete(self) -> bool:
            return getattr(self, "_ran", False)

        def run(self) -> None:
            self._ran = True

    class Root(luigi.Task):
        layers = luigi.IntParameter()

        def requires(self):  # noqa: ANN202
            return [Layer(self.layers - 1, i) for i in range(WIDTH)]

        def complete(self) -> bool:
            return getattr(self, "_ran", False)

        def run(self) -> None:
            self._ran = True

    return Root(layers=max(1, n // WIDTH))


def case(engine: str, n: int, workers: int) -> dict:
    """One measurement, in this (fresh) process (imports done before the clock starts)."""
    if engine == "luigi":
        import luigi  # noqa: F401
    else:
        import backbeat.dag  # noqa: F401
    t0 = time.perf_counter()
    c0 = time.process_time()
    if engine == "luigi":
        import logging

        import luigi

        logging.getLogger("luigi-interface").setLevel(logging.WARNING)
        logging.getLogger("luigi").setLevel(logging.WARNING)
        root = _graph_luigi(n)
        ok = luigi.build([root], local_scheduler=True, workers=workers, log_level="WARNING")
        tasks = (max(1, n // WIDTH)) * WIDTH + 1
    else:
        import backbeat.dag as dag

        executor = "process" if engine == "backbeat-process" else "thread"
        root = _graph_flat(n) if engine == "backbeat-process" else _graph_backbeat(n)
        summary = dag.build([root], workers=workers, executor=executor)
        ok = summary.ok
        tasks = sum(summary.counts.values())
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "engine": engine,
        "n": n,
        "tasks": tasks,
        "workers": workers,
        "ok": bool(ok),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_bytes": rss,
    }


def _sub(engine: str, n: int, workers: int = 1) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.dag", "--case", engine, "--n", str(n), "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{engine} n={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--luigi-10k", action="store_true", help="also run Luigi at 10,000 tasks (~15 min)")
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.n, args.workers)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    load = os.getloadavg()[0]
    console.print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start (wall times suffer under load; "
        "CPU times much less)"
    )
    luigi_sizes = [200, 500] if args.quick else [1_000, 2_000] + ([10_000] if args.luigi_10k else [])
    bb_sizes = sorted(set(luigi_sizes + ([2_000] if args.quick else [10_000, 100_000])))
    rows: list[dict] = []
    with console.status("running cases…") as status:
        for n in luigi_sizes:
            status.update(f"luigi n={n}")
            rows.append(_sub("luigi", n))
        for n in bb_sizes:
            status.update(f"backbeat n={n}")
            rows.append(_sub("backbeat", n))
        proc_n = 500 if args.quick else 2_000
        for w in (1, 2):
            status.update(f"backbeat process pool n={proc_n} workers={w}")
            rows.append(_sub("backbeat-process", proc_n, w))

    table = Table(title="bench.dag: no-op tasks, layered fan-in graph (process rows: flat graph)")
    for col in ("engine", "tasks", "workers", "ok", "wall s", "CPU s", "per task (wall)", "peak RSS"):
        table.add_column(col, justify="right" if col not in ("engine",) else "left")
    for r in rows:
        table.add_row(
            r["engine"],
            f"{r['tasks']:,}",
            str(r["workers"]),
            str(r["ok"]),
            f"{r['seconds']:.3f}",
            f"{r['cpu_seconds']:.3f}",
            f"{r['seconds'] / r['tasks'] * 1e6:.1f} µs",
            f"{r['rss_bytes'] / 2**20:.0f} MiB",
        )
    console.print(table)

    by = {(r["engine"], r["n"]): r for r in rows}
    for n in luigi_sizes:
        lu, bb = by[("luigi", n)], by[("backbeat", n)]
        console.print(
            f"ratio at {lu['tasks']:,} tasks (measured): luigi {lu['seconds']:.2f} s / backbeat "
            f"{bb['seconds']:.3f} s = [bold]{lu['seconds'] / bb['seconds']:.0f}x[/bold] wall; CPU "
            f"{lu['cpu_seconds']:.2f} s / {bb['cpu_seconds']:.3f} s = "
            f"{lu['cpu_seconds'] / bb['cpu_seconds']:.0f}x"
        )
    if not args.luigi_10k and not args.quick and ("backbeat", 10_000) in by:
        a, b = by[("luigi", 1_000)], by[("luigi", 2_000)]
        bb = by[("backbeat", 10_000)]
        for key, label in (("cpu_seconds", "CPU"), ("seconds", "wall")):
            exponent = math.log(b[key] / a[key]) / math.log(b["tasks"] / a["tasks"])
            est = b[key] * (10_001 / b["tasks"]) ** exponent
            console.print(
                f"ESTIMATE, not measured ({label}; Luigi from its 1k->2k growth, n^{exponent:.2f}): "
                f"luigi ~{est:.0f} s at 10,001 tasks vs backbeat {bb[key]:.3f} s measured = "
                f"~{est / bb[key]:.0f}x. Run with --luigi-10k to measure it."
            )
    big = by.get(("backbeat", 100_000))
    if big:
        console.print(
            f"100,000 tasks: {big['seconds']:.2f} s wall, {big['cpu_seconds']:.2f} s CPU (goal < 5 s), "
            f"peak RSS {big['rss_bytes'] / 2**20:.0f} MiB (goal < 1024 MiB)"
        )
    for w in (1, 2):
        r = next(x for x in rows if x["engine"] == "backbeat-process" and x["workers"] == w)
        console.print(
            f"process pool, {w} worker(s): {r['seconds'] / r['tasks'] * 1e3:.3f} ms wall per task, "
            f"{r['seconds'] * w / r['tasks'] * 1e3:.3f} ms worker-time per task (goal < 2 ms)"
        )


if __name__ == "__main__":
    main()
