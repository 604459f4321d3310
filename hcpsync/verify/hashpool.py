"""``verify``'s hashing: every file's job on one pool of threads, largest first, with progress.

A job is ``(relpath, path, size, work)``; ``work(path, stop)`` is blocking (an MD5, or an
ETag's first pass) and raises ``OSError`` when the file cannot be read.  hashlib releases the
GIL on large buffers, so the threads hash on several cores at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from .hashing import HashStopped

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
