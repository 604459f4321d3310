"""One part's GET streamed into its file: the loop shared by the in-process pool and the
worker processes.

A part is ``[start, end)`` of one object (a range, or the whole of a small object).  Its body
is written chunk by chunk at its offsets by a :data:`Sink`; a failed request is retried under
the :class:`~hcpsync.store.retry.RetryPolicy`, resuming from the last byte written.  What was
written so far, and its running CRC-32, live in a :class:`Got` the caller keeps, so a part cut
short (a clean stop, Ctrl-C) still says how far it got.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import HcpsyncError
from ..store.base import GetStore
from ..store.ratelimit import RateLimiter
from ..store.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class PartSpec:
    """What one part asks of the store: ``[start, end)`` of ``key`` (of planned size ``total``,
    pinned to ``etag``); ``ranged`` False for a small object fetched whole."""

    key: str
    etag: str | None
    total: int
    start: int
    end: int
    ranged: bool


@dataclass(slots=True)
class Got:
    """How far a part got: ``written`` bytes from its start, of CRC-32 ``crc`` (ranged parts),
    ``etag_is_md5`` False once an answer said SSE-KMS / SSE-C, ``retries`` made."""

    written: int = 0
    crc: int = 0
    etag_is_md5: bool = True
    retries: int = 0


#: writes one chunk at an absolute offset of the part's file (the fetcher keeps ``Got``: the
#: bytes written, and their CRC-32 for a ranged part)
Sink = Callable[[memoryview | bytes, int], None]


@dataclass(frozen=True, slots=True)
class Fetcher:
    """The store and the rules every part of one run is fetched under."""

    storage: GetStore
    bucket: str
    chunk_size: int
    retry: RetryPolicy
    limiter: RateLimiter | None = None

    async def fetch(self, spec: PartSpec, sink: Sink, got: Got, stopped: Callable[[], bool]) -> None:
        """Stream ``spec`` into ``sink``, retrying from ``got.written``.  Returns early, the part
        cut short, as soon as ``stopped()`` (another part of the file failed, the run stops)."""
        attempt = 0
        while True:
            try:
                await self._attempt(spec, sink, got, stopped)
                return
            except HcpsyncError as err:
                if not self.retry.should_retry(err, attempt) or stopped():
                    raise
                attempt += 1
                got.retries += 1
                await self.retry.pause(attempt, err)

    async def _attempt(self, spec: PartSpec, sink: Sink, got: Got, stopped: Callable[[], bool]) -> None:
        resumed = got.written > 0
        async with self.storage.get(
            self.bucket, spec.key, start=spec.start + got.written,
            end=spec.end if (spec.ranged or resumed) else None, etag=spec.etag, total=spec.total,
        ) as body:
            got.etag_is_md5 = got.etag_is_md5 and body.etag_is_md5
            limiter = self.limiter
            async for chunk in body.chunks(self.chunk_size):
                if stopped():
                    return
                if limiter is not None:
                    await limiter.acquire(len(chunk))
                sink(chunk, spec.start + got.written)
                if spec.ranged:
                    got.crc = zlib.crc32(chunk, got.crc)
                got.written += len(chunk)
