"""A damaged tree link is refused with AnnFormatError before a compiled search follows it.

Without the check (links.py) a leaf id or a child index outside the file made the search read and
write outside the mapping (the process died with SIGSEGV), and a split looping back made it spin
forever; annoy itself has the same failure modes."""

from __future__ import annotations

import numpy as np
import pytest

from backbeat.ann import AnnFormatError, AnnIndex

from .conftest import METRICS, vectors


def _records(path) -> tuple[np.ndarray, AnnIndex]:
    index = AnnIndex(vectors("euclidean", 1).shape[1], "euclidean")
    index.load(path)
    words = np.fromfile(path, "<i4").reshape(-1, index.layout.size // 4)
    index.unload()
    return words, index


def _first(words: np.ndarray, n_items: int, K: int, split: bool) -> int:
    nd = words[:, 0]
    rows = np.arange(n_items, len(words))
    return int(rows[(nd[n_items:] > K) if split else ((nd[n_items:] > 1) & (nd[n_items:] <= K))][0])


@pytest.fixture
def plain(tmp_path):
    x = vectors("euclidean", 1_000)
    index = AnnIndex(x.shape[1], "euclidean")
    index.set_seed(3)
    index.add_items(x)
    index.build(5, graph=False)
    path = tmp_path / "plain.ann"
    index.save(path)
    return path, x


def _damage(path, tmp_path, change) -> str:
    words, index = _records(path)
    K, c = index.layout.K, index.layout.off_children // 4
    change(words, K, c)
    out = tmp_path / "damaged.ann"
    words.tofile(out)
    return str(out)


def _refused(path: str, x: np.ndarray, match: str) -> None:
    index = AnnIndex(x.shape[1], "euclidean")
    index.load(path)  # loading maps the file; the links are checked before the first search
    with pytest.raises(AnnFormatError, match=match) as exc:
        index.get_nns_by_vector(x[0], 10, search_k=300)
    assert path in str(exc.value)
    with pytest.raises(AnnFormatError, match=match):
        index.query(x[:5], 10, search_k=300)


def test_a_leaf_id_outside_the_items_is_refused(plain, tmp_path):
    path, x = plain

    def change(words, K, c):
        words[_first(words, len(x), K, split=False), c] = 1 << 28

    bad = _damage(path, tmp_path, change)
    _refused(bad, x, r"damaged tree: leaf \d+ lists item 268435456, outside 0..999")


def test_a_split_child_outside_the_file_is_refused(plain, tmp_path):
    path, x = plain

    def change(words, K, c):
        words[_first(words, len(x), K, split=True), c + 1] = -5

    bad = _damage(path, tmp_path, change)
    _refused(bad, x, r"damaged tree: split \d+ links to record -5, outside the file")


def test_a_split_looping_back_is_refused_not_followed_forever(plain, tmp_path):
    path, x = plain

    def change(words, K, c):
        top = last = _first(words, len(x), K, split=True)
        child = words[top, c]
        while words[child, 0] > K:  # down the first children to the deepest split on the way
            last, child = child, words[child, c]
        words[last, c] = top  # which now leads back up: a cycle

    _refused(_damage(path, tmp_path, change), x, r"damaged tree: node \d+ is reached twice")


def test_a_split_pointing_at_a_hole_is_refused(tmp_path):
    x = vectors("euclidean", 1_000)
    index = AnnIndex(x.shape[1], "euclidean")
    index.set_seed(3)
    for i in range(1_000):
        if i != 500:  # id 500 is a hole: its record is zero
            index.add_item(i, x[i])
    index.build(5, graph=False)
    path = tmp_path / "holes.ann"
    index.save(path)

    def change(words, K, c):
        words[_first(words, 1_000, K, split=True), c] = 500

    _refused(_damage(path, tmp_path, change), x, "a split links to record 500, which is not an item")


def test_the_graph_search_is_guarded_too(tmp_path):
    # the graph's walk is seeded from the trees: the same check stands before it
    x = vectors("euclidean", 4_000)
    index = AnnIndex(x.shape[1], "euclidean")
    index.set_seed(3)
    index.add_items(x)
    index.build(4, graph=True)
    path = tmp_path / "graph.ann"
    index.save(path)

    def change(words, K, c):
        words[_first(words, len(x), K, split=False), c] = 4_000

    bad = _damage(path, tmp_path, change)
    loaded = AnnIndex(x.shape[1], "euclidean")
    loaded.load(bad)
    assert loaded.has_graph
    with pytest.raises(AnnFormatError, match="lists item 4000, outside 0..3999"):
        loaded.query(x[:3], 10, search_k=500)


@pytest.mark.parametrize("metric", METRICS)
def test_files_annoy_wrote_pass_the_check(annoy_files, metric):
    path, x, present = annoy_files[metric]
    index = AnnIndex(x.shape[1], metric)
    index.load(path)
    index._check_links()  # holes, every metric's layout: no false alarm
    assert index.get_nns_by_vector(x[0], 3, search_k=100)


def test_hamming_numpy_search_is_guarded_too(tmp_path):
    # hamming has no compiled search: the numpy one (one query and batched) is checked the same way
    x = vectors("hamming", 1_000)
    index = AnnIndex(x.shape[1], "hamming")
    index.set_seed(3)
    index.add_items(x)
    index.build(5)
    path = tmp_path / "hamming.ann"
    index.save(path)
    lay = index.layout
    words = np.fromfile(path, "<i4").reshape(-1, lay.size // 4)
    words[_first(words, len(x), lay.K, split=False), lay.off_children // 4] = 1 << 28
    bad = tmp_path / "bad.ann"
    words.tofile(bad)
    loaded = AnnIndex(x.shape[1], "hamming")
    loaded.load(bad)
    with pytest.raises(AnnFormatError, match="lists item 268435456, outside 0..999"):
        loaded.get_nns_by_vector(x[0], 10, search_k=300)
    with pytest.raises(AnnFormatError, match="lists item 268435456, outside 0..999"):
        loaded.query(x[:3], 10, search_k=300)
