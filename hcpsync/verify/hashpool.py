"""Hashing local files on every core: :class:`HashPool`, a thread pool for awaiting hashes.

hashlib releases the GIL while it hashes large buffers and reads are syscalls, so ``workers``
threads hash ``workers`` files at once.  Closing the pool (or cancelling an awaited hash) sets its
stop event: every hash in progress stops within a block (:class:`~.hashing.HashStopped`), and
queued ones never start.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from .hashing import HASH_BLOCK, md5_file

T = TypeVar("T")


def default_workers() -> int:
    """One hashing thread per CPU."""
    return os.cpu_count() or 1


class HashPool:
    """``workers`` threads hashing files (default: one per CPU); use as ``with HashPool() as pool``,
    then ``await pool.md5(path)`` from the event loop.  ``stop`` is set on :meth:`close` and on
    the cancellation of an awaited hash: blocking functions given to :meth:`run` watch it."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or default_workers())
        self.stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hcpsync-md5")

    async def md5(self, path: str | os.PathLike[str]) -> str:
        """Hex MD5 of the file at ``path`` (``OSError`` if it cannot be read)."""
        return await self.run(md5_file, Path(path), HASH_BLOCK, self.stop)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on one of the pool's threads."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except asyncio.CancelledError:
            self.stop.set()
            raise

    def close(self) -> None:
        """Stop every hash in progress and drop the queued ones; the threads end on their own."""
        self.stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> HashPool:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
