"""The transfer pool: bounded-concurrency workers that move parts from S3 to disk.

The unit of work is a :class:`~hcpsync.models.Part`: one GET of a byte range of one
object (a small object is one part fetched without a Range header).  ``concurrency``
workers pull parts from one lazy generator, so the bound on requests in flight is global
across all files, and one large file's ranges run side by side.

Each part streams its body in ``chunk_size`` pieces written with ``pwrite`` at their offset
into ``<final>.hcpsync-part``, preallocated for ranged files; when every part of a file is
in, the file is checked (size, then the observer's checks such as MD5) and renamed to its
final path.  A failed or cancelled file never appears at its final path.

Hooks for the journal and the verifier live in :class:`TransferObserver`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import zlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TransferConfig
from ..errors import (
    DiskFullError,
    HcpsyncError,
    LocalIOError,
    ObjectChangedError,
    UnsafePathError,
    VerificationError,
)
from ..models import Failure, Part, PlannedObject
from ..paths import DestGuard, fold_name, is_complete_file, temp_path_for
from ..store.ratelimit import RateLimiter
from ..store.retry import pause, should_retry
from ..store.s3 import S3Storage
from .progress import Progress

_O_OPEN = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_O_CREATE = _O_OPEN | os.O_CREAT | os.O_EXCL

#: the workers give the event loop a turn after this many objects that needed no request
#: (skipped as complete, or failed before any): a re-run over 100k complete files answers Ctrl-C
YIELD_EVERY = 64

#: what the parts generator yields: a part to fetch, ``(job, None)`` for "finish job" (no GET
#: left), or None for an object done without a request
_Item = tuple["_FileJob", Part | None] | None


class TransferObserver:
    """Hooks around the pool; the defaults keep no state (a plain pull).

    The journal overrides :meth:`resume_ranges`, :meth:`part_done`, :meth:`file_done` and
    ``keep_partial``; the verifier overrides :meth:`wants_md5` and :meth:`check_file`.
    """

    #: keep temp files of failed/cancelled files so a later run can resume them
    keep_partial: bool = False

    def resume_ranges(self, obj: PlannedObject, temp: Path) -> list[tuple[int, int]]:
        """Byte ranges ``[start, end)`` of ``obj`` already in ``temp`` from an earlier run."""
        return []

    def wants_md5(self, obj: PlannedObject) -> bool:
        """Whether to hash a single-GET object's stream as it arrives."""
        return False

    async def check_file(self, obj: PlannedObject, temp: Path, streamed_md5: str | None) -> None:
        """Called when every byte of ``obj`` is in ``temp``, before the rename.  Raise to reject."""

    def etag_not_md5(self, obj: PlannedObject) -> None:
        """A GET of ``obj`` said its ETag is not an MD5 (SSE-KMS, SSE-C); called before :meth:`check_file`."""

    def part_done(self, part: Part, temp: Path, crc: int) -> None:
        """``part``'s bytes are written to ``temp``; ``crc`` is their CRC-32 (ranged parts)."""

    def file_done(self, obj: PlannedObject, path: Path) -> None:
        """``obj`` is complete at its final ``path``."""

    def file_skipped(self, obj: PlannedObject, path: Path) -> None:
        """``obj`` was already complete at ``path``; no request was made."""

    def file_failed(self, obj: PlannedObject, error: HcpsyncError, kept_partial: bool) -> None:
        """``obj`` failed; its temp file was kept (``kept_partial``) or removed."""

    def is_complete(self, obj: PlannedObject, path: Path) -> bool:
        """Whether ``path`` already holds ``obj``.  Default: a regular file of the planned size."""
        return is_complete_file(path, obj.size)


class CompositeObserver(TransferObserver):
    """Several observers as one (the journal and the verifier, say), called in order.

    ``is_complete`` holds only if every observer agrees; ``resume_ranges`` comes from the
    first observer that has any; ``keep_partial`` if any observer keeps partial files.
    """

    def __init__(self, *observers: TransferObserver) -> None:
        self.observers = observers
        self.keep_partial = any(o.keep_partial for o in observers)

    def resume_ranges(self, obj: PlannedObject, temp: Path) -> list[tuple[int, int]]:
        for o in self.observers:
            r = o.resume_ranges(obj, temp)
            if r:
                return r
        return []

    def wants_md5(self, obj: PlannedObject) -> bool:
        return any(o.wants_md5(obj) for o in self.observers)

    async def check_file(self, obj: PlannedObject, temp: Path, streamed_md5: str | None) -> None:
        for o in self.observers:
            await o.check_file(obj, temp, streamed_md5)

    def etag_not_md5(self, obj: PlannedObject) -> None:
        for o in self.observers:
            o.etag_not_md5(obj)

    def part_done(self, part: Part, temp: Path, crc: int) -> None:
        for o in self.observers:
            o.part_done(part, temp, crc)

    def file_done(self, obj: PlannedObject, path: Path) -> None:
        for o in self.observers:
            o.file_done(obj, path)

    def file_skipped(self, obj: PlannedObject, path: Path) -> None:
        for o in self.observers:
            o.file_skipped(obj, path)

    def file_failed(self, obj: PlannedObject, error: HcpsyncError, kept_partial: bool) -> None:
        for o in self.observers:
            o.file_failed(obj, error, kept_partial)

    def is_complete(self, obj: PlannedObject, path: Path) -> bool:
        if not self.observers:  # all() of nothing is True: every file would be "skipped"
            return super().is_complete(obj, path)
        return all(o.is_complete(obj, path) for o in self.observers)


@dataclass
class PoolResult:
    transferred_files: int = 0
    transferred_bytes: int = 0
    skipped_files: int = 0
    skipped_bytes: int = 0
    failures: list[tuple[PlannedObject, HcpsyncError]] = field(default_factory=list)
    retries: int = 0
    fatal: HcpsyncError | None = None

    def failed(self) -> list[Failure]:
        return [Failure(o.key, str(e)) for o, e in self.failures]


class _FileJob:
    __slots__ = ("error", "etag_is_md5", "fd", "final", "landed", "md5", "obj", "remaining", "temp")

    def __init__(self, obj: PlannedObject, final: Path, temp: Path, remaining: int) -> None:
        self.obj = obj
        self.final = final
        self.temp = temp
        self.remaining = remaining
        self.fd: int | None = None
        self.error: HcpsyncError | None = None
        self.md5: Any = None
        self.landed = 0  # parts whose bytes are in the temp file (this run or resumed)
        self.etag_is_md5 = True  # False once a GET said SSE-KMS / SSE-C (the ETag is no MD5)


def split_parts(obj: PlannedObject, config: TransferConfig) -> list[Part]:
    """The parts of ``obj``: one unranged GET up to the threshold, else ``part_size`` ranges."""
    if obj.size <= config.multipart_threshold:
        return [Part(obj, 0, 0, obj.size, False)]
    ps = config.part_size
    return [Part(obj, i, start, min(start + ps, obj.size), True) for i, start in enumerate(range(0, obj.size, ps))]


def _covered(start: int, end: int, ranges: list[tuple[int, int]]) -> bool:
    return any(a <= start and end <= b for a, b in ranges)


class TransferPool:
    """Runs the parts of a set of planned objects with ``config.concurrency`` workers."""

    def __init__(
        self,
        storage: S3Storage,
        bucket: str,
        dest: Path,
        config: TransferConfig,
        progress: Progress | None = None,
        observer: TransferObserver | None = None,
    ) -> None:
        self.storage = storage
        self.bucket = bucket
        self.config = config
        self.guard = DestGuard(dest)
        self.progress = progress or Progress()
        self.observer = observer or TransferObserver()
        self.limiter = RateLimiter(config.max_bandwidth) if config.max_bandwidth else None
        self.result = PoolResult()
        self._open: dict[str, _FileJob] = {}
        self._temps: dict[str, str] = {}  # folded temp path -> key being written to it
        self._stop: HcpsyncError | None = None
        self._no_request = 0  # objects handled without a request (skipped or failed early) ...
        self._paused: asyncio.Event | None = None  # ... since the event loop's last turn

    # -- scheduling ---------------------------------------------------------------------

    def _parts(self, objects: Iterable[PlannedObject]) -> Generator[_Item, None, None]:
        """Lazily expand objects into work items (see ``_Item``)."""
        for obj in objects:
            if self._stop is not None:
                return
            started = self._start_file(obj)
            if started is None:
                yield None  # back to the worker, which lets the event loop in now and then
                continue
            job, todo = started
            if not todo:
                yield job, None
            for part in todo:
                yield job, part

    def _start_file(self, obj: PlannedObject) -> tuple[_FileJob, list[Part]] | None:
        """Prepare ``obj``: skip it if complete, else open its temp file and list the parts to fetch."""
        try:
            final = self.guard.ensure_parent(obj.relpath)
            self.guard.check_final(final)
        except HcpsyncError as err:
            self._fail_early(obj, err)
            return None
        if self.observer.is_complete(obj, final):
            self.result.skipped_files += 1
            self.result.skipped_bytes += obj.size
            self.observer.file_skipped(obj, final)
            self.progress.add_bytes(obj.size)
            self.progress.file_done(obj.key)
            return None
        temp = temp_path_for(final)
        parts = split_parts(obj, self.config) if obj.size else []
        ranged = bool(parts) and parts[0].ranged
        resume = self.observer.resume_ranges(obj, temp) if ranged else []
        try:
            fd, resume = self._open_temp(temp, resume)
        except HcpsyncError as err:
            self._fail_early(obj, err)
            return None
        except OSError as exc:
            self._fail_early(obj, _local_error(exc, temp))
            return None
        todo = [p for p in parts if not _covered(p.start, p.end, resume)] if resume else parts
        job = _FileJob(obj, final, temp, len(todo) or 1)
        job.landed = len(parts) - len(todo)
        job.fd = fd
        try:
            if ranged:
                if os.fstat(job.fd).st_size != obj.size:
                    os.ftruncate(job.fd, obj.size)
                try:
                    os.posix_fallocate(job.fd, 0, obj.size)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise
        except OSError as exc:
            self._close(job)
            self._fail_early(obj, _local_error(exc, temp))
            return None
        if not ranged and self.observer.wants_md5(obj):
            job.md5 = hashlib.md5(usedforsecurity=False)
        self._open[obj.key] = job
        self._temps[fold_name(str(temp))] = obj.key
        if resume:
            self.progress.add_bytes(obj.size - sum(p.length for p in todo))
        return job, todo

    def _open_temp(self, temp: Path, resume: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
        """Open ``temp`` to resume ``resume``, or create it afresh, exclusively: a temp file is
        never shared by two writers, and one that no journal describes is never reused."""
        owner = self._temps.get(fold_name(str(temp)))
        if owner is not None:
            raise UnsafePathError(f"{temp.name} is already being written for {owner!r} (the two keys map to one local file)")
        if resume:
            try:
                return os.open(temp, _O_OPEN), resume
            except FileNotFoundError:
                pass
        _unlink(temp)
        try:
            return os.open(temp, _O_CREATE, 0o644), []
        except FileExistsError:
            raise UnsafePathError(f"{temp} was created by another writer at the same time; refusing to share it") from None

    def _fail_early(self, obj: PlannedObject, err: HcpsyncError) -> None:
        if isinstance(err, DiskFullError):
            self._stop = err
        self.result.failures.append((obj, err))
        self.observer.file_failed(obj, err, False)
        self.progress.file_done(obj.key, ok=False)

    # -- running ------------------------------------------------------------------------

    async def run(self, objects: Iterable[PlannedObject]) -> PoolResult:
        parts = self._parts(objects)
        workers = [asyncio.ensure_future(self._worker(parts)) for _ in range(self.config.concurrency)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._abandon_open()
            raise
        finally:
            parts.close()
        if self._stop is not None:
            self.result.fatal = self._stop
            self._abandon_open()
        return self.result

    async def _worker(self, parts: Generator[_Item, None, None]) -> None:
        for item in parts:
            if self._stop is not None:
                return
            if item is None:
                await self._breathe()
                continue
            job, part = item
            if part is not None and job.error is None:
                try:
                    crc = await self._fetch_part(job, part)
                except HcpsyncError as err:
                    if isinstance(err, DiskFullError):
                        self._stop = err
                    if job.error is None:
                        job.error = err
                else:
                    # _fetch_part returns early, the part cut short, when the run stops or
                    # another part of the file failed: never count (or journal) such a part
                    if self._stop is not None:
                        return  # the job stays open; run() abandons it, never renames it
                    if job.error is None:
                        job.landed += 1
                        self.observer.part_done(part, job.temp, crc)
            job.remaining -= 1
            if job.remaining == 0:
                await self._finish_file(job)

    async def _breathe(self) -> None:
        """An object needed no request, so no await: after ``YIELD_EVERY`` of them, every worker
        waits for the event loop's next turn (signal handlers, timers, I/O).  A plain
        ``sleep(0)`` per worker is not enough: the loop runs every ready worker before it polls
        again, and each would skip its own ``YIELD_EVERY`` files first."""
        if self._paused is None:
            self._no_request += 1
            if self._no_request % YIELD_EVERY:
                return
            self._paused = asyncio.Event()
            asyncio.get_running_loop().call_soon(self._resume)  # runs after the loop's next poll
        await self._paused.wait()

    def _resume(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.set()

    async def _fetch_part(self, job: _FileJob, part: Part) -> int:
        """Fetch ``part`` into the temp file; returns the CRC-32 of its bytes (ranged parts only).

        Returns early, the part cut short, when the run stops or another part of the file failed.
        """
        obj, cfg = job.obj, self.config
        written = 0
        attempt = 0
        crc = 0
        fd = job.fd
        assert fd is not None
        while True:
            start = part.start + written
            end = part.end if (part.ranged or written) else None
            try:
                async with self.storage.get(
                    self.bucket, obj.key, start=start, end=end, etag=obj.etag or None, total=obj.size
                ) as body:
                    job.etag_is_md5 = job.etag_is_md5 and body.etag_is_md5
                    async for chunk in body.chunks(cfg.chunk_size):
                        if job.error is not None or self._stop is not None:
                            return crc  # another part of this file failed, or the run is stopping
                        if self.limiter is not None:
                            await self.limiter.acquire(len(chunk))
                        try:
                            os.pwrite(fd, chunk, part.start + written)
                        except OSError as exc:
                            raise _local_error(exc, job.temp) from exc
                        if job.md5 is not None:
                            job.md5.update(chunk)
                        elif part.ranged:
                            crc = zlib.crc32(chunk, crc)
                        written += len(chunk)
                        self.result.transferred_bytes += len(chunk)
                        self.progress.add_bytes(len(chunk))
                return crc
            except HcpsyncError as err:
                if not should_retry(cfg, err, attempt) or job.error is not None or self._stop is not None:
                    raise  # given up; or the file already failed, or the run stops: no more requests
                attempt += 1
                self.result.retries += 1
                await pause(cfg, attempt, err)

    async def _finish_file(self, job: _FileJob) -> None:
        obj = job.obj
        err = job.error
        if err is None:
            try:
                assert job.fd is not None
                size = os.fstat(job.fd).st_size
                if size != obj.size:
                    raise LocalIOError(f"{obj.relpath}: temp file is {size} bytes, expected {obj.size}")
                streamed = job.md5.hexdigest() if job.md5 is not None else None
                if not job.etag_is_md5:
                    self.observer.etag_not_md5(obj)
                await self.observer.check_file(obj, job.temp, streamed)
                self._check_same_file(job)
                self._close(job)
                self.guard.check_final(job.final)
                os.replace(job.temp, job.final)
            except HcpsyncError as e:
                err = e
            except OSError as exc:
                err = _local_error(exc, job.final)
        self._close(job)
        self._open.pop(obj.key, None)
        self._temps.pop(fold_name(str(job.temp)), None)
        if err is None:
            self.result.transferred_files += 1
            self.observer.file_done(obj, job.final)
            self.progress.file_done(obj.key)
            return
        # keep a partial file only where a later run can resume it: ranged, and failed for a
        # reason that may pass (exhausted retries, a full disk), not for changed/wrong bytes
        keep = (
            self._resumable(job)
            and (err.retryable or isinstance(err, DiskFullError))
            and not isinstance(err, ObjectChangedError | VerificationError)
        )
        if not keep:
            _unlink(job.temp)
        self.result.failures.append((obj, err))
        self.observer.file_failed(obj, err, keep)
        self.progress.file_done(obj.key, ok=False)

    @staticmethod
    def _check_same_file(job: _FileJob) -> None:
        """The temp file's path still names the file this run wrote: rename nothing else."""
        assert job.fd is not None
        mine, there = os.fstat(job.fd), os.lstat(job.temp)
        if (mine.st_ino, mine.st_dev) != (there.st_ino, there.st_dev):
            raise LocalIOError(f"{job.temp} was replaced by another writer during the download; not renaming it")

    def _close(self, job: _FileJob) -> None:
        if job.fd is not None:
            try:
                os.close(job.fd)
            finally:
                job.fd = None

    def _abandon_open(self) -> None:
        """Cancelled or stopped: close every open temp file (kept if resumable, else removed)."""
        for job in list(self._open.values()):
            self._close(job)
            if not self._resumable(job):
                _unlink(job.temp)
        self._open.clear()
        self._temps.clear()

    def _resumable(self, job: _FileJob) -> bool:
        """Whether a later run can resume ``job``'s temp file: the observer keeps partial files,
        and it is a ranged object with a finished range (a single GET always starts over)."""
        return self.observer.keep_partial and job.obj.size > self.config.multipart_threshold and job.landed > 0


def _local_error(exc: OSError, path: Path) -> HcpsyncError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on the destination's file system while writing {path.name}")
    return LocalIOError(f"cannot write {path}: {exc.strerror or exc}")


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass

