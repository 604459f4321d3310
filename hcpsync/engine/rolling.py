"""The MD5 of a ranged file computed while it downloads.

Each time the ranges written so far extend the prefix already hashed, the new bytes are read
back (from the page cache, where they were just written) and hashed in a thread, in file order.
When the last part lands only what follows the hashed prefix is left, so a checked download no
longer waits for a whole-file read after its last byte: on a link slower than the CPUs, turning
verification on costs almost no wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import Sequence

from ..models import Part

#: bytes read back per ``preadv``, into one reused buffer per file being hashed (memory: this times
#: the ranged files in flight, beside concurrency x chunk size)
BLOCK = 256 * 1024


class RollingMd5:
    """``landed(start, end)`` as ranges land (on the loop), then ``await hexdigest()`` once all
    have; :meth:`close` when the file is given up.  Owns a duplicate of the temp file's fd."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = os.dup(fd)
        self._size = size
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._frontier = 0  # bytes hashed, or being hashed by the running task
        self._waiting: dict[int, int] = {}  # start -> end of ranges landed beyond the frontier
        self._task: asyncio.Future[None] | None = None
        self._stop = threading.Event()
        self._failed = False

    def landed(self, start: int, end: int) -> None:
        if end > start:
            self._waiting[start] = end
            self._kick()

    def _kick(self) -> None:
        if self._task is not None or self._fd is None or self._failed:
            return
        start = end = self._frontier
        while end in self._waiting:
            end = self._waiting.pop(end)
        if end > start:
            self._frontier = end
            self._task = asyncio.ensure_future(asyncio.to_thread(self._hash, self._fd, start, end))
            self._task.add_done_callback(self._hashed)

    def _hashed(self, task: asyncio.Future[None]) -> None:
        self._task = None
        if task.cancelled() or task.exception() is not None:
            self._failed = True  # the checker hashes the file itself
        if self._stop.is_set():
            self._close_fd()
            return
        self._kick()

    def _hash(self, fd: int, start: int, end: int) -> None:
        update, buf = self._md5.update, bytearray(BLOCK)
        view = memoryview(buf)
        while start < end and not self._stop.is_set():
            n = os.preadv(fd, [view[: min(BLOCK, end - start)]], start)
            if not n:
                raise OSError("the temp file is shorter than its landed ranges")
            update(view[:n])
            start += n

    async def hexdigest(self) -> str | None:
        """The file's MD5 once every byte is hashed; None when that cannot be (a read failed)."""
        while (task := self._task) is not None:
            if task.done():
                await asyncio.sleep(0)  # its done-callback (which may start the next range) runs first
            else:
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)
        if self._failed or self._stop.is_set() or self._frontier != self._size:
            return None
        return self._md5.hexdigest()

    def close(self) -> None:
        """Stop hashing; the fd is closed once no thread reads it."""
        self._stop.set()
        if self._task is None:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def outside(todo: Sequence[Part], size: int) -> list[tuple[int, int]]:
    """The ranges of ``[0, size)`` outside the parts still to fetch: those a resumed file already
    holds (:meth:`RollingMd5.landed` of each, before the first new byte)."""
    out, at = [], 0
    for part in sorted(todo, key=lambda p: p.start):
        if part.start > at:
            out.append((at, part.start))
        at = max(at, part.end)
    if at < size:
        out.append((at, size))
    return out
