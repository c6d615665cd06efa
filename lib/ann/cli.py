"""``backbeat ann``: build, query and inspect Annoy-compatible indexes from the command line.

``.ann`` files do not record their dimension or metric (annoy's format), so ``query`` and ``info``
take ``--f`` and ``--metric`` like ``AnnoyIndex(f, metric)`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

METRIC_HELP = "angular, euclidean, manhattan, dot or hamming."


@app.command("build")
def build(
    vectors: Path = typer.Argument(..., help="A .npy matrix (n x f); row i becomes item i."),
    out: Path = typer.Argument(..., help="The .ann file to write."),
    metric: str = typer.Option("angular", help=METRIC_HELP),
    trees: int = typer.Option(10, "--trees", "-t", help="Number of trees (-1: annoy's automatic count)."),
    seed: int = typer.Option(None, help="Random seed for reproducible trees."),
    graph: bool = typer.Option(None, "--graph/--no-graph",
                               help="Store a neighbour graph for fast queries (default: from 2,000 items)."),
    jobs: int = typer.Option(-1, "--jobs", "-j", help="Threads for the graph build (-1: one per CPU)."),
    codes: bool = typer.Option(None, "--codes/--no-codes",
                               help="Without a graph: store 4-bit codes of the items, which the tree search "
                                    "ranks its candidates by (default: from 2,000 items)."),
) -> None:
    """Build an index from a .npy matrix, with a progress bar per tree, then per graph step."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backbeat.ann import AnnIndex
    from backbeat.ann.errors import AnnVectorError

    try:
        x = np.load(vectors, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise AnnVectorError(f"{vectors}: not a readable .npy matrix ({exc})") from None
    if x.ndim != 2:
        raise AnnVectorError(f"{vectors}: expected a 2-d matrix, got shape {x.shape}")
    index = AnnIndex(int(x.shape[1]), metric)
    if seed is not None:
        index.set_seed(seed)
    index.add_items(np.asarray(x))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("building trees", total=trees if trees > 0 else None)
        step = progress.add_task("graph", total=None, visible=False)
        index.build(trees, jobs, graph=graph, codes=codes,
                    progress=lambda done, total: progress.update(task, completed=done),
                    graph_progress=lambda msg: progress.update(step, description=msg, visible=True))
    index.save(out)
    typer.echo(json.dumps(index.info()))


def _open(index: Path, f: int, metric: str):  # noqa: ANN202 - AnnIndex, imported lazily
    from backbeat.ann import AnnIndex

    ann = AnnIndex(f, metric)
    ann.load(index)
    return ann


@app.command("query")
def query(
    index: Path = typer.Argument(..., help="The .ann file."),
    f: int = typer.Option(..., "--f", help="Vector dimension the index was built with."),
    metric: str = typer.Option("angular", help=METRIC_HELP),
    item: int = typer.Option(None, help="Neighbours of this item id."),
    vector: str = typer.Option(None, help="Neighbours of this vector: comma separated numbers."),
    vectors: Path = typer.Option(None, help="Neighbours of every row of this .npy matrix (batched query)."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    search_k: int = typer.Option(-1, help="Candidates to inspect (-1: k x n_trees, annoy's default)."),
) -> None:
    """Print the nearest neighbours (one JSON line per query: ids and distances)."""
    import numpy as np

    from backbeat.errors import ConfigError

    if sum(x is not None for x in (item, vector, vectors)) != 1:
        raise ConfigError("give exactly one of --item, --vector, --vectors")
    ann = _open(index, f, metric)
    if item is not None:
        ids, dist = ann.get_nns_by_item(item, k, search_k, include_distances=True)
        typer.echo(json.dumps({"item": item, "ids": ids, "distances": dist}))
        return
    if vector is not None:
        try:
            v = [float(x) for x in vector.split(",")]
        except ValueError:
            raise ConfigError(f"--vector {vector!r}: not comma separated numbers") from None
        ids, dist = ann.get_nns_by_vector(v, k, search_k, include_distances=True)
        typer.echo(json.dumps({"ids": ids, "distances": dist}))
        return
    q = np.load(vectors)
    ids_m, dist_m = ann.query(q, k, search_k)
    for row, (ids_r, dist_r) in enumerate(zip(ids_m, dist_m, strict=True)):
        keep = ids_r >= 0
        typer.echo(json.dumps({"row": row, "ids": ids_r[keep].tolist(),
                               "distances": [float(d) for d in dist_r[keep]]}))


@app.command("info")
def info(
    index: Path = typer.Argument(..., help="The .ann file."),
    f: int = typer.Option(..., "--f", help="Vector dimension the index was built with."),
    metric: str = typer.Option("angular", help=METRIC_HELP),
) -> None:
    """Print the index's layout and counts as JSON (refuses files that do not fit f/metric)."""
    typer.echo(json.dumps(_open(index, f, metric).info(), indent=2))


@app.command("graph")
def graph(
    index: Path = typer.Argument(..., help="An .ann file annoy (or Backbeat without a graph, or with an "
                                 "older version 1 graph) wrote."),
    out: Path = typer.Argument(..., help="The new .ann file: the same trees plus a neighbour graph."),
    f: int = typer.Option(..., "--f", help="Vector dimension the index was built with."),
    metric: str = typer.Option("angular", help=METRIC_HELP),
    jobs: int = typer.Option(-1, "--jobs", "-j", help="Threads for the graph build (-1: one per CPU)."),
    seed: int = typer.Option(1, help="Random seed of the graph build."),
) -> None:
    """Add a neighbour graph to an existing index, or rewrite an older (version 1) graph as the
    current version without building it again (annoy still reads the new file as before)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from backbeat.ann.upgrade import add_graph

    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn()) as progress:
        step = progress.add_task("reading the index", total=None)
        result = add_graph(index, out, f, metric, n_jobs=jobs, seed=seed,
                           progress=lambda msg: progress.update(step, description=msg))
    typer.echo(json.dumps(result))
