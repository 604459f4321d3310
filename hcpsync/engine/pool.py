"""The transfer pool: bounded-concurrency workers that move parts from S3 to disk.

The unit of work is a :class:`~hcpsync.models.Part` (see :mod:`hcpsync.planning.schedule`):
one GET of a byte range of one object, or of a small object whole.  ``concurrency`` workers
pull parts from one lazy generator, so the bound on requests in flight is global across all
files, and one large file's ranges run side by side.

Each part streams its body in ``chunk_size`` pieces written at their offsets into the object's
:class:`~hcpsync.engine.tempfile.TempFile`; when every part is in, the file's size is checked,
then the :class:`~hcpsync.engine.events.Checker` checks it (MD5), then it is renamed to its
final path.  A failed or cancelled file never appears at its final path.  What happens is
emitted as :mod:`~hcpsync.engine.events` outcome records to the listeners.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TransferConfig
from ..errors import DiskFullError, HcpsyncError, UnsafePathError
from ..models import Failure, Part, PlannedObject
from ..paths import LINK_ADVICE, DestGuard, fold_name, temp_path_for
from ..planning.schedule import is_ranged, missing_parts, split_parts
from ..store import ObjectStore, RetryPolicy
from ..store.ratelimit import RateLimiter
from .events import Checker, FileDone, FileFailed, FileSkipped, Gate, Listener, NoCheck, NoGate, Outcome, PartDone
from .fetch import Fetcher, Got, PartSpec, Sink
from .items import Items
from .md5stream import StreamMd5
from .procs import WorkerSet
from .progress import Progress
from .rolling import RollingMd5, outside
from .tempfile import SmallTemp, TempFile, local_error, resumable

#: the workers give the event loop a turn after this many objects that needed no request
#: (skipped as complete, or failed before any): a re-run over 100k complete files answers Ctrl-C
YIELD_EVERY = 64

#: what the parts generator yields: a part to fetch, ``(job, None)`` for "finish job" (no GET
#: left), or None for an object done without a request
_Item = tuple["_FileJob", Part | None] | None


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
    __slots__ = ("error", "etag_is_md5", "ident", "landed", "md5", "md5_hex", "obj", "ranged", "remaining", "rolling",
                 "temp")

    def __init__(self, obj: PlannedObject, temp: TempFile | SmallTemp, remaining: int, landed: int) -> None:
        self.obj = obj
        self.temp = temp
        self.remaining = remaining
        self.landed = landed  # parts whose bytes are in the temp file (this run or resumed)
        self.ranged = False
        self.error: HcpsyncError | None = None
        self.md5: Any = None  # the stream's running MD5, for single-GET objects the checker wants
        self.md5_hex: str | None = None  # ... or its digest, from the worker process that fetched it
        self.ident = (0, 0)  # the temp file's (device, inode), for worker processes to check
        self.rolling: RollingMd5 | None = None  # a ranged file's MD5, hashed as its ranges land
        self.etag_is_md5 = True  # False once a GET said SSE-KMS / SSE-C (the ETag is no MD5)


class TransferPool:
    """Runs the parts of a set of planned objects with ``config.concurrency`` workers."""

    def __init__(
        self,
        storage: ObjectStore,
        bucket: str,
        dest: Path,
        config: TransferConfig,
        progress: Progress | None = None,
        *,
        gate: Gate | None = None,
        checker: Checker | None = None,
        listeners: Sequence[Listener] = (),
        remote: WorkerSet | None = None,
    ) -> None:
        self.storage = storage
        self.bucket = bucket
        self.config = config
        self.guard = DestGuard(dest)
        self.progress = progress or Progress()
        self.gate: Gate = gate or NoGate()
        self.checker: Checker = checker or NoCheck()
        self.listeners = tuple(listeners)
        self.remote = remote
        limiter = RateLimiter(config.max_bandwidth) if config.max_bandwidth else None
        self.fetcher = Fetcher(storage, bucket, config.chunk_size, RetryPolicy.from_config(config), limiter)
        self.result = PoolResult()
        self._open: dict[str, _FileJob] = {}
        self._temps: dict[str, str] = {}  # folded temp path -> key being written to it
        self._stop: HcpsyncError | None = None
        self._no_request = 0  # objects handled without a request (skipped or failed early) ...
        self._paused: asyncio.Event | None = None  # ... since the event loop's last turn

    def _emit(self, outcome: Outcome) -> None:
        for listener in self.listeners:
            listener(outcome)

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
        final = self.guard.dest / obj.relpath
        try:
            final = self.guard.ensure_parent(obj.relpath)
            if self._skipped(obj, final):
                return None
            return self._open_job(obj, final)
        except HcpsyncError as err:
            self._fail_early(obj, err)
        except OSError as exc:
            self._fail_early(obj, local_error(exc, temp_path_for(final)))
        return None

    def _skipped(self, obj: PlannedObject, final: Path) -> bool:
        """Skip ``obj`` if a complete file is at ``final`` (one ``lstat``) and nothing says otherwise.
        A symlink there (a DataLad tree) is followed inside DEST: kept when complete, else refused."""
        at = self.guard.at_final(final)
        if at is None:
            return False
        st = at.st
        complete = stat.S_ISREG(st.st_mode) and st.st_size == obj.size and not self.gate.must_refetch(obj)
        verdict = self.checker.skip_verdict(obj, st.st_size, st.st_mtime_ns) if complete else "bad"
        if verdict == "bad":
            if at.link is not None:
                raise UnsafePathError(f"{final.name} is a symlink to {at.link}, whose content is not this object's "
                                      f"({_why_not(obj, st.st_size, complete)}); {LINK_ADVICE}")
            return False
        self.result.skipped_files += 1
        self.result.skipped_bytes += obj.size
        self._emit(FileSkipped(obj, final, st.st_mtime_ns, verdict == "verified"))
        self.progress.add_bytes(obj.size)
        self.progress.file_done(obj.key)
        return True

    def _open_job(self, obj: PlannedObject, final: Path) -> tuple[_FileJob, list[Part]]:
        """Open (or resume) the temp file of ``obj``; the job and the parts still to fetch."""
        temp_path = temp_path_for(final)
        owner = self._temps.get(fold_name(str(temp_path)))
        if owner is not None:
            raise UnsafePathError(f"{temp_path.name} is already being written for {owner!r} (the two keys map to one local file)")
        parts = split_parts(obj, self.config)
        if not is_ranged(obj.size, self.config):
            job = _FileJob(obj, SmallTemp(temp_path, final), 1, 0)  # created where it is fetched
            if self.checker.wants_md5(obj):
                job.md5 = StreamMd5(obj.size)  # hashed in a thread as the chunks arrive
            self._open[obj.key] = job
            self._temps[fold_name(str(temp_path))] = obj.key
            return job, parts
        resume = self.gate.resume_ranges(obj)
        temp, resumed = TempFile.open(temp_path, final, bool(resume))
        todo = missing_parts(parts, resume) if resumed else parts
        untouched = sum(1 for t in todo if (t.start, t.end) == (parts[t.index].start, parts[t.index].end))
        job = _FileJob(obj, temp, len(todo) or 1, len(parts) - untouched)
        job.ranged = True
        try:
            temp.preallocate(obj.size)
            if self.remote is not None:
                st = temp.stat()
                job.ident = (st.st_dev, st.st_ino)
        except BaseException:
            temp.abort(keep=resumed)
            raise
        if self.checker.wants_md5(obj):
            job.rolling = RollingMd5(temp.fileno(), obj.size)
            for start, end in outside(todo, obj.size):  # resumed ranges, already in the temp file
                job.rolling.landed(start, end)
        self._open[obj.key] = job
        self._temps[fold_name(str(temp_path))] = obj.key
        if resumed:
            self.progress.add_bytes(obj.size - sum(p.length for p in todo))
        return job, todo

    def _fail_early(self, obj: PlannedObject, err: HcpsyncError) -> None:
        if isinstance(err, DiskFullError):
            self._stop = err
        self.result.failures.append((obj, err))
        self._emit(FileFailed(obj, err, False))
        self.progress.file_done(obj.key, ok=False)

    # -- running ------------------------------------------------------------------------

    async def run(self, objects: Iterable[PlannedObject] | AsyncIterator[Sequence[PlannedObject]]) -> PoolResult:
        """Fetch ``objects``: a collection, or batches that arrive while the pool runs (a plan
        still being listed); an error raised by the batches stops the pool and is raised."""
        parts = Items(self._parts, objects)
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

    async def _worker(self, parts: Items[_Item]) -> None:
        async for item in parts:
            if self._stop is not None:
                return
            if item is None:
                await self._breathe()
                continue
            job, part = item
            if part is not None and job.error is None:
                await self._run_part(job, part)
                if self._stop is not None:
                    return  # the job stays open; run() abandons it, never renames it
            job.remaining -= 1
            if job.remaining == 0:
                await self._finish_file(job)

    async def _run_part(self, job: _FileJob, part: Part) -> None:
        got = Got()  # how far the part got: bytes written, their CRC-32
        try:
            await self._transfer(job, part, got)
        except HcpsyncError as err:
            if isinstance(err, DiskFullError):
                self._stop = err
            if job.error is None:
                job.error = err
            if self.remote is not None:
                self.remote.poke()  # the file's other parts (all parts, on a stop) end now
            return
        except asyncio.CancelledError:
            self._landed_partly(job, part, got)  # Ctrl-C: keep what the range wrote
            raise
        finally:
            job.etag_is_md5 = job.etag_is_md5 and got.etag_is_md5
            self.result.retries += got.retries
        # _fetch_part returns early, the part cut short, when the run stops or another part of
        # the file failed: never count such a part as done; on a stop, journal what it wrote
        if self._stop is None and job.error is None:
            job.landed += 1
            if part.ranged:
                self._emit(PartDone(part, got.crc))
                if job.rolling is not None:
                    job.rolling.landed(part.start, part.end)
        else:
            self._landed_partly(job, part, got)

    def _landed_partly(self, job: _FileJob, part: Part, got: Got) -> None:
        """A clean stop cut ``part`` short after ``got.written`` bytes: they are the range
        ``[start, start + written)`` (CRC ``got.crc``), resumed from there by a later run."""
        if part.ranged and got.written > 0 and job.error is None:
            job.landed += 1
            self._emit(PartDone(Part(part.obj, part.index, part.start, part.start + got.written, True), got.crc))

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

    async def _transfer(self, job: _FileJob, part: Part, got: Got) -> None:
        """Fetch ``part`` on a worker process when one is ready, else here."""
        spec = _spec(job.obj, part)

        def stopped() -> bool:
            return job.error is not None or self._stop is not None

        temp = job.temp
        if self.remote is not None:
            res = None
            try:
                res = await self.remote.fetch(spec, str(temp.path), job.ident if job.ranged else None,
                                              job.md5 is not None, got, stopped)
            finally:
                if got.written:  # also the bytes of a part that failed or was cancelled
                    self.result.transferred_bytes += got.written
                    self.progress.add_bytes(got.written)
            if res is not None:
                job.md5_hex = res.md5
                if isinstance(temp, SmallTemp) and res.created is not None:
                    temp.made_by_worker(res.created)
                return
        if isinstance(temp, SmallTemp):
            await temp.create()
        await self.fetcher.fetch(spec, self._sink(job), got, stopped)

    def _sink(self, job: _FileJob) -> Sink:
        """Where a part of ``job`` writes its chunks: the temp file (and the stream's MD5)."""
        write, md5, result, progress = job.temp.write_at, job.md5, self.result, self.progress

        def sink(chunk: memoryview | bytes, offset: int) -> None:
            write(chunk, offset)
            if md5 is not None:
                md5.update(chunk)
            result.transferred_bytes += len(chunk)
            progress.add_bytes(len(chunk))

        return sink

    async def _finish_file(self, job: _FileJob) -> None:
        """Every part is in (or one failed): check, commit or abort, and say so."""
        obj, err = job.obj, job.error
        if err is None:
            try:
                if isinstance(job.temp, SmallTemp) and not job.temp.made:
                    await job.temp.create()  # an empty object: no GET, an empty file
                job.temp.check_size(obj.size)
                streamed = job.md5_hex or (await job.md5.hexdigest() if job.md5 is not None else None)
                if job.rolling is not None:
                    streamed = await job.rolling.hexdigest()  # None: the checker reads the file
                md5 = await self.checker.check(obj, job.temp.path, streamed, job.etag_is_md5)
                mtime_ns = job.temp.commit(self.guard)
            except HcpsyncError as e:
                err = e
        if job.rolling is not None:
            job.rolling.close()
        self._open.pop(obj.key, None)
        self._temps.pop(fold_name(str(job.temp.path)), None)
        if err is None:
            self.result.transferred_files += 1
            self._emit(FileDone(obj, job.temp.final, mtime_ns, md5))
            self.progress.file_done(obj.key)
            return
        keep = resumable(self.gate.keep_partial, job.ranged, job.landed, err)
        job.temp.abort(keep)
        self.result.failures.append((obj, err))
        self._emit(FileFailed(obj, err, keep))
        self.progress.file_done(obj.key, ok=False)

    def _abandon_open(self) -> None:
        """Cancelled or stopped: close every open temp file (kept if resumable, else removed)."""
        for job in list(self._open.values()):
            if job.rolling is not None:
                job.rolling.close()
            job.temp.abort(resumable(self.gate.keep_partial, job.ranged, job.landed))
        self._open.clear()
        self._temps.clear()


def _why_not(obj: PlannedObject, size: int, complete: bool) -> str:
    if size != obj.size:
        return f"{size} bytes, the object has {obj.size}"
    return "checksum mismatch" if complete else "the object changed on S3"


def _spec(obj: PlannedObject, part: Part) -> PartSpec:
    return PartSpec(obj.key, obj.etag or None, obj.size, part.start, part.end, part.ranged)
