"""The destination's lock: an exclusive ``flock`` with the holder's PID written in it.

The kernel drops an ``flock`` when its process dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from ..errors import JournalError, LockedError


class Lock:
    """An exclusive ``flock`` on a lock file, with the holder's PID written in it; or (``shared``)
    a shared one, held by many at once (shards of one destination) and by no exclusive holder."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open the lock file {self.path}: {exc.strerror} (is it a symlink?)") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise JournalError(f"the lock file {self.path} is not a regular file: remove it (hcpsync creates it again)")
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_pid(self.path)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise LockedError(
                f"another hcpsync run{who} is using {what}; wait for it to finish or stop it"
            ) from None
        if not self.shared:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            if not self.shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder_pid(lock_path: Path) -> int | None:
    """PID of the process holding ``lock_path``, or None when nobody holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO: no hang
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # no pull can hold it: Lock.acquire refuses such a file
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
