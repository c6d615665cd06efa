"""Typed errors of the key/value store.

Every failure caused by a file (wrong magic, a log that does not belong to the index, a cut-off
entry, a corrupt compressed block) is a :class:`CorruptFileError` that names the file and the byte
offset, so an operator can tell *which* copy of a store is damaged and where, instead of getting a
wrong value or a crash from deep inside a decoder.
"""

from __future__ import annotations

from backbeat.errors import BackbeatError


class KvStoreError(BackbeatError):
    """Base class of every error the key/value store raises on purpose."""


class CorruptFileError(KvStoreError):
    """A log or index file is damaged or is not a Sparkey file; names the file and the offset."""

    def __init__(self, path: object, offset: int | None, what: str) -> None:
        self.path = str(path)
        self.offset = offset
        self.what = what
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {what}")


class TruncatedFileError(CorruptFileError):
    """The file ends before an entry, block or header it announces."""


class FileMismatchError(CorruptFileError):
    """The index was built for another log (Sparkey's file identifier differs)."""


class UnsupportedFormatError(CorruptFileError):
    """A Sparkey version, compression type or hash size this implementation does not read."""


class StoreClosedError(KvStoreError):
    """The reader or writer was used after ``close()``."""


class PublishError(KvStoreError):
    """Publishing or fetching a store version failed (names the pointer or object)."""
