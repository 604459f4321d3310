"""The journal: a SQLite (WAL) file beside the destination that makes pulls resumable.

It records the plan (key, size, ETag, local path), every finished byte range of every
in-progress file, and every completed file.  Order is always *write, then record*: a part
is recorded only after its bytes were written to the temp file, so after ``kill -9`` the
journal never claims bytes that are not in the page cache.

Power loss is the harder case: the page cache is gone too.  The journal therefore keeps the
machine's boot ID, and a background *sync point* (``os.sync()`` in a thread, every
``sync_interval`` seconds) marks everything recorded before it as durable.  When a run finds
a different boot ID than the last run had, it trusts only what was marked durable: the
other ranges are fetched again and the other completed files are re-fetched.

Concurrency: one ``pull`` per destination.  An ``flock`` on ``<journal>.lock`` is held for
the whole run; the kernel drops it when the process dies, so a killed run never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import JournalError, LockedError, UsageError
from .models import Part, Plan, PlannedObject
from .paths import STATE_DIR

SCHEMA_VERSION = 1
JOURNAL_NAME = "journal.sqlite"

# objects.state
UNKNOWN = 0  # planned; nothing known about the local file (a present file of the right size is trusted)
REFETCH = 1  # must be fetched again whatever is on disk (changed on the server, or not durable)
COMPLETE = 2  # at its final path, complete

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    relpath TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    gen INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER,
    md5 TEXT,
    verified_mtime_ns INTEGER,
    synced INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS parts (
    key TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, start)
);
-- the checksum cache looks files up by path (the verifier's get, flush's md5 UPDATEs): without
-- this index each lookup scanned the whole table, and a re-run was quadratic in the file count.
-- Created here, so journals written before it get it when they are next opened.
CREATE INDEX IF NOT EXISTS objects_relpath ON objects (relpath);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    pid INTEGER NOT NULL,
    outcome TEXT,
    summary TEXT
);
"""


def default_journal_path(dest: Path) -> Path:
    return dest / STATE_DIR / JOURNAL_NAME


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


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

    def to_json(self) -> dict[str, Any]:
        return {
            "journal": self.path,
            "files": {"total": self.files_total, "complete": self.files_complete,
                      "partial": self.files_partial, "pending": self.files_pending},
            "bytes": {"total": self.bytes_total, "complete": self.bytes_complete,
                      "partial_done": self.bytes_partial_done, "pending": self.bytes_pending},
            "last_run": self.last_run,
            "active": self.active_pid is not None,
            "active_pid": self.active_pid,
            "selection": self.selection,
        }


class Lock:
    """An exclusive ``flock`` on a lock file, with the holder's PID written in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open the lock file {self.path}: {exc.strerror} (is it a symlink?)") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_pid(self.path)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise LockedError(
                f"another hcpsync run{who} is using {what}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder_pid(lock_path: Path) -> int | None:
    """PID of the process holding ``lock_path``, or None when nobody holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class Journal:
    """The journal of one destination.  Use :meth:`open`; close with :meth:`close`."""

    #: buffered completed-file records are committed at least this often (seconds) ...
    FLUSH_INTERVAL = 0.25
    #: ... or when this many are waiting
    FLUSH_BATCH = 512

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._db = conn
        self._gen = 0
        self._seq = 0
        self._rows: dict[str, tuple[str, int, int]] = {}  # key -> (etag, size, state)
        self._pending_files: list[tuple[Any, ...]] = []
        self._pending_md5: list[tuple[str, int, str, int]] = []
        self._last_flush = time.monotonic()
        self._run_id: int | None = None
        self.notes: list[str] = []

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, reset: bool = False) -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        if reset:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
        hint = f"re-run with --reset-journal to start a new journal (complete files are kept), or remove {path}"
        try:
            if path.is_symlink():
                raise JournalError(f"journal {path} is a symlink; refusing to follow it: {hint}")
            # nofollow: SQLite refuses a symlink (also for its -wal/-shm companions)
            conn = sqlite3.connect(f"file:{quote(str(path))}?nofollow=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(str(check[0] if check else "quick_check failed"))
            conn.executescript(_SCHEMA)
            version = conn.execute("SELECT value FROM meta WHERE name='version'").fetchone()
            if version is None:
                conn.execute("INSERT INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            elif version[0] != str(SCHEMA_VERSION):
                raise JournalError(f"journal {path} has schema version {version[0]}, expected {SCHEMA_VERSION}: {hint}")
        except sqlite3.Error as exc:
            raise JournalError(f"journal {path} is damaged or unreadable ({exc}): {hint}") from exc
        journal = cls(path, conn)
        journal._after_open()
        return journal

    def _after_open(self) -> None:
        db = self._db
        row = db.execute("SELECT value FROM meta WHERE name='boot_id'").fetchone()
        current = boot_id()
        if row is not None and row[0] != current:
            # the machine restarted since the last run: only durable records can be trusted
            lost = db.execute("SELECT count(*) FROM parts WHERE synced=0").fetchone()[0]
            files = db.execute("SELECT count(*) FROM objects WHERE state=? AND synced=0", (COMPLETE,)).fetchone()[0]
            with self._tx():
                db.execute("DELETE FROM parts WHERE synced=0")
                db.execute("UPDATE objects SET state=? WHERE state=? AND synced=0", (REFETCH, COMPLETE))
            if lost or files:
                self.notes.append(
                    f"the machine restarted since the last run: {lost} range(s) and {files} file(s) "
                    "not yet synced to disk then are fetched again"
                )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('boot_id', ?)", (current,))
        seqs = [db.execute(f"SELECT coalesce(max(seq), 0) FROM {t}").fetchone()[0] for t in ("parts", "objects")]
        self._seq = max(seqs)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN")
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise JournalError(f"journal {self.path}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- runs and plans ----------------------------------------------------------------------

    def start_run(self, plan: Plan) -> list[str]:
        """Record the plan.  Returns notes: objects changed on the server, dropped from the selection."""
        db = self._db
        notes = list(self.notes)
        gen = (db.execute("SELECT max(gen) FROM objects").fetchone()[0] or 0) + 1
        self._gen = gen
        existing = {k: (e, s, st) for k, e, s, st in db.execute("SELECT key, etag, size, state FROM objects")}
        inserts: list[tuple[Any, ...]] = []
        changed: list[tuple[Any, ...]] = []
        same: list[tuple[int, str]] = []
        for o in plan.objects:
            old = existing.get(o.key)
            if old is None:
                inserts.append((o.key, o.relpath, o.size, o.etag, UNKNOWN, gen))
                self._rows[o.key] = (o.etag, o.size, UNKNOWN)
            elif old[0] != o.etag or old[1] != o.size:
                changed.append((o.relpath, o.size, o.etag, REFETCH, gen, o.key))
                self._rows[o.key] = (o.etag, o.size, REFETCH)
            else:
                same.append((gen, o.key))
                self._rows[o.key] = old
        with self._tx():
            db.executemany("INSERT INTO objects (key, relpath, size, etag, state, gen) VALUES (?,?,?,?,?,?)", inserts)
            db.executemany(
                "UPDATE objects SET relpath=?, size=?, etag=?, state=?, gen=?, mtime_ns=NULL, md5=NULL, synced=0 WHERE key=?",
                changed,
            )
            db.executemany("DELETE FROM parts WHERE key=?", [(c[-1],) for c in changed])
            db.executemany("UPDATE objects SET gen=? WHERE key=?", same)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('selection', ?)", (json.dumps(plan.selection.to_json()),))
            cur = db.execute("INSERT INTO runs (started, pid) VALUES (?, ?)", (time.time(), os.getpid()))
            self._run_id = cur.lastrowid
        for c in changed[:20]:
            notes.append(f"{c[-1]} changed on the server since the last run (ETag or size differs): fetched again from scratch")
        if len(changed) > 20:
            notes.append(f"... and {len(changed) - 20} more objects changed on the server since the last run")
        planned = {o.key for o in plan.objects}
        dropped = [k for k in existing if k not in planned]
        if dropped:
            notes.append(
                f"{len(dropped)} object(s) from an earlier selection are no longer selected; "
                f"they are left on disk untouched (e.g. {dropped[0]})"
            )
        return notes

    def end_run(self, outcome: str, summary: dict[str, Any]) -> None:
        self.flush()
        if self._run_id is not None:
            with self._tx():
                self._db.execute("UPDATE runs SET ended=?, outcome=?, summary=? WHERE id=?",
                                 (time.time(), outcome, json.dumps(summary), self._run_id))

    # -- per object ----------------------------------------------------------------------------

    def state_of(self, key: str) -> int | None:
        row = self._rows.get(key)
        return row[2] if row else None

    def done_ranges(self, key: str) -> list[tuple[int, int]]:
        return [(a, b) for a, b in self._db.execute("SELECT start, end FROM parts WHERE key=? ORDER BY start", (key,))]

    def drop_parts(self, key: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM parts WHERE key=?", (key,))

    def record_part(self, part: Part) -> None:
        """``part``'s bytes are in the temp file: record it at once (a single small commit)."""
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO parts (key, start, end, synced, seq) VALUES (?,?,?,0,?)",
                (part.obj.key, part.start, part.end, self._next_seq()),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc

    def record_complete(self, obj: PlannedObject, mtime_ns: int, md5: str | None = None) -> None:
        self._rows[obj.key] = (obj.etag, obj.size, COMPLETE)
        self._pending_files.append((obj.size, obj.etag, COMPLETE, mtime_ns, md5, self._next_seq(), obj.key))
        self.maybe_flush()

    def record_refetch(self, obj: PlannedObject) -> None:
        self._rows[obj.key] = (obj.etag, obj.size, REFETCH)
        with self._tx():
            self._db.execute("UPDATE objects SET state=?, etag=?, size=? WHERE key=?", (REFETCH, obj.etag, obj.size, obj.key))
            self._db.execute("DELETE FROM parts WHERE key=?", (obj.key,))

    def completed_info(self, key: str) -> tuple[int | None, str | None]:
        row = self._db.execute("SELECT mtime_ns, md5 FROM objects WHERE key=?", (key,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def maybe_flush(self) -> None:
        if len(self._pending_files) >= self.FLUSH_BATCH or time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending_files and not self._pending_md5:
            return
        batch, self._pending_files = self._pending_files, []
        md5s, self._pending_md5 = self._pending_md5, []
        with self._tx():
            self._db.executemany("UPDATE objects SET md5=?, verified_mtime_ns=? WHERE relpath=? AND size=?", md5s)
            self._db.executemany(
                "UPDATE objects SET size=?, etag=?, state=?, mtime_ns=?, md5=coalesce(?, md5), synced=0, seq=? WHERE key=?",
                batch,
            )
            self._db.executemany("DELETE FROM parts WHERE key=?", [(b[-1],) for b in batch])

    # -- durability ------------------------------------------------------------------------------

    def current_seq(self) -> int:
        self.flush()
        return self._seq

    def mark_synced(self, upto_seq: int) -> None:
        """Everything recorded up to ``upto_seq`` reached the disk (an ``os.sync()`` returned)."""
        with self._tx():
            self._db.execute("UPDATE parts SET synced=1 WHERE synced=0 AND seq<=?", (upto_seq,))
            self._db.execute("UPDATE objects SET synced=1 WHERE synced=0 AND state=? AND seq<=?", (COMPLETE, upto_seq))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    # -- verified checksums (the verifier's cache) -------------------------------------------------

    def checksum_cache(self) -> JournalChecksums:
        return JournalChecksums(self)

    # -- status ------------------------------------------------------------------------------------

    def status(self, active_pid: int | None) -> JournalStatus:
        db = self._db
        gen = db.execute("SELECT max(gen) FROM objects").fetchone()[0] or 0
        total = db.execute("SELECT count(*), coalesce(sum(size),0) FROM objects WHERE gen=?", (gen,)).fetchone()
        complete = db.execute("SELECT count(*), coalesce(sum(size),0) FROM objects WHERE gen=? AND state=?",
                              (gen, COMPLETE)).fetchone()
        partial = db.execute(
            "SELECT count(DISTINCT p.key), coalesce(sum(p.end - p.start),0) FROM parts p JOIN objects o ON o.key=p.key "
            "WHERE o.gen=? AND o.state!=?", (gen, COMPLETE)).fetchone()
        partial_bytes_total = db.execute(
            "SELECT coalesce(sum(size),0) FROM objects WHERE gen=? AND state!=? AND key IN (SELECT key FROM parts)",
            (gen, COMPLETE)).fetchone()[0]
        run = db.execute("SELECT started, ended, pid, outcome, summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        last_run = None
        if run:
            last_run = {
                "started": _iso(run[0]), "ended": _iso(run[1]) if run[1] else None, "pid": run[2],
                "outcome": run[3] or ("running" if active_pid else "interrupted"),
                "summary": json.loads(run[4]) if run[4] else None,
            }
        sel = db.execute("SELECT value FROM meta WHERE name='selection'").fetchone()
        pending_files = total[0] - complete[0] - partial[0]
        pending_bytes = total[1] - complete[1] - partial_bytes_total
        return JournalStatus(
            str(self.path), total[0], total[1], complete[0], complete[1], partial[0], partial[1],
            pending_files, pending_bytes, last_run, active_pid, json.loads(sel[0]) if sel else None,
        )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def status_of(dest: Path, journal_path: Path | None = None) -> JournalStatus:
    """Read a destination's journal (read-only; works while a pull is running)."""
    path = journal_path or default_journal_path(dest)
    if not path.is_file():
        raise UsageError(f"no journal at {path}: nothing was pulled to {dest} with a journal yet")
    active = holder_pid(dest / STATE_DIR / "lock")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&nofollow=1", uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        journal = Journal(path, conn)
        try:
            return journal.status(active)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path} is damaged or unreadable ({exc}): re-run pull with --reset-journal") from exc


class JournalChecksums:
    """The verifier's checksum cache, kept in the journal: an MD5 is trusted while the file's
    size and mtime are those it was computed for.  Writes are batched with the journal's."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def get(self, relpath: str, size: int, mtime_ns: int) -> str | None:
        row = self.journal._db.execute(
            "SELECT md5 FROM objects WHERE relpath=? AND size=? AND verified_mtime_ns=?", (relpath, size, mtime_ns)
        ).fetchone()
        return row[0] if row and row[0] else None

    def put(self, relpath: str, size: int, mtime_ns: int, md5: str) -> None:
        self.journal._pending_md5.append((md5, mtime_ns, relpath, size))
        self.journal.maybe_flush()


def open_journal_if_any(dest: Path) -> Journal | None:
    """The destination's journal for reading and caching checksums, or None when there is none
    or a pull holds it (``verify`` then simply hashes everything)."""
    path = default_journal_path(dest)
    if not path.is_file() or holder_pid(dest / STATE_DIR / "lock") is not None:
        return None
    try:
        return Journal.open(path)
    except JournalError:
        return None
