"""A GET's answer: the checks on its headers, and its body streamed under a low-speed floor."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..errors import BadResponseError, ObjectChangedError, RangeMismatchError, ShortReadError, TransientError
from .errors import map_exceptions, where

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class GetRequest:
    """What a GET asks for: ``[start, end)`` of the object (whole when ``start`` is 0 and ``end``
    None), pinned to ``etag`` when given; ``total`` is the object's planned size, when known."""

    bucket: str
    key: str
    start: int = 0
    end: int | None = None
    etag: str | None = None
    total: int | None = None

    @property
    def ranged(self) -> bool:
        return not (self.start == 0 and self.end is None)

    @property
    def where(self) -> str:
        return where(self.bucket, self.key)

    def headers(self) -> dict[str, str]:
        """The request's Range and If-Match headers."""
        headers: dict[str, str] = {}
        if self.ranged:
            headers["Range"] = f"bytes={self.start}-{'' if self.end is None else self.end - 1}"
        if self.etag:
            headers["If-Match"] = f'"{self.etag}"'
        return headers


class SpeedFloor:
    """curl's ``--speed-limit/--speed-time``: fails a body that arrives under ``limit`` bytes/s
    over ``period`` seconds of waiting on the network (time the caller spends elsewhere, on a
    bandwidth cap say, is not counted).  ``limit`` 0: never fails."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._waited = 0.0
        self._bytes = 0

    def add(self, waited: float, nbytes: int, where: str) -> None:
        if not self.limit:
            return
        self._waited += waited
        self._bytes += nbytes
        if self._waited < self.period:
            return
        rate = self._bytes / self._waited
        self._waited, self._bytes = 0.0, 0
        if rate < self.limit:
            raise TransientError(
                f"{where} arrives at {rate:.0f} B/s, under the low-speed limit of {self.limit} B/s "
                f"for {self.period:g} s (--low-speed-limit/--low-speed-time)"
            )


class S3Body:
    """The body of an aiohttp response being streamed (a :class:`~hcpsync.store.base.Body`).

    ``etag_is_md5`` is False when the object is encrypted with SSE-KMS or SSE-C: S3 documents
    that such an object's ETag is not the MD5 of its bytes, even when it has 32 hex digits.
    """

    def __init__(self, raw: Any, bucket: str, key: str, length: int, floor: SpeedFloor | None = None) -> None:
        self._raw = raw
        self._bucket = bucket
        self._key = key
        self.length = length
        self.received = 0
        self._floor = floor or SpeedFloor(0, 1.0)
        self.etag_is_md5 = not is_encrypted(raw.headers)

    async def chunks(self, size: int) -> AsyncIterator[bytes | memoryview]:
        """The body as aiohttp's parser buffered it: each buffer handed over as it is (``readchunk``;
        ``read(size)`` joins the buffers it spans into a new bytes), a larger one in ``size``
        memoryview slices.  Nothing is copied; the consumer must not keep a chunk past its use."""
        readchunk = self._raw.content.readchunk
        place = where(self._bucket, self._key)
        floor = self._floor
        with map_exceptions(self._bucket, self._key):
            while True:
                t0 = time.monotonic()
                data, _ = await readchunk()
                floor.add(time.monotonic() - t0, len(data), place)
                n = len(data)
                if not n:
                    break
                self.received += n
                if self.received > self.length:
                    raise RangeMismatchError(f"{place}: body longer than its headers said")
                if n <= size:
                    yield data
                else:
                    view = memoryview(data)
                    for i in range(0, n, size):
                        yield view[i : i + size]
        if self.received < self.length:
            raise ShortReadError(f"connection closed after {self.received} of {self.length} bytes of {place}")


def is_encrypted(headers: Any) -> bool:
    """Whether response headers say SSE-KMS (``aws:kms``, ``aws:kms:dsse``) or SSE-C."""
    sse = str(headers.get("x-amz-server-side-encryption", "")).lower()
    return sse.startswith("aws:kms") or "x-amz-server-side-encryption-customer-algorithm" in headers


def check_body_headers(headers: Any, where: str, expected: int | None) -> None:
    """Refuse answers that cannot carry the stored bytes as they are: no Content-Length
    (chunked), a body compressed in transit (Content-Encoding, and a length that is not the
    object's or range's), a weak ETag.  Each is a proxy or server misbehaving: another try
    would get the same, so :class:`BadResponseError` (not retried), with the true reason."""
    etag = str(headers.get("ETag", ""))
    if etag.startswith(("W/", "w/")):
        raise BadResponseError(f"{where}: weak ETag {etag[:60]}: a proxy is not serving the stored bytes")
    length = headers.get("Content-Length")
    if length is None or not str(length).strip().isdigit():
        how = "chunked transfer" if "chunked" in str(headers.get("Transfer-Encoding", "")).lower() else "none given"
        raise BadResponseError(f"{where}: the server sent no Content-Length ({how}); hcpsync needs the object's length")
    encoding = str(headers.get("Content-Encoding", "")).strip()
    if encoding.lower() not in ("", "identity") and expected is not None and int(length) != expected:
        raise BadResponseError(
            f"{where}: the body is compressed in transit (Content-Encoding: {encoding[:40]}, "
            f"{int(length)} bytes for {expected}); hcpsync needs the stored bytes"
        )


def check_answer(status: int, headers: Any, req: GetRequest) -> int:
    """Check a 2xx answer's headers against what was asked; return the body length to read."""
    start, end, total = req.start, req.end, req.total
    stop = end if end is not None else total
    check_body_headers(headers, req.where, stop - start if stop is not None else None)
    length = int(headers["Content-Length"])
    if req.ranged:
        if status != 206:
            raise RangeMismatchError(f"{req.where}: asked for a range, got the whole object")
        check_range(headers.get("Content-Range"), req)
        want = (end - start) if end is not None else length
    else:
        want = length
        if total is not None and length != total:
            raise ObjectChangedError(f"{req.where} is {length} bytes on the server, {total} were planned: it changed")
    if req.etag and headers.get("ETag", "").strip('"') not in ("", req.etag):
        raise ObjectChangedError(f"{req.where} changed on the server (ETag differs)")
    if length != want:
        raise RangeMismatchError(f"{req.where}: Content-Length {length}, expected {want}")
    return want


def check_range(header: str | None, req: GetRequest) -> None:
    """The answer's Content-Range is the range asked for, of an object of the planned size."""
    m = _CONTENT_RANGE.match(header or "")
    if not m:
        raise RangeMismatchError(f"{req.where}: missing or malformed Content-Range {header!r}")
    first, last, size = int(m.group(1)), int(m.group(2)), m.group(3)
    if req.total is not None and size != "*" and int(size) != req.total:
        raise ObjectChangedError(f"{req.where} is {size} bytes on the server, {req.total} were planned")
    if first != req.start or (req.end is not None and last != req.end - 1):
        raise RangeMismatchError(
            f"{req.where}: asked for bytes {req.start}-{'' if req.end is None else req.end - 1}, got {first}-{last}"
        )
