"""The temp file of one download: opened to resume or created exclusively, written at offsets,
then committed to its final path or aborted.

A temp file is never shared by two writers: it is created with ``O_EXCL`` (a stale one that no
journal describes is removed first), and the pool refuses a second object whose temp path folds
(case, Unicode) onto one being written.  A commit renames it only while its path still names the
file this run wrote.  :func:`resumable` is the keep-partial rule.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

from ..errors import DiskFullError, HcpsyncError, LocalIOError, ObjectChangedError, UnsafePathError, VerificationError
from ..paths import DestGuard

_O_OPEN = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_O_CREATE = _O_OPEN | os.O_CREAT | os.O_EXCL


def local_error(exc: OSError, path: Path) -> HcpsyncError:
    """A local OSError as an :class:`HcpsyncError` (a full disk stops the run)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on the destination's file system while writing {path.name}")
    return LocalIOError(f"cannot write {path}: {exc.strerror or exc}")


def unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def resumable(keep_partial: bool, ranged: bool, landed: int, error: HcpsyncError | None = None) -> bool:
    """Whether a later run can resume a temp file: partial files are kept, the object is fetched
    in ranges and one has landed (a single GET always starts over), and it did not fail for
    changed or wrong bytes (``error``)."""
    if not (keep_partial and ranged and landed > 0):
        return False
    if error is None:  # interrupted
        return True
    return (error.retryable or isinstance(error, DiskFullError)) and not isinstance(
        error, ObjectChangedError | VerificationError
    )


def create_afresh(path: Path) -> int:
    """Create ``path`` exclusively (a stale temp file no journal describes is replaced); its fd.
    Raises OSError, or UnsafePathError when another writer creates it at the same time."""
    try:  # almost always there is none: no unlink first (a syscall per file, ~1 % of a small-file pull's CPU)
        return os.open(path, _O_CREATE, 0o644)
    except FileExistsError:
        unlink(path)
    try:
        return os.open(path, _O_CREATE, 0o644)
    except FileExistsError:
        raise UnsafePathError(f"{path} was created by another writer at the same time; refusing to share it") from None


class TempFile:
    """An open temp file beside ``final``.  Use :meth:`open`; end with :meth:`commit` or :meth:`abort`."""

    __slots__ = ("fd", "final", "path")

    def __init__(self, path: Path, final: Path, fd: int) -> None:
        self.path = path
        self.final = final
        self.fd: int | None = fd

    @classmethod
    def open(cls, path: Path, final: Path, resume: bool) -> tuple[TempFile, bool]:
        """Open ``path`` to resume it (when ``resume`` and it exists), else create it afresh.
        Returns the file and whether it was resumed.  Raises OSError or UnsafePathError."""
        if resume:
            try:
                return cls(path, final, os.open(path, _O_OPEN)), True
            except FileNotFoundError:
                pass
        return cls(path, final, create_afresh(path)), False

    def preallocate(self, size: int) -> None:
        """Give the file its final size now (ranges are written at their offsets)."""
        fd = self._fd()
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise

    def stat(self) -> os.stat_result:
        return os.fstat(self._fd())

    def fileno(self) -> int:
        return self._fd()

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        try:
            os.pwrite(self._fd(), data, offset)
        except OSError as exc:
            raise local_error(exc, self.path) from exc

    def check_size(self, size: int) -> None:
        """Every byte is in: the file must be exactly ``size`` bytes."""
        try:
            have = os.fstat(self._fd()).st_size
        except OSError as exc:
            raise local_error(exc, self.path) from exc
        if have != size:
            raise LocalIOError(f"{self.final.name}: temp file is {have} bytes, expected {size}")

    def commit(self, guard: DestGuard) -> int:
        """Rename to the final path, if the temp path still names this file; returns its mtime (ns)."""
        try:
            st = os.fstat(self._fd())
        except OSError as exc:
            raise local_error(exc, self.final) from exc
        self.close()
        rename_if_ours(self.path, self.final, (st.st_dev, st.st_ino), guard)
        return st.st_mtime_ns

    def abort(self, keep: bool) -> None:
        """Close; remove the file unless ``keep`` (a later run resumes it)."""
        self.close()
        if not keep:
            unlink(self.path)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def _fd(self) -> int:
        if self.fd is None:
            raise LocalIOError(f"{self.path} is closed")
        return self.fd


class SmallTemp:
    """The temp file of an object fetched in one GET, created where it is fetched: by a worker
    process (then known here by its path and the ``(device, inode)`` the worker reported), or
    in a thread of this process (:meth:`create`).  Creating a file can take a millisecond and
    more of kernel time (a crowded ext4 block group): never on the coordinator's event loop.
    A single GET always starts over, so its temp file is never kept."""

    __slots__ = ("final", "ident", "local", "path")

    def __init__(self, path: Path, final: Path) -> None:
        self.path = path
        self.final = final
        self.local: TempFile | None = None
        self.ident: tuple[int, int] | None = None

    async def create(self) -> None:
        """Create the file here (a stale one is replaced), in a thread."""
        if self.local is None:
            try:
                self.local, _ = await asyncio.to_thread(TempFile.open, self.path, self.final, False)
            except OSError as exc:
                raise local_error(exc, self.path) from exc

    @property
    def made(self) -> bool:
        return self.local is not None or self.ident is not None

    def made_by_worker(self, ident: tuple[int, int]) -> None:
        self.ident = ident

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        if self.local is None:
            raise LocalIOError(f"{self.path} is not open")
        self.local.write_at(data, offset)

    def check_size(self, size: int) -> None:
        if self.local is not None:
            self.local.check_size(size)
        elif (have := self._ours().st_size) != size:
            raise LocalIOError(f"{self.final.name}: temp file is {have} bytes, expected {size}")

    def commit(self, guard: DestGuard) -> int:
        if self.local is not None:
            return self.local.commit(guard)
        return rename_if_ours(self.path, self.final, self.ident, guard).st_mtime_ns

    def abort(self, keep: bool) -> None:
        if self.local is not None:
            self.local.abort(False)
        else:
            unlink(self.path)

    def _ours(self) -> os.stat_result:
        """The file at the temp path, if it is the one the worker wrote."""
        try:
            return ours(self.path, self.ident)
        except OSError as exc:
            raise local_error(exc, self.path) from exc


def ours(path: Path, ident: tuple[int, int] | None) -> os.stat_result:
    """``lstat(path)``, if ``path`` still names the regular file ``ident`` (device, inode) this run
    wrote; raises OSError, or LocalIOError when another writer replaced it."""
    st = os.lstat(path)
    if ident is None or (st.st_dev, st.st_ino) != ident or not stat.S_ISREG(st.st_mode):
        raise LocalIOError(f"{path} was replaced by another writer during the download; not renaming it")
    return st


def rename_if_ours(path: Path, final: Path, ident: tuple[int, int] | None, guard: DestGuard) -> os.stat_result:
    """Rename ``path`` to ``final`` if it still names the file ``ident`` this run wrote."""
    try:
        st = ours(path, ident)
        guard.check_final(final)
        os.replace(path, final)
    except OSError as exc:
        raise local_error(exc, final) from exc
    return st
