"""What the transfer pool tells the rest of a pull, and what it asks of it.

The pool *emits* frozen outcome records, in the order things happen, to listeners (the
journal, the verifier's checksum cache, the report's tally)::

    PartDone      a byte range of a ranged object is in its temp file (with its CRC-32): a whole
                  part, or, on a clean stop, as far as an interrupted part got
    FileDone      an object is at its final path (with the MD5 it was verified against, if any)
    FileSkipped   an object was already complete; no request was made
    FileFailed    an object failed (its temp file kept for a later run, or removed)

Before it acts, the pool *asks* two collaborators, by pure queries that change nothing:

* a :class:`Gate` (the journal): must this object be fetched again whatever is on disk, which
  ranges of it are already in its temp file, are partial temp files kept;
* a :class:`Checker` (the verifier): should this stream be hashed as it arrives, what does the
  checksum cache say of a complete-looking file, and :meth:`Checker.check`, the explicit step
  between "every byte is in the temp file" and the rename to the final path.

No state passes between these calls behind the pool's back: what a check found travels in
the :class:`FileDone` record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..errors import HcpsyncError
from ..models import Part, PlannedObject


@dataclass(frozen=True, slots=True)
class PartDone:
    """``part``'s bytes are written to the temp file; ``crc`` is their CRC-32.  On a clean stop
    (Ctrl-C, a full disk) ``part`` is the prefix of an interrupted part that was written."""

    part: Part
    crc: int


@dataclass(frozen=True, slots=True)
class FileDone:
    """``obj`` is complete at ``path`` (modified at ``mtime_ns``).  ``md5`` is the checksum it
    was verified against, or None when nothing could check it (size-checked only)."""

    obj: PlannedObject
    path: Path
    mtime_ns: int
    md5: str | None


@dataclass(frozen=True, slots=True)
class FileSkipped:
    """``obj`` was already complete at ``path``; ``verified``: a cached MD5 vouches for it."""

    obj: PlannedObject
    path: Path
    mtime_ns: int
    verified: bool


@dataclass(frozen=True, slots=True)
class FileFailed:
    """``obj`` failed with ``error``; its temp file was kept for a later run, or removed."""

    obj: PlannedObject
    error: HcpsyncError
    kept_partial: bool


Outcome = PartDone | FileDone | FileSkipped | FileFailed
Listener = Callable[[Outcome], None]

#: what the checksum cache says of a file already at its final path
SkipVerdict = Literal["bad", "verified", "unverified"]


class Gate(Protocol):
    """The history of each object (the journal): what may be skipped, what resumed."""

    #: keep the temp files of failed or interrupted ranged objects, for a later run to resume
    keep_partial: bool

    def must_refetch(self, obj: PlannedObject) -> bool:
        """Whether ``obj`` must be fetched again whatever is on disk (changed, not durable, bad)."""
        ...

    def resume_ranges(self, obj: PlannedObject) -> list[tuple[int, int]]:
        """Ranges ``[start, end)`` of ``obj`` already in its temp file from an earlier run."""
        ...


class Checker(Protocol):
    """Verification of the bytes (the verifier)."""

    def wants_md5(self, obj: PlannedObject) -> bool:
        """Whether to hash a single-GET object's stream as it arrives."""
        ...

    def skip_verdict(self, obj: PlannedObject, size: int, mtime_ns: int) -> SkipVerdict:
        """What is known of the file of ``obj`` already at its final path (``bad``: fetch it again)."""
        ...

    async def check(self, obj: PlannedObject, temp: Path, streamed_md5: str | None, etag_is_md5: bool) -> str | None:
        """Every byte of ``obj`` is in ``temp``: raise to reject it, else return the MD5 it was
        verified against (None when nothing could check it)."""
        ...


class NoGate:
    """No history: nothing is refetched by force, nothing resumed, partial files removed."""

    keep_partial = False

    def must_refetch(self, obj: PlannedObject) -> bool:
        return False

    def resume_ranges(self, obj: PlannedObject) -> list[tuple[int, int]]:
        return []


class NoCheck:
    """No verification: every file is size-checked only."""

    def wants_md5(self, obj: PlannedObject) -> bool:
        return False

    def skip_verdict(self, obj: PlannedObject, size: int, mtime_ns: int) -> SkipVerdict:
        return "unverified"

    async def check(self, obj: PlannedObject, temp: Path, streamed_md5: str | None, etag_is_md5: bool) -> str | None:
        return None
