"""Annoy-compatible nearest-neighbour indexes (``.ann`` files shared between processes by mmap).

``from backbeat.ann import AnnIndex`` is a drop-in for ``from annoy import AnnoyIndex`` with a
batched, numpy-native ``query(matrix, k, search_k)``. numpy is imported lazily by the modules
that need it, so importing this package stays cheap for a Cloud Function's cold start.
"""

from __future__ import annotations

from typing import Any

from backbeat.ann.errors import (
    AnnArgumentError,
    AnnError,
    AnnFormatError,
    AnnIdError,
    AnnStateError,
    AnnVectorError,
)

__all__ = ["AnnArgumentError", "AnnError", "AnnFormatError", "AnnIdError", "AnnIndex", "AnnStateError",
           "AnnVectorError"]


def __getattr__(name: str) -> Any:
    if name == "AnnIndex":
        from backbeat.ann.index import AnnIndex

        return AnnIndex
    raise AttributeError(name)
