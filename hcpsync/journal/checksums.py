"""The verifier's checksum cache, kept in the journal."""

from __future__ import annotations

from pathlib import Path

from ..errors import JournalError
from ..paths import STATE_DIR
from .db import JOURNAL_NAME, default_journal_path
from .lock import holder_pid
from .plan import PlanRow
from .store import Journal


class JournalChecksums:
    """The verifier's checksum cache, kept in the journal: an MD5 is trusted while the file's
    size and mtime are those it was computed for.  Writes are batched with the journal's."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._known: dict[str, tuple[int, int | None, str | None]] = {}

    def known(self, rows: list[PlanRow]) -> None:
        """What the plan's rows the engine is about to read say (no query per file then)."""
        self._known = {r.obj.relpath: (r.obj.size, r.verified_mtime_ns, r.md5) for r in rows}

    def get(self, relpath: str, size: int, mtime_ns: int) -> str | None:
        known = self._known.get(relpath)
        if known is not None:
            return known[2] if known[0] == size and known[1] == mtime_ns and known[2] else None
        row = self.journal._db.execute(
            "SELECT md5 FROM objects WHERE relpath=? AND size=? AND verified_mtime_ns=?", (relpath, size, mtime_ns)
        ).fetchone()
        return row[0] if row and row[0] else None

    def put(self, relpath: str, size: int, mtime_ns: int, md5: str) -> None:
        self.journal._pending_md5.append((md5, mtime_ns, relpath, size))
        self.journal.maybe_flush()

    def mismatched(self, relpath: str) -> None:
        """``verify`` found the file at ``relpath`` wrong: the next pull fetches it again."""
        self.journal.flush()
        self.journal.record_refetch_path(relpath)


def open_journal_if_any(dest: Path) -> Journal | None:
    """The destination's journal for reading and caching checksums, or None when there is none
    or a pull holds it (``verify`` then simply hashes everything)."""
    path = default_journal_path(dest)
    lock = dest / STATE_DIR / "lock"
    if not path.is_file():  # pulled in shards: each journal records the whole selection
        from .shards import shard_dirs

        shards = shard_dirs(dest)
        path, lock = (shards[0] / JOURNAL_NAME, shards[0] / "lock") if shards else (path, lock)
    if not path.is_file() or holder_pid(lock) is not None:
        return None
    try:
        return Journal.open(path)
    except JournalError:
        return None
