"""Hashing local files on every core.

* :func:`hash_all`: ``verify``'s jobs, ``(relpath, path, size, work)`` with ``work(path, stop)``
  blocking (an MD5, or an ETag's first pass), on one pool of threads, largest first, with progress;
* :class:`HashPool`: a pool for awaiting hashes one at a time (``pull --checksum``).

hashlib releases the GIL while it hashes large buffers and reads are syscalls, so N threads hash N
files at once.  Setting a pool's stop event (Ctrl-C, a cancelled await, closing it) stops every
hash in progress within a block (:class:`~.hashing.HashStopped`); queued ones never start.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

from .hashing import HASH_BLOCK, HashStopped, md5_file

T = TypeVar("T")

VerifyProgress = Callable[[int, int, int, int], None]
"""``(files_done, files_total, bytes_done, bytes_total)`` of the hashing, from a worker thread."""


@dataclass(frozen=True, slots=True)
class HashJob(Generic[T]):
    relpath: str
    path: Path
    size: int
    work: Callable[[Path, threading.Event], T]


def _run_all(
    jobs: list[HashJob[T]], workers: int, on_done: Callable[[int], None], stop: threading.Event
) -> dict[str, T | OSError]:
    """relpath -> what its job gave (or the OSError reading it), in ``jobs`` order on ``workers``
    threads.  Setting ``stop`` abandons the work within a block per thread."""
    out: dict[str, T | OSError] = {}
    if not jobs:
        return out
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="hcpsync-md5") as pool:
        futures = {pool.submit(job.work, job.path, stop): job for job in jobs}
        try:
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    out[job.relpath] = fut.result()
                except OSError as exc:
                    out[job.relpath] = exc
                on_done(job.size)
        except HashStopped:
            for f in futures:
                f.cancel()
    return out


async def hash_all(jobs: list[HashJob[T]], workers: int, progress: VerifyProgress | None) -> dict[str, T | OSError]:
    """Run ``jobs`` (largest first) in worker threads, reporting ``progress``; Ctrl-C stops the threads."""
    jobs = sorted(jobs, key=lambda j: -j.size)  # so the big files' tails overlap the small ones
    total_bytes = sum(j.size for j in jobs)
    counter = [0, 0]

    def on_done(size: int) -> None:
        counter[0] += 1
        counter[1] += size
        if progress is not None:
            progress(counter[0], len(jobs), counter[1], total_bytes)

    stop = threading.Event()
    try:
        return await asyncio.to_thread(_run_all, jobs, workers, on_done, stop)
    except asyncio.CancelledError:  # Ctrl-C: the hashing threads stop within a block
        stop.set()
        raise



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
