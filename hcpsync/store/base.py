"""What the other stages see of storage: the :class:`ObjectStore` protocol and its :class:`Body`.

The planner lists, the pool GETs ranges, the API HEADs a changed object and the verifier fetches
manifests, all through these few methods.  :class:`~hcpsync.store.s3.S3Storage` is the real one;
``tests/fakestore.py`` is an in-memory one for fast unit tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from ..models import ObjectInfo

#: the most :meth:`ObjectStore.get_bytes` fetches by default (manifests are a few MiB at most)
GET_BYTES_LIMIT = 64 * 1024 * 1024


@dataclass
class StorageStats:
    """Request counters, for the pull report: every request sent, and those that were retries."""

    requests: int = 0
    retries: int = 0


class Body(Protocol):
    """A GET response body being streamed.

    ``length`` is the number of bytes the answer carries (the range's or the object's);
    ``etag_is_md5`` is False when the object's ETag is known not to be the MD5 of its bytes
    (SSE-KMS, SSE-C).  :meth:`chunks` yields the bytes (bytes or memoryviews), at most ``size`` at a
    time, and raises an :class:`~hcpsync.errors.HcpsyncError` when the body ends short or breaks.
    """

    @property
    def length(self) -> int: ...

    @property
    def etag_is_md5(self) -> bool: ...

    def chunks(self, size: int) -> AsyncIterator[bytes | memoryview]: ...


class GetStore(Protocol):
    """What fetching parts needs of a store (a worker process has only this)."""

    def get(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None, etag: str | None = None,
        total: int | None = None,
    ) -> AbstractAsyncContextManager[Body]:
        """GET ``[start, end)`` of an object (whole when ``start`` is 0 and ``end`` None), pinned to
        ``etag`` when given; ``total`` is the planned size, checked against the answer."""
        ...


class ObjectStore(GetStore, Protocol):
    """An opened object store.  Every method raises :class:`~hcpsync.errors.HcpsyncError` only."""

    @property
    def stats(self) -> StorageStats: ...

    def list_pages(
        self, bucket: str, prefix: str, delimiter: str | None = None
    ) -> AsyncIterator[tuple[list[ObjectInfo], list[str]]]:
        """Yield ``(objects, common_prefixes)`` one listing page at a time."""
        ...

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """The object's size and ETag now."""
        ...

    async def part_size(self, bucket: str, key: str) -> int | None:
        """Part 1's size of a multipart upload, when the store says (None otherwise)."""
        ...

    async def get_bytes(self, bucket: str, key: str, limit: int = GET_BYTES_LIMIT) -> bytes:
        """A small object whole; refuses one over ``limit`` bytes."""
        ...
