"""``AnnIndex``: Annoy's Python surface over Annoy-compatible ``.ann`` files, plus numpy additions.

Switching from annoy is an import change: the methods keep annoy's names, argument order and
return shapes. Differences are deliberate refusals where annoy silently misbehaves: a file whose
size does not fit the metric and dimension, NaN/infinite vectors, wrong vector lengths, negative
ids and queries before ``build``/``load`` each raise a typed :class:`~backbeat.ann.errors.AnnError`.

Speed: indexes of at least ``graph.MIN_ITEMS`` items are built with a neighbour graph stored inside
the file where annoy never looks (see ``backbeat.ann.graph``); queries then walk the graph from the
trees' leaves instead of collecting thousands of candidates. A forest built without a graph carries
the items' 4-bit codes instead (``backbeat.ann.codes``): annoy's candidates, ranked by their codes
first and only the best few on their float records. Files without either (every file annoy wrote)
are searched with annoy's own algorithm, candidate for candidate.
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backbeat.ann import graph as G
from backbeat.ann.errors import AnnArgumentError, AnnFormatError, AnnIdError, AnnStateError, AnnVectorError
from backbeat.ann.layout import DOT_LAYOUTS, METRICS, Layout, layout_for
from backbeat.ann.nodes import NodeViews, find_roots
from backbeat.ann.runners import CodedTreeRunner, GraphRunner, TreeRunner

QUERY_CHUNK = 64
_F32 = np.dtype(np.float32)  # an array's dtype is this very object when it is native float32


class AnnIndex:
    """A forest of random-projection trees, read from and written to annoy's file format."""

    def __init__(self, f: int, metric: str = "angular") -> None:
        if not isinstance(f, int | np.integer) or f <= 0:
            raise AnnVectorError(f"dimension f must be a positive integer, got {f!r}")
        if metric not in METRICS:
            raise AnnVectorError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.f = int(f)
        self.metric = metric
        self._layout = layout_for(metric, self.f)
        self._seed: int | None = None
        self._on_disk: Path | None = None
        self._reset()

    # ------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self._x: np.ndarray | None = None  # rows by id while adding
        self._present: np.ndarray | None = None
        self._n_added_max = 0
        self._views: NodeViews | None = None
        self._roots: list[int] = []
        self._n_items = 0
        self._mm: mmap.mmap | None = None
        self._buf: Any = None
        self._path: Path | None = None
        self._fast: dict[str, Any] | None = None
        self._graph: tuple[int, int, int] | None = None  # (first record, records, degree)
        self._use_graph = True
        self._gstate: dict[str, Any] | None = None
        self._codes: tuple[int, int] | None = None  # (first record, records) of a codes region
        self._use_codes = True
        self._local = threading.local()  # per thread: its compiled search (runners.py)
        self._links_ok = False  # the forest's links checked (links.py), once before the first search
        self._shape = (self.f,)

    @property
    def built(self) -> bool:
        return self._views is not None

    @property
    def layout(self) -> Layout:
        return self._layout

    def _require_built(self, what: str) -> NodeViews:
        if self._views is None:
            raise AnnStateError(f"{what}: the index is not built or loaded yet (call build() or load())")
        return self._views

    # ------------------------------------------------------------------------------ vectors
    def _as_vector(self, vector: Any, what: str) -> np.ndarray:
        if (type(vector) is np.ndarray and vector.dtype == np.float32 and vector.shape == (self.f,)
                and vector.flags.c_contiguous
                and self.metric != "hamming"):  # the common case, checked cheaply (one call per query)
            if math.isfinite(vector.dot(vector)):  # NaN and inf survive it (an overflow: full check)
                return vector
        try:
            v = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise AnnVectorError(f"{what}: not a numeric vector ({exc})") from None
        if v.ndim != 1 or v.shape[0] != self.f:
            raise AnnVectorError(f"{what}: vector has wrong length (expected {self.f}, got {v.shape})")
        if not np.isfinite(v).all():
            bad = int(np.flatnonzero(~np.isfinite(v))[0])
            raise AnnVectorError(f"{what}: vector holds NaN or infinite value at component {bad}")
        return self._encode(v[None, :])[0]

    def _encode(self, m: np.ndarray) -> np.ndarray:
        """Rows as stored: float32, or packed uint64 words for hamming (annoy: bit i set if > 0.5)."""
        if self.metric != "hamming":
            return m.astype(np.float32)
        words = self._layout.words
        bits = np.zeros((m.shape[0], words * 64), np.uint64)
        bits[:, : self.f] = m > 0.5
        shifts = np.arange(64, dtype=np.uint64)
        return (bits.reshape(m.shape[0], words, 64) << shifts).sum(axis=2, dtype=np.uint64)

    @staticmethod
    def _counts(n: Any, search_k: Any, what: str, least: int = 0) -> tuple[int, int]:
        """``n`` (at least ``least``) and ``search_k`` (-1: the default, or >= 0) as ints."""
        count = "n" if least == 0 else "k"
        for name, v in ((count, n), ("search_k", search_k)):
            if not isinstance(v, int | np.integer) or isinstance(v, bool):
                raise AnnArgumentError(f"{what}: {name} must be an integer, got {v!r}")
        n, search_k = int(n), int(search_k)
        if n < least:
            raise AnnArgumentError(f"{what}: {count} must be at least {least}, got {n}")
        if search_k < -1:
            raise AnnArgumentError(
                f"{what}: search_k must be -1 (the default: n x trees) or >= 0, got {search_k}")
        return n, search_k

    def _check_id(self, i: Any, what: str, building: bool = False) -> int:
        if not isinstance(i, int | np.integer) or isinstance(i, bool):
            raise AnnIdError(f"{what}: item id must be an integer, got {i!r}")
        i = int(i)
        if i < 0:
            raise AnnIdError(f"{what}: item id {i} is negative")
        if i >= 2**31 - 1:
            raise AnnIdError(f"{what}: item id {i} does not fit annoy's int32 ids")
        if not building and i >= self._n_items:
            raise AnnIdError(f"{what}: item id {i} is beyond the largest item id {self._n_items - 1}")
        return i

    # ------------------------------------------------------------------------------ adding
    def _grow(self, n: int) -> None:
        dtype = np.uint64 if self.metric == "hamming" else np.float32
        width = self._layout.words
        if self._x is None:
            cap = max(n, 1024)
            self._x = np.zeros((cap, width), dtype)
            self._present = np.zeros(cap, bool)
        elif n > self._x.shape[0]:
            cap = max(n, int(self._x.shape[0] * 1.5))
            x = np.zeros((cap, width), dtype)
            x[: self._x.shape[0]] = self._x
            p = np.zeros(cap, bool)
            p[: self._present.shape[0]] = self._present
            self._x, self._present = x, p

    def _check_adding(self, what: str) -> None:
        if self._views is not None:
            raise AnnStateError(f"{what}: can't add items to a built or loaded index (unload() first)")

    def add_item(self, i: int, vector: Sequence[float] | np.ndarray) -> None:
        """Add (or replace) item ``i``. Ids need not be contiguous: gaps become holes."""
        self._check_adding("add_item")
        i = self._check_id(i, "add_item", building=True)
        v = self._as_vector(vector, f"add_item({i})")
        self._grow(i + 1)
        self._x[i] = v
        self._present[i] = True
        self._n_added_max = max(self._n_added_max, i + 1)

    def add_items(self, matrix: np.ndarray, ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Add many items at once: rows of ``matrix`` get ``ids`` (default: after the last id)."""
        self._check_adding("add_items")
        m = np.asarray(matrix, dtype=np.float64 if self.metric == "hamming" else np.float32)
        if m.ndim != 2 or m.shape[1] != self.f:
            raise AnnVectorError(f"add_items: matrix must have shape (n, {self.f}), got {m.shape}")
        bad = ~np.isfinite(m).all(axis=1)
        if bad.any():
            raise AnnVectorError(f"add_items: row {int(np.flatnonzero(bad)[0])} holds NaN or infinite values")
        if ids is None:
            idx = np.arange(self._n_added_max, self._n_added_max + m.shape[0], dtype=np.int64)
        else:
            idx = np.asarray(ids, dtype=np.int64)
            if idx.shape != (m.shape[0],):
                got = idx.shape[0] if idx.ndim else 0
                raise AnnVectorError(f"add_items: {got} ids for {m.shape[0]} rows")
            if idx.size and idx.min() < 0:
                raise AnnIdError(f"add_items: item id {int(idx.min())} is negative")
        if not idx.size:
            return
        top = int(idx.max()) + 1
        self._grow(top)
        self._x[idx] = self._encode(m)
        self._present[idx] = True
        self._n_added_max = max(self._n_added_max, top)

    def set_seed(self, seed: int) -> None:
        """Seed the tree building (same seed, same items, same trees)."""
        self._seed = int(seed)

    def verbose(self, v: bool) -> bool:
        return True

    def on_disk_build(self, fn: str | os.PathLike[str]) -> bool:
        """Build straight into file ``fn`` (``save`` is then not needed), as annoy does."""
        self._on_disk = Path(fn)
        return True

    # ------------------------------------------------------------------------------ building
    def build(
        self, n_trees: int, n_jobs: int = -1, progress: Callable[[int, int], None] | None = None,
        *, graph: bool | None = None, graph_progress: Callable[[str], None] | None = None,
        codes: bool | None = None,
    ) -> bool:
        """Grow ``n_trees`` trees (``-1``: until the trees take as many nodes as the items), then the
        neighbour graph: ``graph=None`` builds it for indexes of at least ``graph.MIN_ITEMS`` items
        (angular, euclidean, manhattan, dot), ``True`` always (where the metric allows), ``False``
        never. A forest without a graph gets the items' 4-bit codes (``backbeat.ann.codes``: the tree
        search ranks its candidates by them first): ``codes=None`` from ``graph.MIN_ITEMS`` items,
        ``True`` always (where the metric and dimension allow), ``False`` never (a plain annoy
        forest, searched exactly as annoy searches it)."""
        from backbeat.ann import codes as C
        from backbeat.ann.build import build_forest, leaf_orders

        if self._views is not None:
            raise AnnStateError("build: the index is already built or loaded")
        if not isinstance(n_trees, int | np.integer) or (n_trees < 1 and n_trees != -1):
            raise AnnStateError(f"build: n_trees must be -1 or a positive integer, got {n_trees!r}")
        if not isinstance(n_jobs, int | np.integer) or (n_jobs < 1 and n_jobs != -1):
            raise AnnStateError(
                f"build: n_jobs must be -1 (one thread per CPU) or a positive integer, got {n_jobs!r}")
        n = self._n_added_max
        dtype = np.uint64 if self.metric == "hamming" else np.float32
        x = self._x[:n] if self._x is not None else np.zeros((0, self._layout.words), dtype)
        present = self._present[:n] if self._present is not None else np.zeros(0, bool)
        n_present = int(present.sum())
        if graph is True and not G.supported(self._layout):
            raise AnnStateError(f"build: no neighbour graph for metric {self.metric!r} with f={self.f}")
        if codes is True and not C.supported(self._layout):
            raise AnnStateError(f"build: no 4-bit codes for metric {self.metric!r} with f={self.f} "
                                f"(metrics {', '.join(C.CODE_METRICS)}, f >= {C.MIN_F})")
        want = G.supported(self._layout) and n_present >= 2 and (
            graph is True or (graph is None and n_present >= G.MIN_ITEMS))
        if want and codes is True:
            raise AnnStateError("build: codes=True is for forests without a graph (the graph carries "
                                "codes of its own); pass graph=False")
        coded = not want and C.supported(self._layout) and n_present >= 1 and (
            codes is True or (codes is None and n_present >= G.MIN_ITEMS))
        if want:
            buf, orders = build_forest(x, present, self._layout, int(n_trees), self._seed, progress,
                                       return_orders=True)
            views = NodeViews(buf, self._layout, buf.size // self._layout.size)
            roots, _ = find_roots(views)
            seed = 1 if self._seed is None else self._seed
            missing = G.GraphParams().init_trees - len(orders)
            if missing > 0:  # a small forest: grow a few more trees just for their leaf orders
                orders = orders + leaf_orders(x, present, self._layout, missing, seed + 1)
            adj, codes = G.build_graph_and_codes(x, present, orders, self._layout, seed=seed,
                                                 progress=graph_progress, n_jobs=int(n_jobs))
            buf = G.splice(buf, len(roots), self._layout, adj, codes)
        else:
            buf = build_forest(x, present, self._layout, int(n_trees), self._seed, progress)
            if coded:
                views = NodeViews(buf, self._layout, buf.size // self._layout.size)
                roots, _ = find_roots(views)
                buf = C.splice(buf, len(roots), self._layout, C.encode(x, present, self.metric))
        self._x = self._present = None
        if self._on_disk is not None:
            _write_atomic(self._on_disk, buf)
            self.load(self._on_disk)
        else:
            buf.setflags(write=False)  # like a mapped file: one compiled kernel serves both
            self._attach(buf, len(buf), None)
        return True

    def unbuild(self) -> bool:
        raise AnnStateError("unbuild: not supported; add the items to a new AnnIndex instead")

    # ------------------------------------------------------------------------------ files
    def save(self, fn: str | os.PathLike[str], prefault: bool = False) -> bool:
        """Write the index to ``fn`` (atomically) and serve it from there (mmap), like annoy."""
        views = self._require_built("save")
        path = Path(fn)
        if self._path is not None and self._path.resolve() == path.resolve():
            return True
        data = np.frombuffer(self._buf, np.uint8, count=views.n_nodes * self._layout.size)
        _write_atomic(path, data)
        self.unload()
        return self.load(path, prefault)

    def load(self, fn: str | os.PathLike[str], prefault: bool = False, dot_layout: str | None = None,
             graph: bool = True, codes: bool = True) -> bool:
        """Map file ``fn`` read-only (shared between processes). ``dot_layout`` forces ``v1``/``v2``
        for the dot metric; by default it is detected (see ``backbeat.ann.layout``). ``graph=False``
        ignores a neighbour graph in the file, ``codes=False`` the items' 4-bit codes: with neither,
        queries replay annoy's search exactly."""
        if self._views is not None:
            self.unload()
        path = Path(fn)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise AnnFormatError(f"{path}: can't open ({exc.strerror})") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise AnnFormatError(f"{path}: file is empty")
            layout = self._pick_layout(path, size, fd, dot_layout)
            flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if prefault else 0)
            mm = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._layout = layout
        try:
            self._attach(mm, size, path)
        except AnnFormatError as exc:
            self._reset()
            try:
                mm.close()
            except BufferError:  # views made before the check still point into the map
                pass
            raise AnnFormatError(f"{path}: {exc}") from None
        self._mm = mm
        self._use_graph = bool(graph)
        self._use_codes = bool(codes)
        return True

    def _pick_layout(self, path: Path, size: int, fd: int, dot_layout: str | None) -> Layout:
        if self.metric != "dot":
            layout = self._layout
            if size % layout.size:
                raise AnnFormatError(
                    f"{path}: size {size} bytes is not a multiple of the {layout.size}-byte node of metric "
                    f"{self.metric!r} with f={self.f}; was it written with another metric or dimension?")
            _check_structure(path, _read_tail(fd, size, layout), layout, size)
            return layout
        if dot_layout is not None and dot_layout not in DOT_LAYOUTS:
            raise AnnFormatError(f"dot_layout must be one of {DOT_LAYOUTS}, got {dot_layout!r}")
        names = [dot_layout] if dot_layout else list(DOT_LAYOUTS)
        fits = [layout_for("dot", self.f, n) for n in names if size % layout_for("dot", self.f, n).size == 0]
        if not fits:
            sizes = ", ".join(f"{n}: {layout_for('dot', self.f, n).size}" for n in names)
            raise AnnFormatError(
                f"{path}: size {size} bytes fits no dot node layout with f={self.f} (node bytes {sizes}); "
                "was it written with another metric or dimension?")
        if len(fits) > 1:  # both node sizes divide the file: v2 items carry a built flag and one norm
            try:
                _check_v2_items(fd, fits[1], size)
                fits = [fits[1]]
            except AnnFormatError:
                fits = [fits[0]]
        errors = []
        for layout in fits:
            try:
                _check_structure(path, _read_tail(fd, size, layout), layout, size)
                return layout
            except AnnFormatError as exc:
                errors.append(str(exc))
        raise AnnFormatError("; ".join(errors))

    def _attach(self, buf: Any, size: int, path: Path | None) -> None:
        n_nodes = size // self._layout.size
        views = NodeViews(buf, self._layout, n_nodes)
        roots, m = find_roots(views) if n_nodes else ([], 0)
        from backbeat.ann import graph as G

        i32 = np.frombuffer(buf, "<i4", count=n_nodes * self._layout.size // 4) if n_nodes else None
        self._graph = G.locate(i32, self._layout, n_nodes, len(roots), max(m, 0)) if n_nodes else None
        self._codes = None
        if n_nodes and self._graph is None:
            from backbeat.ann import codes as C

            self._codes = C.locate(i32, self._layout, n_nodes, len(roots), max(m, 0))
        self._views = views
        self._buf = buf
        self._roots = roots
        self._n_items = max(m, 0)
        self._path = path
        self._fast = None
        self._gstate = None
        self._local = threading.local()
        self._use_graph = True
        self._use_codes = True
        self._links_ok = False

    def unload(self) -> bool:
        """Drop the index (unmap the file)."""
        mm = self._mm
        self._reset()
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # numpy views handed out still point into the map
                pass
        return True

    # ------------------------------------------------------------------------------ queries
    def get_n_items(self) -> int:
        if self._views is None:
            return self._n_added_max
        return self._n_items

    def get_n_trees(self) -> int:
        return len(self._roots)

    def get_item_vector(self, i: int) -> list[float]:
        views = self._require_built("get_item_vector")
        i = self._check_id(i, "get_item_vector")
        return [float(x) for x in self._decode(views.v[i])]

    def _decode(self, row: np.ndarray) -> np.ndarray:
        if self.metric != "hamming":
            return np.asarray(row, np.float32)
        bits = (row[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        return bits.ravel()[: self.f].astype(np.float32)

    def get_distance(self, i: int, j: int) -> float:
        """Annoy's normalised distance between items ``i`` and ``j``."""
        from backbeat.ann.search import distances, normalise

        views = self._require_built("get_distance")
        i = self._check_id(i, "get_distance")
        j = self._check_id(j, "get_distance")
        q = np.asarray(views.v[i])
        q_norm = None
        if self.metric == "angular" and views.norm[i] != 0:
            q_norm = float(views.norm[i])
        d = distances(views, q, np.array([j]), q_norm)
        return float(normalise(self.metric, d)[0])

    def get_nns_by_item(self, i: int, n: int, search_k: int = -1, include_distances: bool = False) -> Any:
        """The ``n`` nearest items to item ``i`` (annoy's answer when the file has no graph)."""
        views = self._require_built("get_nns_by_item")
        i = self._check_id(i, "get_nns_by_item")
        n, search_k = self._counts(n, search_k, "get_nns_by_item")
        return self._exact(views, np.asarray(views.v[i]), n, search_k, include_distances)

    def get_nns_by_vector(
        self, vector: Any, n: int, search_k: int = -1, include_distances: bool = False
    ) -> Any:
        """The ``n`` nearest items to ``vector`` (annoy's answer when the file has no graph)."""
        run = getattr(self._local, "runner", None)
        if (run is not None and type(vector) is np.ndarray and vector.dtype is _F32  # the common call:
                and vector.shape == self._shape and vector.flags.c_contiguous  # nothing to convert
                and type(n) is int and type(search_k) is int and n > 0 and search_k >= -1):
            got = run.one(vector, n, search_k, include_distances)
            if got is not None:
                return got if include_distances else got[0]
        views = self._require_built("get_nns_by_vector")
        n, search_k = self._counts(n, search_k, "get_nns_by_vector")
        q = self._as_vector(vector, "get_nns_by_vector")
        return self._exact(views, q, n, search_k, include_distances)

    def _exact(self, views: NodeViews, q: np.ndarray, n: int, search_k: int, include_distances: bool) -> Any:
        """Annoy's search (or the graph's): compiled when numba is there, else the reference
        Python replay. ``n`` and ``search_k`` are ints already (``_counts``)."""
        run = self._runner() if n > 0 else None
        if run is not None:
            got = run.one(np.ascontiguousarray(q, dtype=np.float32), n, search_k)
            if got is None:  # _as_vector lets nothing non-finite through; a guard, not a path
                raise AnnVectorError("query vector holds NaN or infinite values")
            ids, dist = got
        else:
            from backbeat.ann.search import exact_nns

            self._check_links()
            ids, dist = exact_nns(views, self._roots, self._n_items, q, n, search_k)
        return (ids, dist) if include_distances else ids

    def _runner(self) -> Any:
        """This thread's compiled search (graph when the file has one and it is used, else the
        trees), made on first use; None for hamming or without numba."""
        run = getattr(self._local, "runner", None)
        if run is not None or self._views is None:
            return run
        gst = self._graph_state()
        if gst is not None:
            run = GraphRunner(gst["kernel"], gst["arrays"], gst["params"], self._n_items, len(self._roots),
                              self._layout.K)
        else:
            run = self._tree_runner()
            if run is None:
                return None
        self._check_links()
        self._local.runner = run
        return run

    def _tree_runner(self) -> TreeRunner | None:
        """This thread's compiled tree search, also where queries use the graph (``votes``)."""
        run = getattr(self._local, "trees", None)
        if run is None:
            st = self._compiled()
            if st is None:
                return None
            coded = self._coded_arrays()
            if coded is not None:
                run = CodedTreeRunner(st["arrays"], st["params"], self._n_items, st["holes"], *coded)
            else:
                run = TreeRunner(st["kernel"], st["arrays"], st["params"], self._n_items, st["holes"])
            self._check_links()
            self._local.trees = run
        return run

    def _coded_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The codes region's ``(codes, table)`` when the file has one and it is used."""
        if self._codes is None or not self._use_codes:
            return None
        from backbeat.ann import codes as C

        raw = np.frombuffer(self._buf, np.uint8, count=self._views.n_nodes * self._layout.size)
        try:
            return C.views(raw, self._layout, *self._codes, self._n_items)
        except AnnFormatError as exc:
            raise AnnFormatError(f"{self._path}: {exc}" if self._path else str(exc)) from None

    def _check_links(self) -> None:
        """The forest's links checked once per index (``links.check_trees``) before a search
        follows them: a damaged file raises ``AnnFormatError`` instead of crashing or hanging the
        process."""
        if self._links_ok:
            return
        try:
            from backbeat.ann.links import check_trees
        except ImportError:  # numba missing: the pure-Python search goes unchecked
            self._links_ok = True
            return
        i32 = np.frombuffer(self._buf, "<i4", count=self._views.n_nodes * self._layout.size // 4)
        try:
            check_trees(i32, self._layout, self._n_items, self._roots)
        except AnnFormatError as exc:
            raise AnnFormatError(f"{self._path}: {exc}" if self._path else str(exc)) from None
        self._links_ok = True

    def _fast_state(self) -> dict[str, Any]:
        if self._fast is None:
            views = self._views
            nd = views.ndesc
            n_items = self._n_items
            item_nd = np.asarray(nd[:n_items]) if n_items else np.zeros(0, np.int32)
            holes = bool((item_nd != 1).any()) or n_items <= views.K
            region = self._graph or self._codes
            end = region[0] if region is not None else views.n_nodes
            tree = np.asarray(nd[n_items:end])
            leaves = tree[(tree >= 1) & (tree <= views.K)]
            mean_leaf = float(leaves.mean()) if leaves.size else 1.0
            self._fast = {"holes": holes, "mean_leaf": max(mean_leaf, 1.0),
                          "roots": np.asarray(self._roots, dtype=np.int64),
                          "present": int(np.count_nonzero(item_nd == 1))}
        return self._fast

    def _compiled(self) -> dict[str, Any] | None:
        """Arguments of the compiled kernel (None when numba is missing or for hamming)."""
        st = self._fast
        if st is not None and "kernel" in st:
            return st if st["kernel"] is not None else None
        if self.metric == "hamming":
            return None
        st = self._fast_state()
        if "kernel" not in st:
            try:
                from backbeat.ann import _kernels
            except ImportError:  # numba not installed: numpy path
                st["kernel"] = None
                return None
            lay = self._layout
            raw = np.frombuffer(self._buf, np.uint8, count=self._views.n_nodes * lay.size)
            st["kernel"] = _kernels.search
            # the roots in descending id order, the order annoy pops them (all at priority +inf)
            st["arrays"] = (raw.view("<i4"), raw.view("<f4"), np.sort(st["roots"])[::-1].copy())
            st["params"] = np.array([
                lay.size // 4, lay.off_children // 4, lay.off_v // 4,
                lay.off_a // 4 if lay.off_a is not None else -1,
                lay.off_dot_factor // 4 if lay.off_dot_factor is not None else -1,
                lay.dot_layout == "v1", lay.K, self._n_items,
                {"angular": 0, "euclidean": 1, "manhattan": 2, "dot": 3}[self.metric], self.f,
                0, 0, 0, 0, 1,
                # search_k from which annoy collects every leaf slot (trees x items): exact answer
                max(len(self._roots) * st["present"], 1),
                # prefetching records costs more than it saves on a file the caches hold
                raw.shape[0] >= _kernels.PREFETCH_FROM,
            ], dtype=np.int64)
        return st if st["kernel"] is not None else None

    @property
    def has_graph(self) -> bool:
        """Whether the index carries a neighbour graph (and queries use it)."""
        return self._graph is not None and self._use_graph

    def _graph_state(self) -> dict[str, Any] | None:
        """Arguments of the compiled graph search, or None (no graph, ignored, or no numba)."""
        if self._graph is None or not self._use_graph or self._views is None:
            return None
        if self._gstate is None:
            try:
                from backbeat.ann import _graph_kernels
            except ImportError:  # numba missing: annoy's search on the trees
                self._gstate = {"kernel": None}
                return None
            lay = self._layout
            raw = np.frombuffer(self._buf, np.uint8, count=self._views.n_nodes * lay.size)
            start, records, degree = self._graph
            off, ids, codes, scale = G.lists(raw, lay, start, records, degree, self._n_items, self.f)
            self._gstate = {
                "kernel": _graph_kernels.search,
                "arrays": (raw.view("<i4"), raw.view("<f4"), off, ids, codes, scale,
                           np.asarray(self._roots[: G.SEED_TREES], dtype=np.int64)),
                "params": G.search_params(lay, self._n_items, self.metric, degree),
            }
        return self._gstate if self._gstate["kernel"] is not None else None

    def query(
        self, matrix: Any, k: int, search_k: int = -1, votes: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched search: ``(ids, distances)``, each of shape ``(n_queries, k)``; rows with fewer than
        ``k`` results are padded with id -1 and distance inf. A 1-d vector is one query.

        With a neighbour graph in the file (see ``backbeat.ann.graph``) every query walks the graph
        from the trees' first leaves; ``search_k`` keeps annoy's meaning of "about how many items to
        compare" (beam width ``search_k // 10``, default ``k * n_trees``). Without one (files annoy
        wrote, ``load(graph=False)``, hamming) the compiled kernel walks annoy's priority queue, so
        the same file and ``search_k`` give annoy's candidates (ranked by the items' 4-bit codes
        first where the file has them, see ``backbeat.ann.codes``); without numba a vectorised numpy
        beam search over all trees is used. ``votes=v`` (2 or 3, tree search only) ranks only ids met
        in at least ``v`` trees: fewer distance computations for a given ``search_k``."""
        views = self._views
        if views is None:
            raise AnnStateError("query: the index is not built or loaded yet (call build() or load())")
        m = matrix if isinstance(matrix, np.ndarray) and matrix.dtype == np.float32 else np.asarray(
            matrix, dtype=np.float32)
        if m.ndim == 1:
            m = m[None, :]
        if m.ndim != 2 or m.shape[1] != self.f:
            raise AnnVectorError(f"query: matrix must have shape (n, {self.f}), got {np.shape(matrix)}")
        if not np.isfinite(m).all():
            row = int(np.flatnonzero(~np.isfinite(m).all(axis=1))[0])
            raise AnnVectorError(f"query: row {row} holds NaN or infinite values (as float32)")
        k, search_k = self._counts(k, search_k, "query", least=1)
        if votes not in (1, 2, 3) or isinstance(votes, bool):
            raise AnnArgumentError(f"query: votes must be 1, 2 or 3, got {votes!r}")
        run = self._runner()
        if votes != 1 and isinstance(run, GraphRunner):  # votes count trees: the tree search
            run = self._tree_runner()
        if run is not None:
            ids, dist, _ = run.many(np.ascontiguousarray(m), k, search_k, votes)
            return ids, dist
        budget = k * max(len(self._roots), 1) if search_k == -1 else search_k
        return self._numpy_query(views, self._encode(m), k, budget)

    def _numpy_query(
        self, views: NodeViews, qs: np.ndarray, k: int, budget: int
    ) -> tuple[np.ndarray, np.ndarray]:
        from backbeat.ann.search import beam_query

        self._check_links()
        st = self._fast_state()
        n_leaves = max(len(self._roots), int(np.ceil(budget / st["mean_leaf"])))
        ids = np.empty((qs.shape[0], k), np.int64)
        dist = np.empty((qs.shape[0], k), np.float32)
        for c in range(0, qs.shape[0], QUERY_CHUNK):
            part = qs[c:c + QUERY_CHUNK]
            ids[c:c + QUERY_CHUNK], dist[c:c + QUERY_CHUNK] = beam_query(
                views, st["roots"], self._n_items, part, k, n_leaves, st["holes"])
        return ids, dist

    def info(self) -> dict[str, Any]:
        """What ``backbeat ann info`` shows."""
        views = self._require_built("info")
        return {
            "path": str(self._path) if self._path else None,
            "metric": self.metric,
            "f": self.f,
            "dot_layout": self._layout.dot_layout,
            "node_bytes": self._layout.size,
            "K": self._layout.K,
            "n_nodes": views.n_nodes,
            "n_items": self._n_items,
            "n_trees": len(self._roots),
            "bytes": views.n_nodes * self._layout.size,
            "graph": None if self._graph is None else {
                "degree": self._graph[2], "bytes": self._graph[1] * self._layout.size + self._layout.size,
                "used": self._use_graph},
            "codes": None if self._codes is None else {
                "bits": 4, "bytes": self._codes[1] * self._layout.size + self._layout.size,
                "used": self._use_codes},
        }

    def __enter__(self) -> AnnIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()


def _read_tail(fd: int, size: int, layout: Layout) -> tuple[int, np.ndarray]:
    """The node count and the ``n_descendants``/children of the last records (roots live there)."""
    n_nodes = size // layout.size
    want = min(n_nodes, 4096)
    data = os.pread(fd, want * layout.size, (n_nodes - want) * layout.size)
    return n_nodes, np.frombuffer(data, np.uint8).reshape(want, layout.size)


def _check_structure(path: Path, tail: tuple[int, np.ndarray], layout: Layout, size: int) -> None:
    """Refuse files whose roots are not annoy roots for this layout (wrong metric/dimension)."""
    n_nodes, rec = tail
    last = rec[-1]
    m = int(last[:4].view("<i4")[0])
    if m < 0 or m > n_nodes:
        raise AnnFormatError(
            f"{path}: last node (offset {size - layout.size}) claims {m} items but the file has only "
            f"{n_nodes} nodes of {layout.size} bytes (metric {layout.metric!r}, f={layout.f}"
            f"{', dot layout ' + layout.dot_layout if layout.dot_layout else ''}); "
            "wrong metric or dimension?")
    if m > layout.K:
        c = layout.off_children
        children = last[c:c + 8].view("<i4")
        if (children < 0).any() or (children >= n_nodes).any():
            raise AnnFormatError(
                f"{path}: root at offset {size - layout.size} points to children {children.tolist()} outside "
                f"the file's {n_nodes} nodes (metric {layout.metric!r}, f={layout.f}); "
                "wrong metric or dimension?")


def _check_v2_items(fd: int, layout: Layout, size: int) -> None:
    """Dot layout v2 marks items built (flag byte 1) and stores the same max norm in each."""
    n = min(size // layout.size, 64)
    rec = np.frombuffer(os.pread(fd, n * layout.size, 0), np.uint8).reshape(n, layout.size)
    items = rec[rec[:, :4].copy().view("<i4")[:, 0] == 1]
    flags = items[:, layout.off_built]
    norms = items[:, layout.off_norm:layout.off_norm + 4].copy().view("<f4")[:, 0]
    pad = items[:, layout.off_built + 1:layout.off_built + 4]
    if not items.size or (flags != 1).any() or (pad != 0).any() or len(set(norms.tolist())) != 1:
        raise AnnFormatError("not dot layout v2 (items lack the built flag and shared norm)")


def _write_atomic(path: Path, data: np.ndarray) -> None:
    """Write to a temporary file beside ``path`` and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(memoryview(np.ascontiguousarray(data)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
