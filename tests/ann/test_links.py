"""A damaged tree link is refused with AnnFormatError before a search follows it.

Without the check (links.py) a leaf id or a child index outside the file made the compiled search
read and write outside the mapping (the process died with SIGSEGV), and a split looping back made
it spin forever."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from backbeat.ann import AnnFormatError, AnnIndex

from .conftest import METRICS, vectors


def _saved(tmp_path, metric: str = "euclidean", n: int = 1_000, trees: int = 5, graph: bool = False,
           hole: int | None = None) -> tuple[str, np.ndarray, Any]:
    """An index of ``n`` items (``hole``: one id left out) saved to a file: its path, the items,
    and its layout."""
    x = vectors(metric, n)
    index = AnnIndex(x.shape[1], metric)
    index.set_seed(3)
    for i in range(n):
        if i != hole:
            index.add_item(i, x[i])
    index.build(trees, graph=graph)
    path = tmp_path / f"{metric}.ann"
    index.save(path)
    return str(path), x, index.layout


def _first(words: np.ndarray, n_items: int, K: int, split: bool) -> int:
    nd = words[:, 0]
    rows = np.arange(n_items, len(words))
    return int(rows[(nd[n_items:] > K) if split else ((nd[n_items:] > 1) & (nd[n_items:] <= K))][0])


def _damage(path: str, layout: Any, tmp_path, change) -> str:
    """A copy of ``path`` after ``change(words, K, first child word)`` on its records."""
    words = np.fromfile(path, "<i4").reshape(-1, layout.size // 4)
    change(words, layout.K, layout.off_children // 4)
    out = tmp_path / "damaged.ann"
    words.tofile(out)
    return str(out)


def _refused(path: str, x: np.ndarray, match: str, metric: str = "euclidean") -> None:
    index = AnnIndex(x.shape[1], metric)
    index.load(path)  # loading maps the file; the links are checked before the first search
    with pytest.raises(AnnFormatError, match=match) as exc:
        index.get_nns_by_vector(x[0], 10, search_k=300)
    assert path in str(exc.value)
    with pytest.raises(AnnFormatError, match=match):
        index.query(x[:5], 10, search_k=300)


def test_a_leaf_id_outside_the_items_is_refused(tmp_path):
    path, x, layout = _saved(tmp_path)

    def change(words, K, c):
        words[_first(words, len(x), K, split=False), c] = 1 << 28

    bad = _damage(path, layout, tmp_path, change)
    _refused(bad, x, r"damaged tree: leaf \d+ lists item 268435456, outside 0..999")


def test_a_split_child_outside_the_file_is_refused(tmp_path):
    path, x, layout = _saved(tmp_path)

    def change(words, K, c):
        words[_first(words, len(x), K, split=True), c + 1] = -5

    bad = _damage(path, layout, tmp_path, change)
    _refused(bad, x, r"damaged tree: split \d+ links to record -5, outside the file")


def test_a_split_looping_back_is_refused_not_followed_forever(tmp_path):
    path, x, layout = _saved(tmp_path)

    def change(words, K, c):
        top = last = _first(words, len(x), K, split=True)
        child = words[top, c]
        while words[child, 0] > K:  # down the first children to the deepest split on the way
            last, child = child, words[child, c]
        words[last, c] = top  # which now leads back up: a cycle

    _refused(_damage(path, layout, tmp_path, change), x, r"damaged tree: node \d+ is reached twice")


def test_a_split_pointing_at_a_hole_is_refused(tmp_path):
    path, x, layout = _saved(tmp_path, hole=500)  # id 500's record is zero

    def change(words, K, c):
        words[_first(words, 1_000, K, split=True), c] = 500

    bad = _damage(path, layout, tmp_path, change)
    _refused(bad, x, "a split links to record 500, which is not an item")


def test_the_graph_search_is_guarded_too(tmp_path):
    # the graph's walk is seeded from the trees: the same check stands before it
    path, x, layout = _saved(tmp_path, n=4_000, trees=4, graph=True)

    def change(words, K, c):
        words[_first(words, len(x), K, split=False), c] = 4_000

    bad = _damage(path, layout, tmp_path, change)
    loaded = AnnIndex(x.shape[1], "euclidean")
    loaded.load(bad)
    assert loaded.has_graph
    with pytest.raises(AnnFormatError, match="lists item 4000, outside 0..3999"):
        loaded.query(x[:3], 10, search_k=500)


def test_hamming_numpy_search_is_guarded_too(tmp_path):
    # hamming has no compiled search: the numpy one (one query and batched) is checked the same way
    path, x, layout = _saved(tmp_path, metric="hamming")

    def change(words, K, c):
        words[_first(words, len(x), K, split=False), c] = 1 << 28

    bad = _damage(path, layout, tmp_path, change)
    _refused(bad, x, "lists item 268435456, outside 0..999", metric="hamming")


@pytest.mark.parametrize("metric", METRICS)
def test_files_annoy_wrote_pass_the_check(annoy_files, metric):
    path, x, present = annoy_files[metric]
    index = AnnIndex(x.shape[1], metric)
    index.load(path)
    index._check_links()  # holes, every metric's layout: no false alarm
    assert index.get_nns_by_vector(x[0], 3, search_k=100)
