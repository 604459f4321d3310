"""``hcpsync status``: what a destination's journal says, counted as the next pull would see it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JournalError, UsageError
from ..paths import STATE_DIR, is_complete_file
from .db import REFETCH, _Db, connect, default_journal_path
from .lock import holder_pid
from .shards import ShardStatus, merged, shard_statuses
from .store import Journal


@dataclass(frozen=True)
class JournalStatus:
    """What ``hcpsync status`` shows."""

    path: str
    files_total: int
    bytes_total: int
    files_complete: int
    bytes_complete: int
    files_partial: int
    bytes_partial_done: int
    files_pending: int
    bytes_pending: int
    last_run: dict[str, Any] | None
    active_pid: int | None
    selection: dict[str, Any] | None
    #: the destination; ``path`` is "" when it has no journal (nothing pulled into it yet)
    dest: str = ""
    #: the shards pulled into it (``--shard``), each with its own journal; the counts above are their sums
    shards: tuple[ShardStatus, ...] = ()

    @classmethod
    def empty(cls, dest: Path) -> JournalStatus:
        """A destination nothing was pulled into (with a journal)."""
        return cls("", 0, 0, 0, 0, 0, 0, 0, 0, None, None, None, str(dest))

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "journal": self.path or None,
            "files": {"total": self.files_total, "complete": self.files_complete,
                      "partial": self.files_partial, "pending": self.files_pending},
            "bytes": {"total": self.bytes_total, "complete": self.bytes_complete,
                      "partial_done": self.bytes_partial_done, "pending": self.bytes_pending},
            "last_run": self.last_run,
            "active": self.active_pid is not None,
            "active_pid": self.active_pid,
            "selection": self.selection,
            "shards": [s.to_json() for s in self.shards],
        }


def read_status(db: _Db, path: Path, active_pid: int | None, dest: Path) -> JournalStatus:
    """Counts as the next pull would see them: a file is complete when the journal does not
    mark it for refetch and a regular file of the planned size is at its final path under
    ``dest`` (completed-file records are batched, so the journal alone lags behind the disk)."""
    gen = db.execute("SELECT max(gen) FROM objects").fetchone()[0] or 0
    done = dict(db.execute("SELECT key, sum(end - start) FROM parts GROUP BY key").fetchall())
    total = [0, 0]
    complete = [0, 0]
    partial = [0, 0, 0]  # files, bytes done, their sizes
    for key, relpath, size, state in db.execute("SELECT key, relpath, size, state FROM objects WHERE gen=?", (gen,)):
        total[0] += 1
        total[1] += size
        if state != REFETCH and is_complete_file(dest / relpath, size):
            complete[0] += 1
            complete[1] += size
        elif key in done:
            partial[0] += 1
            partial[1] += done[key]
            partial[2] += size
    return JournalStatus(
        str(path), total[0], total[1], complete[0], complete[1], partial[0], partial[1],
        total[0] - complete[0] - partial[0], total[1] - complete[1] - partial[2],
        _last_run(db, active_pid), active_pid, _selection(db), str(dest),
    )

def _last_run(db: _Db, active_pid: int | None) -> dict[str, Any] | None:
    run = db.execute("SELECT started, ended, pid, outcome, summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if run is None:
        return None
    return {
        "started": _iso(run[0]), "ended": _iso(run[1]) if run[1] else None, "pid": run[2],
        "outcome": run[3] or ("running" if active_pid else "interrupted"),
        "summary": json.loads(run[4]) if run[4] else None,
    }

def _selection(db: _Db) -> dict[str, Any] | None:
    sel = db.execute("SELECT value FROM meta WHERE name='selection'").fetchone()
    return json.loads(sel[0]) if sel else None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def status_of(dest: Path, journal_path: Path | None = None) -> JournalStatus:
    """Read a destination's journal: read-only, so that it works while a pull is running; when
    that fails and no pull holds the destination, open it as a pull would (which recovers, say,
    a journal whose write-ahead log was lost: a plain re-run works there too)."""
    path = journal_path or default_journal_path(dest)
    shards = shard_statuses(dest, _status) if journal_path is None else []
    if shards:
        main = _plain(dest, path) if path.is_file() else None
        return merged(dest, main, shards)
    if not path.is_file() and journal_path is None and dest.is_dir():
        return JournalStatus.empty(dest)
    return _plain(dest, path)


def _plain(dest: Path, path: Path) -> JournalStatus:
    if not path.is_file():
        raise UsageError(f"no journal at {path}: nothing was pulled to {dest} with a journal yet")
    active = holder_pid(dest / STATE_DIR / "lock")
    try:
        return _status(Journal(path, connect(path, mode="ro")), active, dest)
    except JournalError:
        if active is not None:
            raise
    return _status(Journal.open(path), active, dest)


def _status(journal: Journal, active: int | None, dest: Path) -> JournalStatus:
    try:
        return read_status(journal._db, journal.path, active, dest)
    finally:
        journal.close()
