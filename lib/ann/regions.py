"""Backbeat's regions inside an annoy ``.ann`` file: what the neighbour graph (``graph.py``) and the
4-bit codes (``codes.py``) have in common.

A region is a run of whole records between the last tree node and the copies of the roots, its
last record a header whose first word (``n_descendants``) is 0 and whose second is the region's
magic. Annoy finds its roots by scanning back from the end of the file while ``n_descendants``
equals the item count, so the header stops that scan exactly where it stopped before, and annoy
never reaches the records before it. A file holds at most one region; its kind is the magic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from backbeat.ann.layout import Layout


def records(body: bytes, s: int, magic: int, word2: int, n_items: int, *extra: int) -> np.ndarray:
    """``body`` padded to whole records of ``s`` bytes, then the header record: 0, ``magic``,
    ``word2`` (version and a kind's own field), items, records of body, then the ``extra`` words."""
    m = -(-len(body) // s)
    out = np.zeros((m + 1) * s, np.uint8)
    out[: len(body)] = np.frombuffer(body, np.uint8)
    words = np.array([0, magic, word2, n_items, m, *extra], "<i4")
    out[m * s: m * s + 4 * len(words)] = words.view(np.uint8)
    return out


def splice(buf: np.ndarray, n_roots: int, s: int, make: Callable[[int], np.ndarray]) -> np.ndarray:
    """``buf`` (a built forest, bytes) with the region ``make(at)`` inserted before the root copies
    (``at``: the byte where the region will start)."""
    cut = buf.size - n_roots * s
    return np.concatenate([buf[:cut], make(cut), buf[cut:]])


def drop(raw: np.ndarray, s: int, start: int, records: int) -> np.ndarray:
    """``raw`` (bytes) without the region of ``records`` records from record ``start`` and its header."""
    return np.concatenate([raw[: start * s], raw[(start + records + 1) * s:]])


def header(i32: np.ndarray, layout: Layout, n_nodes: int, n_roots: int, n_items: int, magic: int,
           words: int) -> tuple[int, np.ndarray] | None:
    """``(record, its first words)`` of a header with ``magic`` just before the root copies, or None
    (no such header, records too small to hold ``words`` words, or no items)."""
    s4 = layout.size // 4
    h = n_nodes - n_roots - 1
    if layout.size < 4 * words or h < n_items or n_items == 0:
        return None
    head = i32[h * s4: h * s4 + words]
    if int(head[0]) != 0 or int(head[1]) != magic:
        return None
    return h, head
