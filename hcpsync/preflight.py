"""Preflight: the bytes and files a pull still has to write, against the space and inodes free at
its destination, checked before the first byte of each part of the plan (``--no-space-check``
skips it).

A saved plan (``pull --plan FILE``) is checked whole before the first byte.  A plan still being
listed is checked as each listing unit is planned, before any byte of it moves: the pull stops at
the first unit that would not fit, the units before it complete (the total is not known before
the listing ends, and waiting for it would hold every byte back).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DestinationError, UnsafePathError
from .models import PlannedObject
from .paths import DestGuard, temp_path_for
from .text import human


class InsufficientSpaceError(DestinationError):
    """The destination has less space (or fewer inodes) free than the plan still needs."""


@dataclass(frozen=True)
class Free:
    """What the file system of a destination has free for this user (``statvfs``)."""

    bytes: int
    #: None when the file system does not count inodes (btrfs, some network file systems)
    inodes: int | None
    block: int

    @classmethod
    def at(cls, root: Path) -> Free:
        try:
            st = os.statvfs(root)
        except OSError as exc:
            raise DestinationError(f"cannot read the free space at {root}: {exc.strerror}") from exc
        block = st.f_frsize or st.f_bsize or 4096
        return cls(st.f_bavail * block, st.f_favail if st.f_files else None, block)


class SpaceCheck:
    """The running total of what the plan so far still needs at ``root``, against ``free`` (measured
    once, before the first byte): :meth:`add` raises :class:`InsufficientSpaceError` when it passes.
    ``live``: the plan is still being listed (the message says "so far").  ``complete(obj)``: the
    journal says the file is complete (then it needs nothing, and no ``lstat``: a re-run of a
    complete destination costs no extra system call per file)."""

    def __init__(self, root: Path, free: Free, *, live: bool = False,
                 complete: Callable[[PlannedObject], bool] | None = None) -> None:
        self.root, self.free, self.complete = root, free, complete
        self._so_far = " listed so far" if live else ""  # a plan still being listed
        self.guard = DestGuard(root)
        self.bytes = 0
        self.files = 0

    def add(self, objects: Iterable[PlannedObject], replaced: Iterable[PlannedObject] = ()) -> None:
        """Count what ``objects`` still need, and the whole of each complete file to be ``replaced``
        (found different by ``--checksum``: its new copy is written beside it); raise when the total
        no longer fits."""
        for obj in objects:
            need, new = self._needs(obj)
            self.bytes += need
            self.files += new
        self.bytes += sum(self._blocks(o.size) for o in replaced)
        self._check()

    def _needs(self, obj: PlannedObject) -> tuple[int, int]:
        """(bytes still to allocate, 1 if a new file is created) for ``obj``: nothing for a file
        complete in size; a file's blocks, less those its temp file already holds."""
        if self.complete is not None and self.complete(obj):
            return 0, 0
        final = self.root / obj.relpath
        try:
            at = self.guard.at_final(final)
        except (UnsafePathError, OSError):
            return 0, 0  # refused when the pool reaches it, nothing written
        if at is not None and stat.S_ISREG(at.st.st_mode) and at.st.st_size == obj.size:
            return 0, 0
        need = self._blocks(obj.size)
        try:
            need -= min(need, os.lstat(temp_path_for(final)).st_blocks * 512)
        except OSError:
            pass
        return need, 0 if at is not None else 1

    def _blocks(self, size: int) -> int:
        return -(-size // self.free.block) * self.free.block

    def _check(self) -> None:
        free = self.free
        if self.bytes > free.bytes:
            raise InsufficientSpaceError(
                f"not enough space at {self.root}: the plan{self._so_far} needs {human(self.bytes)} more "
                f"({self.files:,} new files), {human(free.bytes)} is free; free some space, choose another "
                "--dest, or pass --no-space-check")
        if free.inodes is not None and self.files > free.inodes:
            raise InsufficientSpaceError(
                f"not enough inodes at {self.root}: the plan{self._so_far} creates {self.files:,} files, "
                f"{free.inodes:,} inodes are free; free some, choose another --dest, or pass --no-space-check")
