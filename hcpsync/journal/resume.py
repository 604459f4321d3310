"""Connects the journal to the transfer pool: what to skip, what to resume, what to record.

Before a pull resumes anything, :func:`check_partials` reads back every range the journal
records and keeps only those whose bytes the temp file really holds (their CRC-32 matches):
a temp file re-created, zero-filled, shortened, or written by another run or another
destination sharing the journal never lends a range it does not hold.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

from ..engine.crc import crc32
from ..engine.events import FileDone, FileSkipped, Outcome, PartDone
from ..errors import ObjectChangedError
from ..models import PlannedObject
from ..paths import temp_path_for
from .db import COMPLETE, REFETCH
from .plan import PlanRow
from .store import Journal

_READ_BLOCK = 1024 * 1024
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

Recorded = list[tuple[int, int, int | None]]


class JournalGate:
    """The journal as the pool's :class:`~hcpsync.engine.events.Gate` and as a listener of its
    outcomes (call it with each one): it records every landed range, completed, skipped and
    changed file.  The states of the objects read from the plan come with them (:meth:`known`),
    and are forgotten when the object is done."""

    keep_partial = True

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._states: dict[str, int] = {}

    def known(self, rows: list[PlanRow]) -> None:
        """The plan's rows the engine is about to read (it is done with those of the batch before)."""
        self._states = {r.obj.key: r.state for r in rows}

    def _state(self, key: str) -> int | None:
        state = self._states.get(key)
        return state if state is not None else self.journal.state_of(key)

    def recorded_complete(self, obj: PlannedObject) -> bool:
        """Whether the rows of the batch being read say ``obj`` is complete (no query)."""
        return self._states.get(obj.key) == COMPLETE

    def must_refetch(self, obj: PlannedObject) -> bool:
        """A file of the planned size at its final path is trusted (complete, or of unknown
        history) unless it is marked for refetch: changed on the server, not durable, found bad."""
        return self._state(obj.key) == REFETCH

    def resume_ranges(self, obj: PlannedObject) -> list[tuple[int, int]]:
        """The ranges recorded for ``obj`` (checked against the temp file by :func:`check_partials`)."""
        if self._state(obj.key) == REFETCH:
            return []
        return self.journal.done_ranges(obj.key)

    def __call__(self, outcome: Outcome) -> None:
        j = self.journal
        if isinstance(outcome, PartDone):
            j.record_part(outcome.part, outcome.crc)
            return
        state = self._states.pop(outcome.obj.key, None)
        if isinstance(outcome, FileDone):
            j.record_complete(outcome.obj, outcome.mtime_ns)
        elif isinstance(outcome, FileSkipped):
            if (state if state is not None else j.state_of(outcome.obj.key)) != COMPLETE:
                j.record_complete(outcome.obj, outcome.mtime_ns)
        elif isinstance(outcome.error, ObjectChangedError):
            j.record_refetch(outcome.obj)


async def check_partials(journal: Journal, dest: Path) -> list[str]:
    """Drop every recorded range that its temp file under ``dest`` does not hold.

    Reads the recorded ranges back (in a worker thread) and compares their CRC-32 with the
    one recorded when they were written.  Returns notes for the report.
    """
    recorded = journal.recorded_parts()
    relpaths = journal.relpaths(list(recorded))
    jobs = [(temp_path_for(dest / relpaths[k]), k, ranges) for k, ranges in recorded.items() if k in relpaths]
    if not jobs:
        return []
    stop = threading.Event()
    try:
        bad = await asyncio.to_thread(_bad_ranges, jobs, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
    if not bad:
        return []
    journal.drop_ranges(bad)
    n = sum(len(v) for v in bad.values())
    return [f"{n} recorded range(s) of {len(bad)} partial file(s) were not in their temp files "
            f"(changed or re-created since they were recorded, e.g. {next(iter(bad))}); fetched again"]


def _bad_ranges(jobs: list[tuple[Path, str, Recorded]], stop: threading.Event) -> dict[str, list[int]]:
    """key -> starts of its recorded ranges whose bytes are not in its temp file."""
    bad: dict[str, list[int]] = {}
    for temp, key, ranges in jobs:
        if stop.is_set():
            break
        wrong = _wrong_in_file(temp, ranges, stop)
        if wrong:
            bad[key] = wrong
    return bad


def _wrong_in_file(temp: Path, ranges: Recorded, stop: threading.Event) -> list[int]:
    try:
        fd = os.open(temp, _O_READ)
    except OSError:
        return [start for start, _, _ in ranges]
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [start for start, _, _ in ranges]
        return [start for start, end, crc in ranges if crc is None or _crc_of(fd, start, end, stop) != crc]
    finally:
        os.close(fd)


def _crc_of(fd: int, start: int, end: int, stop: threading.Event) -> int | None:
    """CRC-32 of bytes ``[start, end)`` of ``fd``; None when the file is shorter."""
    crc, pos = 0, start
    while pos < end and not stop.is_set():
        block = os.pread(fd, min(_READ_BLOCK, end - pos), pos)
        if not block:
            return None
        crc = crc32(block, crc)
        pos += len(block)
    return crc if pos == end else None
