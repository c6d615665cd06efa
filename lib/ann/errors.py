"""Typed errors of the nearest-neighbour index: each names what is wrong and where."""

from __future__ import annotations

from backbeat.errors import BackbeatError


class AnnError(BackbeatError):
    """Base class of every error ``backbeat.ann`` raises on purpose."""


class AnnFormatError(AnnError):
    """A ``.ann`` file does not fit the dimension and metric it is opened with, or is corrupt."""


class AnnVectorError(AnnError, ValueError):
    """A vector has the wrong length or holds NaN or infinite values."""


class AnnIdError(AnnError, IndexError):
    """An item id is negative or beyond the largest id of the index."""


class AnnStateError(AnnError):
    """The call does not fit the index's state (query before build/load, add after build...)."""


class AnnArgumentError(AnnError, ValueError):
    """A count (``n``, ``k``, ``search_k``) is not an integer or out of its range: annoy takes a
    negative ``n`` or ``search_k`` below -1 as "everything" through an unsigned cast, or returns
    nothing; Backbeat says which argument is wrong."""
