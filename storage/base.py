"""The object-store contract shared by every backend.

Keys are validated with :func:`storage.keys.check_key` (prefixes with
:func:`storage.keys.check_prefix`) by every method before anything else
happens; a bad key raises :class:`InvalidKey` (also a ``ValueError``).
"""

from __future__ import annotations

from typing import ContextManager, Iterable, Iterator, Protocol, runtime_checkable

__all__ = [
    "StorageError",
    "ObjectNotFound",
    "InvalidKey",
    "ObjectStore",
    "READ_CHUNK_SIZE",
]

#: Size of the chunks yielded by ``ObjectStore.open``.
READ_CHUNK_SIZE = 1024 * 1024


class StorageError(Exception):
    """Base class of every error raised by a store (besides the caller's own
    exceptions, which propagate unchanged out of ``put``)."""


class ObjectNotFound(StorageError):
    """The key does not name an existing object."""


class InvalidKey(StorageError, ValueError):
    """The key (or prefix, key segment, account id, digest) is not acceptable."""


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key -> bytes store.

    Guarantees every backend gives:

    * ``put`` is streamed (memory use is bounded by the backend's buffer, not
      by the object size), atomic (a reader sees either the previous object or
      the complete new one, never a partial one), and durable once it
      returns.  If the chunk iterable raises, the exception propagates
      unchanged and neither a new object nor any temporary artefact is left
      (a previous object under the same key is kept).
    * ``open`` raises :class:`ObjectNotFound` when called (not on first
      ``next()``) and then yields the bytes lazily.
    * ``iter_keys`` yields keys in ascending (byte-wise lexicographic) order
      and never yields backend-internal names (temp files etc.).
    """

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of *chunks* under *key*; return its size."""
        ...

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` of the object in chunks of about 1 MiB.

        ``end=None`` means end of object; like slicing, ``end`` beyond the
        object is clamped and ``start`` beyond it gives nothing.  Negative
        ``start`` or ``end < start`` raise ``ValueError``.  Raises
        :class:`ObjectNotFound` immediately if the object does not exist.
        The returned iterator has a ``close()`` method; closing it early
        releases the underlying file/connection.
        """
        ...

    def size(self, key: str) -> int:
        """Size in bytes; :class:`ObjectNotFound` if missing."""
        ...

    def exists(self, key: str) -> bool:
        ...

    def delete(self, key: str) -> bool:
        """Remove the object; True if something was removed, False if it was
        already missing."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with *prefix* (plain string prefix, sorted)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with *prefix*; return the
        number removed.  An empty prefix is refused (InvalidKey) so that a
        bug cannot wipe the whole store."""
        ...

    def batch(self) -> ContextManager[None]:
        """A block whose puts (in this thread) may share their durability work:
        the filesystem fsyncs each directory once at the end of the block
        instead of once per object. An object put inside the block is durable
        only once the block has exited without an exception; if the end of
        the block raises :class:`StorageError`, none of its puts may be
        reported as stored. Blocks do not nest.
        """
        ...

    def describe(self) -> str:
        """Human-readable location, e.g. ``file:///srv/dicom`` or
        ``s3://bucket/prefix``; accepted back by ``open_store``."""
        ...


def check_range(start: int, end: int | None) -> None:
    """Validate an ``open`` range (shared by the backends)."""
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise ValueError(f"start must be a non-negative int, got {start!r}")
    if end is not None:
        if not isinstance(end, int) or isinstance(end, bool) or end < start:
            raise ValueError(f"end must be None or an int >= start ({start}), got {end!r}")


class ClosingIterator:
    """A chunk iterator that owns a resource: closed at exhaustion, on ``close()``,
    as a context manager, or at garbage collection. Subclasses define ``close``."""

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> "ClosingIterator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
