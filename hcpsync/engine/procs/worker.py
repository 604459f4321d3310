"""A worker process: its own event loop, connection pool and share of the concurrency; it
GETs the parts the coordinator sends and writes them at their offsets into temp files the
coordinator created.  It never renames, journals or decides anything.

Started as ``python -m hcpsync.engine.procs.worker FD`` (a fresh interpreter, never a fork),
it serves the Unix socket ``FD`` until the coordinator closes it (or dies), then cancels what
it still runs and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ...errors import HcpsyncError, LocalIOError
from ...store.gets import Getter, StaticKeys
from ...store.ratelimit import RateLimiter
from ...store.retry import RetryPolicy
from ..fetch import Fetcher, Got
from ..md5stream import StreamMd5
from ..tempfile import create_afresh, local_error, ours
from .wire import Broken, Cancel, Fetch, Hello, NewKeys, Ready, Result, frame, receive

_O_WRITE = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _create(path: str) -> tuple[int, tuple[int, int]]:
    """Create the temp file of a small object afresh: ``(fd, (dev, ino))``."""
    try:
        fd = create_afresh(Path(path))
    except OSError as exc:
        raise local_error(exc, Path(path)) from exc
    st = os.fstat(fd)
    return fd, (st.st_dev, st.st_ino)


def _remove(path: str, ident: tuple[int, int]) -> None:
    """Remove the file this worker created at ``path``, if it is still there."""
    with contextlib.suppress(OSError, LocalIOError):
        ours(Path(path), ident)
        os.unlink(path)


class _Files:
    """The temp files this worker writes to, open while a part of theirs runs."""

    def __init__(self) -> None:
        self._open: dict[str, list[int]] = {}  # path -> [fd, parts using it]

    def acquire(self, job: Fetch) -> int:
        held = self._open.get(job.path)
        if held is None:
            try:
                fd = os.open(job.path, _O_WRITE)
            except OSError as exc:
                raise local_error(exc, _path(job)) from exc
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != job.ident:
                os.close(fd)
                raise LocalIOError(f"{job.path} was replaced by another writer during the download")
            held = self._open[job.path] = [fd, 0]
        held[1] += 1
        return held[0]

    def release(self, job: Fetch) -> None:
        held = self._open[job.path]
        held[1] -= 1
        if held[1] == 0:
            del self._open[job.path]
            os.close(held[0])

    def close(self) -> None:
        for fd, _ in self._open.values():
            os.close(fd)
        self._open.clear()


def _path(job: Fetch) -> Path:
    return Path(job.path)


class Worker:
    """Runs the :class:`Fetch` requests of one coordinator, each as a task."""

    def __init__(self, fetcher: Fetcher, store: Getter, writer: asyncio.StreamWriter) -> None:
        self.fetcher = fetcher
        self.store = store
        self.writer = writer
        self.files = _Files()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._requests = 0  # requests already reported
        self.closed = False  # the coordinator closed its end (or died): nobody to answer

    def start(self, job: Fetch) -> None:
        task = asyncio.ensure_future(self._run(job))
        self.tasks[job.id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job.id, None))

    def new_keys(self, message: NewKeys) -> None:
        if isinstance(self.store.fast.credentials, StaticKeys):
            self.store.fast.credentials.keys = message.keys

    def cancel(self, message: Cancel) -> None:
        task = self.tasks.get(message.id)
        if task is not None:
            task.cancel()

    async def _run(self, job: Fetch) -> None:
        got = Got()
        md5 = StreamMd5(job.spec.total) if job.md5 else None
        error: HcpsyncError | None = None
        created = None
        digest = None
        try:
            if job.ident is None:
                created = await self._fetch_new(job, got, md5)
            else:
                fd = self.files.acquire(job)
                try:
                    await self.fetcher.fetch(job.spec, _sink(fd, md5, job), got, _never)
                finally:
                    self.files.release(job)
            digest = await md5.hexdigest() if md5 is not None else None
        except HcpsyncError as err:
            error = err
        except asyncio.CancelledError:
            pass  # the coordinator asked: say how far the part got
        self._reply(Result(job.id, got.written, got.crc, digest, got.etag_is_md5, got.retries, 0, error, created))

    async def _fetch_new(self, job: Fetch, got: Got, md5: Any) -> tuple[int, int]:
        """Create the small object's temp file (in a thread: creating a file can be slow) and
        fetch it; on failure or cancel the file is removed (a single GET starts over)."""
        fd, ident = await _create_off_loop(job.path)
        done = False
        try:
            await self.fetcher.fetch(job.spec, _sink(fd, md5, job), got, _never)
            done = True
        finally:
            os.close(fd)
            if not done:
                _remove(job.path, ident)
        return ident

    def _reply(self, result: Result) -> None:
        requests, self._requests = self.store.stats.requests - self._requests, self.store.stats.requests
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(frame(result._replace(requests=requests)))

    async def stop(self) -> None:
        self.closed = True
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.files.close()


async def _create_off_loop(path: str) -> tuple[int, tuple[int, int]]:
    """:func:`_create` in a thread; cancelled meanwhile, the file is closed and removed."""
    created = asyncio.ensure_future(asyncio.to_thread(_create, path))
    try:
        return await asyncio.shield(created)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            fd, ident = await created
            os.close(fd)
            _remove(path, ident)
        raise


def _never() -> bool:
    return False  # the coordinator stops a part by cancelling it


def _sink(fd: int, md5: Any, job: Fetch) -> Any:
    pwrite = os.pwrite

    def sink(chunk: memoryview | bytes, offset: int) -> None:
        try:
            pwrite(fd, chunk, offset)
        except OSError as exc:
            raise local_error(exc, _path(job)) from exc
        if md5 is not None:
            md5.update(chunk)

    return sink


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        hello = await receive(reader)
        if not isinstance(hello, Hello):
            return
        await _serve(hello, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _serve(hello: Hello, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    cfg = hello.config
    try:
        store = hello.endpoint.open(hello.keys, cfg)
    except HcpsyncError as err:  # a CA bundle it cannot read
        writer.write(frame(Broken(err)))
        await writer.drain()
        return
    try:
        limiter = RateLimiter(cfg.max_bandwidth) if cfg.max_bandwidth else None
        worker = Worker(Fetcher(store, hello.bucket, cfg.chunk_size, RetryPolicy.from_config(cfg), limiter), store, writer)
        gc.freeze()  # what start-up made lives as long as the worker: no collection scans it again
        writer.write(frame(Ready(os.getpid())))
        try:
            while (message := await receive(reader)) is not None:
                if isinstance(message, Fetch):
                    worker.start(message)
                elif isinstance(message, Cancel):
                    worker.cancel(message)
                elif isinstance(message, NewKeys):
                    worker.new_keys(message)
        finally:
            await worker.stop()
    finally:
        await store.fast.close()


def main(argv: list[str]) -> int:
    # the coordinator handles Ctrl-C and stops its workers by closing their sockets
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    try:
        asyncio.run(serve(sock))
    except Exception as exc:  # never a traceback: the coordinator sees the socket close
        print(f"hcpsync worker {os.getpid()}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
