"""The coordinator's side of the worker processes: start them, hand each part to the least
busy one, collect the result, and stop them.

By default workers start in the background once the pull's process fills one core while
another is idle (:class:`BusyMeter`); until one is ready, and whenever none is, the pool fetches in its own process, so
start-up never delays the first byte and a pull that moves a few bytes never starts a process.
With an explicit count (``--workers N``) they start with the first part and the pool waits
for them: the N processes move the bytes.  A worker that dies (``kill -9``) loses nothing: its parts
in flight are handed to another worker (or fetched in-process) from their first byte, and a
replacement is started.  Closing the set closes each worker's socket; a worker still alive
two seconds later is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import TracebackType

from ...config import TransferConfig
from ...errors import HcpsyncError
from ...store.gets import Endpoint, Keys
from ..fetch import Got, PartSpec
from .wire import Broken, Cancel, Fetch, Hello, NewKeys, Ready, Result, frame, receive

log = logging.getLogger("hcpsync.engine")

#: seconds a worker may take to start (import, open its store) before it is given up
START_TIMEOUT = 60.0
#: seconds a cancelled part's worker has to say how far it got; a worker has to exit when closed
STOP_WAIT = 2.0
#: without an explicit worker count, workers start once this process has been busy (CPU time over
#: wall time, every thread) for at least ``AUTO_BUSY`` of ``AUTO_WINDOW`` seconds of handing out
#: parts, while the machine keeps at least ``AUTO_SPARE`` of a core idle (``/proc/stat``): one
#: core is what limits the pull, and another is free to take work.  A latency-bound pull (many small objects from a far
#: S3) leaves its core idle; a pull that already fills every core (2 cores: the loop and the MD5
#: threads) gains nothing from more processes (measured: +15-18 % CPU per GB, no faster).
AUTO_WINDOW = 0.5
AUTO_BUSY = 0.75
AUTO_SPARE = 0.5


def idle_seconds() -> float:
    """CPU seconds the whole machine has spent idle (``/proc/stat``), or -1 where it cannot say."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")  # idle + iowait
    except (OSError, ValueError, IndexError):
        return -1.0


class BusyMeter:
    """Whether a process is bound by one core while the machine has another idle: its CPU time
    over wall time, and the machine's idle time, window after window."""

    def __init__(self, window: float = AUTO_WINDOW, busy: float = AUTO_BUSY, spare: float = AUTO_SPARE,
                 clocks: tuple[Callable[[], float], ...] = (time.monotonic, time.process_time, idle_seconds)) -> None:
        self.window, self.busy, self.spare = window, busy, spare
        self._clocks = clocks
        self._start: tuple[float, ...] | None = None

    def saturated(self) -> bool:
        """True once a whole window was busy enough and left a core idle; another window starts a new one."""
        now = tuple(clock() for clock in self._clocks)
        if self._start is None or now[0] - self._start[0] < self.window:
            self._start = self._start or now
            return False
        (wall, cpu, idle), self._start = (b - a for a, b in zip(self._start, now, strict=True)), now
        spare = idle / wall if now[2] >= 0 else self.spare  # no /proc/stat: assume a core to spare
        return cpu / wall >= self.busy and spare >= self.spare


#: seconds between looks at the coordinator's credentials (temporary keys are refreshed)
KEYS_EVERY = 60.0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM or cgroup allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_config(config: TransferConfig, count: int) -> TransferConfig:
    """One worker's share of the transfer: of the concurrency and of the bandwidth cap."""
    share = -(-config.concurrency // count)
    bandwidth = max(1024, config.max_bandwidth // count) if config.max_bandwidth else None
    return replace(config, concurrency=share, max_bandwidth=bandwidth, workers=1)


class _Lost(Exception):
    """The worker running a part died before it answered."""


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    calls: dict[int, asyncio.Future[Result]]
    alive: bool = True
    listener: asyncio.Future[None] | None = None

    def send(self, message: Fetch | Cancel | NewKeys) -> None:
        if self.alive and not self.writer.is_closing():
            self.writer.write(frame(message))

    async def listen(self, on_exit: Callable[[_Worker], None]) -> None:
        """Resolve each call with its Result until the worker's socket closes."""
        try:
            while (message := await receive(self.reader)) is not None:
                if isinstance(message, Result):
                    fut = self.calls.pop(message.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(message)
        finally:
            self.alive = False
            for fut in self.calls.values():
                if not fut.done():
                    fut.set_exception(_Lost())
            self.calls.clear()
            on_exit(self)


class WorkerSet:
    """``count`` worker processes fetching parts for one pull (see the module's docstring)."""

    def __init__(self, count: int, endpoint: Endpoint, keys: Callable[[], Awaitable[Keys | None]],
                 config: TransferConfig, bucket: str, *, eager: bool) -> None:
        self.count = count
        self.hello = Hello(endpoint, None, worker_config(config, count), bucket)
        self._keys = keys
        self._keys_at = 0.0  # when the keys were last looked at
        self.eager = eager
        self.notes: list[str] = []
        self.requests = 0  # requests the workers sent
        self.used: set[int] = set()  # pids of the workers that ran parts
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._starting: asyncio.Future[None] | None = None
        self._replaced = 0
        self._meter = BusyMeter()  # no explicit count: start once one core is full and another idle
        self._broken = False
        self._inflight: dict[int, tuple[_Worker, Callable[[], bool]]] = {}
        self._replacements: set[asyncio.Future[None]] = set()
        self._closing = False

    async def __aenter__(self) -> WorkerSet:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.shield(self.close())

    # -- starting -------------------------------------------------------------------------

    def _want(self) -> None:
        """The pool hands out a part: start the workers if that makes it worth it."""
        if self._starting is not None or self._broken:
            return
        if self.eager or self._meter.saturated():
            self._starting = asyncio.ensure_future(self._start(self.count))

    async def _start(self, count: int) -> None:
        keys = await self._keys()
        self._keys_at = time.monotonic()
        self.hello = self.hello._replace(keys=keys)
        results = await asyncio.gather(*(self._start_one() for _ in range(count)), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not self._broken:
                self._broken = not self._workers
                why = res if isinstance(res, HcpsyncError) else f"{type(res).__name__}: {res}"
                self.notes.append(f"a worker process could not start ({why}); "
                                  f"{'continuing in one process' if self._broken else 'continuing with fewer'}")

    async def _start_one(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = _spawn(child.fileno())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        try:
            writer.write(frame(self.hello))
            answer = await asyncio.wait_for(receive(reader), START_TIMEOUT)
        except BaseException:
            await _end(proc, writer)
            raise
        if not isinstance(answer, Ready):
            await _end(proc, writer)
            if isinstance(answer, Broken):
                raise answer.error
            raise RuntimeError(f"worker exited at start (status {proc.poll()})")
        worker = _Worker(proc, reader, writer, answer.pid, {})
        worker.listener = asyncio.ensure_future(worker.listen(self._lost))
        self._workers.append(worker)
        log.debug("worker %d ready", answer.pid)

    def _lost(self, worker: _Worker) -> None:
        """``worker``'s socket closed: make sure it is dead, and start another in its place."""
        if worker in self._workers:
            self._workers.remove(worker)
        if self._closing:
            return  # close() is ending it
        with contextlib.suppress(OSError):
            worker.proc.kill()
        log.debug("worker %d died", worker.pid)
        if self._replaced < self.count:
            self._replaced += 1
            self.notes.append(f"worker process {worker.pid} died; its parts were fetched again")
            task = asyncio.ensure_future(self._start(1))
            self._replacements.add(task)
            task.add_done_callback(self._replacements.discard)

    # -- running parts --------------------------------------------------------------------

    def _pick(self) -> _Worker | None:
        ready = [w for w in self._workers if w.alive]
        return min(ready, key=lambda w: len(w.calls)) if ready else None

    async def fetch(self, spec: PartSpec, path: str, ident: tuple[int, int] | None, md5: bool, got: Got,
                    stopped: Callable[[], bool]) -> Result | None:
        """Run ``spec`` on a worker (see :class:`Fetch` for ``ident``): its :class:`Result` once
        it ran there (``got`` says how far it got; its error is raised), None when no worker can
        take it (fetch it here)."""
        self._want()
        if self._workers and time.monotonic() - self._keys_at > KEYS_EVERY:
            await self._refresh_keys()
        if self.eager and self._starting is not None and not self._starting.done():
            await asyncio.shield(self._starting)  # --workers N: the N processes move the bytes
        for _ in range(self.count + 2):
            worker = self._pick()
            if worker is None:
                return None
            try:
                res = await self._call(worker, Fetch(next(self._ids), spec, path, ident, md5), got, stopped)
            except _Lost:
                got.written = got.crc = 0  # the part starts over, from its first byte
                continue
            self.used.add(worker.pid)
            if res.error is not None:
                raise res.error
            return res
        return None

    async def _refresh_keys(self) -> None:
        """Hand the workers the coordinator's keys when they changed (refreshed temporary keys)."""
        self._keys_at = time.monotonic()
        keys = await self._keys()
        if keys is not None and keys != self.hello.keys:
            self.hello = self.hello._replace(keys=keys)
            for worker in self._workers:
                worker.send(NewKeys(keys))

    def _apply(self, res: Result, got: Got) -> None:
        got.written, got.crc = res.written, res.crc
        got.etag_is_md5 = got.etag_is_md5 and res.etag_is_md5
        got.retries += res.retries
        self.requests += res.requests

    async def _call(self, worker: _Worker, job: Fetch, got: Got, stopped: Callable[[], bool]) -> Result:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        worker.calls[job.id] = fut
        self._inflight[job.id] = (worker, stopped)
        try:
            worker.send(job)
            try:
                res = await asyncio.shield(fut)
            except asyncio.CancelledError:
                # Ctrl-C, a cancelled pull: the worker stops the part and says how far it got
                worker.send(Cancel(job.id))
                with contextlib.suppress(asyncio.TimeoutError, _Lost):
                    self._apply(await asyncio.wait_for(asyncio.shield(fut), STOP_WAIT), got)
                raise
            self._apply(res, got)
            return res
        finally:
            self._inflight.pop(job.id, None)

    def poke(self) -> None:
        """A file failed or the run stops: cancel the parts in flight that no longer matter."""
        for job_id, (worker, stopped) in list(self._inflight.items()):
            if stopped():
                worker.send(Cancel(job_id))

    # -- stopping -------------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        pending = [t for t in (self._starting, *self._replacements) if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        workers, self._workers = list(self._workers), []
        await asyncio.gather(*(_end(w.proc, w.writer) for w in workers), return_exceptions=True)
        for w in workers:
            if w.listener is not None:
                w.listener.cancel()


def _spawn(fd: int) -> subprocess.Popen[bytes]:
    """A fresh interpreter (never a fork of this process, which runs an event loop and threads)
    serving the socket ``fd``."""
    return subprocess.Popen(
        [sys.executable, "-m", "hcpsync.engine.procs.worker", str(fd)],
        pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the coordinator only; it stops the workers
    )


async def _end(proc: subprocess.Popen[bytes], writer: asyncio.StreamWriter) -> None:
    """Close the worker's socket (it exits at the end of its stream); kill it if it lingers."""
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    try:
        await asyncio.to_thread(proc.wait, STOP_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait)
