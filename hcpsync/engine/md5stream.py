"""The MD5 of a single-GET object as it streams in, hashed off the event loop.

MD5 runs at ~0.7 GB/s on one core: hashed on the loop as chunks arrive, it takes most of the
loop's time on a small-file pull whose ETags are MD5s (as S3's are).  :class:`StreamMd5` hands
each chunk to one background thread per process instead, which hashes the streams in arrival
order (hashlib releases the GIL while it hashes), so the loop only queues a reference: chunks
are immutable ``bytes`` (or views of them) that nobody writes into afterwards.

Backpressure: at most :data:`MAX_PENDING` bytes wait for the thread; past that the loop waits for
it (as long as hashing them itself would have taken), so memory stays bounded when the network
outruns the hash.  Objects under :data:`INLINE_BELOW` bytes are hashed on the loop: for them
the hand-over (a queue put, a thread wake-up, the digest sent back) costs more than it saves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

#: objects smaller than this are hashed on the loop (one or two chunks: the hand-over costs more)
INLINE_BELOW = 128 * 1024
#: bytes queued for the hashing thread before the loop waits for it
MAX_PENDING = 32 * 1024 * 1024


class _Hasher:
    """The process's hashing thread: runs queued callables in order."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], Any, int]] = queue.SimpleQueue()
        self._room = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="hcpsync-stream-md5", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], arg: Any, nbytes: int = 0) -> None:
        if nbytes:
            with self._room:
                while self._pending > MAX_PENDING:
                    self._room.wait()
                self._pending += nbytes
        self._queue.put((fn, arg, nbytes))

    def _run(self) -> None:
        get = self._queue.get
        while True:
            fn, arg, nbytes = get()
            try:
                fn(arg)
            except BaseException:  # pragma: no cover - a hash update does not fail; a digest reports its own
                pass
            if nbytes:
                with self._room:
                    self._pending -= nbytes
                    self._room.notify()


_hasher: _Hasher | None = None
_lock = threading.Lock()


def _the_hasher() -> _Hasher:
    global _hasher
    h = _hasher
    if h is None or h.pid != os.getpid():  # none yet, or inherited over a fork (its thread is not)
        with _lock:
            if _hasher is None or _hasher.pid != os.getpid():
                _hasher = _Hasher()
            h = _hasher
    return h


class StreamMd5:
    """``update(chunk)`` as chunks arrive (on the loop), then ``await hexdigest()`` once."""

    __slots__ = ("_h", "_hasher")

    def __init__(self, size: int) -> None:
        self._h = hashlib.md5(usedforsecurity=False)
        self._hasher = _the_hasher() if size >= INLINE_BELOW else None

    def update(self, chunk: bytes | memoryview) -> None:
        hasher = self._hasher
        if hasher is None:
            self._h.update(chunk)
        else:
            hasher.submit(self._h.update, chunk, len(chunk))

    async def hexdigest(self) -> str:
        hasher = self._hasher
        if hasher is None:
            return self._h.hexdigest()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()

        def digest(h: Any) -> None:  # in the thread, after every queued update of this stream
            try:
                loop.call_soon_threadsafe(_resolve, fut, h.hexdigest())
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        hasher.submit(digest, self._h)
        return await fut


def _resolve(fut: asyncio.Future[str], value: str) -> None:
    if not fut.done():
        fut.set_result(value)
