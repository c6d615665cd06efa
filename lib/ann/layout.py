"""Byte layout of Annoy's ``.ann`` node records, per metric.

An ``.ann`` file is a flat array of equally sized node records (little endian, ``int32`` ids,
``float32`` values; ``uint64`` words for hamming). Records ``0..n_items-1`` are the items
(``n_descendants == 1``; an id never added is an all-zero "hole"), then the trees' split and leaf
nodes, then a copy of every tree root at the end. A node with ``n_descendants <= K`` stores the
list of its item ids where the ``children`` field starts (``K`` is how many ``int32`` fit from
there to the end of the record); a node with more descendants is a split: a hyperplane ``v``
(plus an offset ``a`` for euclidean/manhattan) and two children. Root records hold
``n_descendants == n_items`` (the largest id + 1), which is how a reader finds them.

Record layouts (offsets in bytes, ``f`` the dimension, ``w = ceil(f/64)``):

=========================  ======================================================  ==============
metric                     fields                                                  size
=========================  ======================================================  ==============
angular                    n_desc@0, children[2]@4 (items: squared norm@4), v@12    12 + 4f
euclidean, manhattan       n_desc@0, a@4, children[2]@8, v@16                      16 + 4f
dot, layout ``v1``         n_desc@0, children[2]@4, dot_factor@12, v@16            16 + 4f
dot, layout ``v2``         n_desc@0, children[2]@4, dot_factor@12, norm@16,        24 + 4f
                           built(uint8)@20, v@24
hamming                    n_desc@0, children[2]@4, v(uint64 words)@16             16 + 8w
=========================  ======================================================  ==============

``v1`` is the dot layout of every released annoy with the dot metric (1.13 .. 1.17.3, the PyPI
package); ``v2`` is the one annoy's development branch moved to after 1.17.3 (it adds the
preprocessed squared max-norm and a ``built`` flag to every node). Both answer queries the same
way: the distance is ``-dot(x, y)`` and the search margin ``dot(v, q)``.
"""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("angular", "euclidean", "manhattan", "dot", "hamming")
DOT_LAYOUTS = ("v1", "v2")


@dataclass(frozen=True)
class Layout:
    metric: str
    f: int  # dimension as the user sees it (bits for hamming)
    size: int  # bytes per node record
    off_children: int
    off_v: int
    off_a: int | None = None  # euclidean / manhattan plane offset
    off_norm: int | None = None  # angular: squared norm of items (shares children[0]); dot v2
    off_dot_factor: int | None = None
    off_built: int | None = None  # dot v2
    dot_layout: str | None = None

    @property
    def words(self) -> int:
        """Number of stored vector components (uint64 words for hamming, floats otherwise)."""
        return (self.f + 63) // 64 if self.metric == "hamming" else self.f

    @property
    def K(self) -> int:  # noqa: N802 - annoy's name
        """Largest leaf: how many int32 ids fit from ``children`` to the end of a record."""
        return (self.size - self.off_children) // 4


def layout_for(metric: str, f: int, dot_layout: str = "v1") -> Layout:
    """The record layout annoy uses for ``metric`` at dimension ``f``."""
    if metric == "angular":
        return Layout(metric, f, 12 + 4 * f, off_children=4, off_v=12, off_norm=4)
    if metric in ("euclidean", "manhattan"):
        return Layout(metric, f, 16 + 4 * f, off_children=8, off_v=16, off_a=4)
    if metric == "dot":
        if dot_layout == "v2":
            return Layout(metric, f, 24 + 4 * f, off_children=4, off_v=24, off_dot_factor=12, off_norm=16,
                          off_built=20, dot_layout="v2")
        return Layout(metric, f, 16 + 4 * f, off_children=4, off_v=16, off_dot_factor=12, dot_layout="v1")
    if metric == "hamming":
        w = (f + 63) // 64
        return Layout(metric, f, 16 + 8 * w, off_children=4, off_v=16)
    raise ValueError(metric)
