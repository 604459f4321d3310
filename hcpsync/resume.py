"""Connects the journal to the transfer pool: skip what is complete, resume what is partial."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import HcpsyncError, ObjectChangedError
from .journal import COMPLETE, REFETCH, Journal
from .models import Part, PlannedObject
from .paths import is_complete_file
from .transfer import TransferObserver


class JournalObserver(TransferObserver):
    """Connects the journal to the transfer pool."""

    keep_partial = True

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def is_complete(self, obj: PlannedObject, path: Path) -> bool:
        if not is_complete_file(path, obj.size):
            return False
        # complete, or unknown history (a file of the planned size at its final path is trusted);
        # only a file marked for refetch (changed on the server, or not durable) is not
        return self.journal.state_of(obj.key) != REFETCH

    def resume_ranges(self, obj: PlannedObject, temp: Path) -> list[tuple[int, int]]:
        j = self.journal
        if j.state_of(obj.key) == REFETCH:
            return []
        ranges = j.done_ranges(obj.key)
        if not ranges:
            return []
        # trust the disk, not only the journal: keep the ranges the temp file really holds
        try:
            st = os.lstat(temp)
        except OSError:
            j.drop_parts(obj.key)
            return []
        if not stat.S_ISREG(st.st_mode):
            j.drop_parts(obj.key)
            return []
        kept = [(a, b) for a, b in ranges if b <= st.st_size]
        if len(kept) != len(ranges) and not kept:
            j.drop_parts(obj.key)
        return kept

    def part_done(self, part: Part, temp: Path) -> None:
        if part.ranged:
            self.journal.record_part(part)

    def file_done(self, obj: PlannedObject, path: Path) -> None:
        try:
            mtime = os.lstat(path).st_mtime_ns
        except OSError:
            mtime = 0
        self.journal.record_complete(obj, mtime)

    def file_skipped(self, obj: PlannedObject, path: Path) -> None:
        if self.journal.state_of(obj.key) != COMPLETE:
            self.file_done(obj, path)

    def file_failed(self, obj: PlannedObject, error: HcpsyncError, kept_partial: bool) -> None:
        if isinstance(error, ObjectChangedError):
            self.journal.record_refetch(obj)
