"""An in-memory :class:`hcpsync.store.ObjectStore`: fast unit tests of the planner and the pool
without moto, a network or a clock.

* objects: ``key -> (bytes, ETag)`` in one bucket (:meth:`FakeStore.put`, :meth:`FakeStore.change_etag`);
* listings in pages of ``page_size`` entries (objects and common prefixes together, as S3 counts);
* fault hooks, per key (a listing's key is its prefix): :meth:`FakeStore.fail` (the next N
  requests raise a given :class:`HcpsyncError`), :meth:`FakeStore.cut` (the next N bodies end
  short after K bytes, as a closed connection), :meth:`FakeStore.stall` (the next N bodies hang
  after K bytes until cancelled);
* :attr:`FakeStore.log` (every request, with its range) and :attr:`FakeStore.counts`.

The answers follow what :class:`hcpsync.store.S3Storage` makes of S3's: a GET pinned to an ETag
that no longer matches, or asking beyond the object's end, raises :class:`ObjectChangedError`;
an unknown key :class:`NoSuchKeyError`; a body cut short :class:`ShortReadError`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from hcpsync.errors import HcpsyncError, NoSuchBucketError, NoSuchKeyError, ObjectChangedError, ShortReadError, StorageError
from hcpsync.models import ObjectInfo
from hcpsync.store import StorageStats
from hcpsync.store.base import GET_BYTES_LIMIT


@dataclass(frozen=True)
class Request:
    """One request the fake answered (or refused): ``op`` is ``list``, ``head`` or ``get``."""

    op: str
    key: str  # the prefix, for a listing
    start: int = 0
    end: int | None = None
    etag: str | None = None


@dataclass
class _Fault:
    key: str
    times: int
    error: HcpsyncError | None = None  # raised in place of an answer
    after: int = 0  # the body ends (cut) or hangs (stall) after this many bytes
    stall: bool = False
    start: int | None = None  # only GETs of a range starting here


@dataclass
class _Object:
    data: bytes
    etag: str
    encrypted: bool = False  # SSE-KMS / SSE-C: the ETag is no MD5 (GETs and HEADs say so)
    part_size: int | None = None  # uploaded in parts of this size (HEAD ?partNumber=1 says)


class FakeBody:
    """The body of one GET: ``data``, ending short (or hanging) after ``fault.after`` bytes."""

    def __init__(self, store: FakeStore, req: Request, data: bytes, fault: _Fault | None) -> None:
        self._store = store
        self._req = req
        self._data = data
        self._fault = fault
        self.length = len(data)
        self.etag_is_md5 = True

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        stop = len(self._data) if self._fault is None else min(self._fault.after, len(self._data))
        for i in range(0, stop, size):
            await asyncio.sleep(0)  # a network read: let the other workers run
            yield self._data[i : min(i + size, stop)]
        if self._fault is None:
            return
        if self._fault.stall:
            self._store.stalled += 1
            self._store.stalled_event.set()
            await asyncio.Event().wait()  # until cancelled
        raise ShortReadError(f"connection closed after {stop} of {len(self._data)} bytes of {self._req.key}")


@dataclass
class FakeStore:
    """See the module's docstring.  ``bucket`` is the one bucket; other names are NoSuchBucket."""

    bucket: str = "fake-bucket"
    page_size: int = 1000
    objects: dict[str, _Object] = field(default_factory=dict)
    stats: StorageStats = field(default_factory=StorageStats)
    log: list[Request] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    stalled: int = 0
    stalled_event: asyncio.Event = field(default_factory=asyncio.Event)
    _faults: list[_Fault] = field(default_factory=list)

    # -- setting up ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes, etag: str | None = None, encrypted: bool = False,
            part_size: int | None = None) -> str:
        """Store ``key``; with ``part_size``, as a multipart upload would (its ETag ``<md5 of part md5s>-N``)."""
        if part_size is not None and etag is None:
            digests = [hashlib.md5(data[i:i + part_size], usedforsecurity=False).digest()
                       for i in range(0, max(len(data), 1), part_size)]
            etag = f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"
        etag = etag or hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.objects[key] = _Object(data, etag, encrypted, part_size)
        return etag

    def put_all(self, objects: dict[str, bytes]) -> None:
        for key, data in objects.items():
            self.put(key, data)

    def change_etag(self, key: str, etag: str = "0" * 32) -> None:
        """The object is replaced on the server (same bytes here, a new ETag)."""
        self.objects[key].etag = etag

    def fail(self, key: str, error: HcpsyncError, times: int = 1, start: int | None = None) -> None:
        """The next ``times`` requests for ``key`` (GETs of a range starting at ``start``) raise ``error``."""
        self._faults.append(_Fault(key, times, error=error, start=start))

    def cut(self, key: str, after: int, times: int = 1, start: int | None = None) -> None:
        """The next ``times`` bodies of ``key`` end after ``after`` bytes (:class:`ShortReadError`)."""
        self._faults.append(_Fault(key, times, after=after, start=start))

    def stall(self, key: str, after: int = 0, times: int = 1_000_000, start: int | None = None) -> None:
        """The next ``times`` bodies of ``key`` hang after ``after`` bytes, until cancelled."""
        self._faults.append(_Fault(key, times, after=after, stall=True, start=start))

    def gets(self, key: str) -> list[tuple[int, int | None]]:
        """The ranges of every GET of ``key``, in order."""
        return [(r.start, r.end) for r in self.log if r.op == "get" and r.key == key]

    # -- the ObjectStore protocol ---------------------------------------------------------------

    def _request(self, req: Request, bucket: str) -> _Fault | None:
        """Log ``req``; raise its error fault, or return its body fault (cut, stall), if any."""
        self.log.append(req)
        self.counts[req.op] += 1
        self.stats.requests += 1
        if bucket != self.bucket:
            raise NoSuchBucketError(f"bucket {bucket!r} does not exist")
        for fault in self._faults:
            if fault.key == req.key and fault.times > 0 and fault.start in (None, req.start):
                fault.times -= 1
                if fault.error is not None:
                    raise fault.error
                return fault
        return None

    async def list_pages(
        self, bucket: str, prefix: str, delimiter: str | None = None
    ) -> AsyncIterator[tuple[list[ObjectInfo], list[str]]]:
        entries: list[ObjectInfo | str] = []
        folders: set[str] = set()
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut < 0:
                entries.append(ObjectInfo(key, len(self.objects[key].data), self.objects[key].etag))
            elif key[: cut + 1] not in folders:
                folders.add(key[: cut + 1])
                entries.append(key[: cut + 1])
        for i in range(0, max(len(entries), 1), self.page_size):
            self._request(Request("list", prefix), bucket)
            page = entries[i : i + self.page_size]
            await asyncio.sleep(0)
            yield [e for e in page if isinstance(e, ObjectInfo)], [e for e in page if isinstance(e, str)]

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        self._request(Request("head", key), bucket)
        obj = self._object(key)
        return ObjectInfo(key, len(obj.data), obj.etag, obj.encrypted)

    async def part_size(self, bucket: str, key: str) -> int | None:
        self._request(Request("head", key), bucket)
        return self._object(key).part_size

    @asynccontextmanager
    async def get(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None, etag: str | None = None,
        total: int | None = None,
    ) -> AsyncIterator[FakeBody]:
        req = Request("get", key, start, end, etag)
        fault = self._request(req, bucket)
        await asyncio.sleep(0)
        obj = self._object(key)
        size = len(obj.data)
        if etag and etag != obj.etag:
            raise ObjectChangedError(f"s3://{bucket}/{key} changed on the server during the transfer (ETag no longer matches)")
        if (total is not None and total != size) or start > size or (end is not None and end > size):
            raise ObjectChangedError(f"s3://{bucket}/{key} is {size} bytes on the server, {total} were planned")
        body = FakeBody(self, req, obj.data[start : size if end is None else end], fault)
        body.etag_is_md5 = not obj.encrypted
        yield body

    async def get_bytes(self, bucket: str, key: str, limit: int = GET_BYTES_LIMIT) -> bytes:
        async with self.get(bucket, key) as body:
            if body.length > limit:
                raise StorageError(f"s3://{bucket}/{key} is {body.length} bytes, over the {limit} limit")
            return b"".join([c async for c in body.chunks(65536)])

    def _object(self, key: str) -> _Object:
        try:
            return self.objects[key]
        except KeyError:
            raise NoSuchKeyError(f"{key} does not exist") from None
