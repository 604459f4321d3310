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
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import JournalError, LockedError, UsageError
from ..models import Part, Plan, PlannedObject
from ..paths import STATE_DIR, is_complete_file

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
    crc INTEGER,
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


def _migrate(conn: _Db) -> None:
    """Bring a journal of an earlier hcpsync up to this schema (same version, added columns)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(parts)")}
    if "crc" not in columns:  # ranges recorded without a CRC cannot be checked: fetched again
        conn.execute("ALTER TABLE parts ADD COLUMN crc INTEGER")


def default_journal_path(dest: Path) -> Path:
    return dest / STATE_DIR / JOURNAL_NAME


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


#: SQLite primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_FULL = 5, 6, 8, 13


def _hint(path: Path) -> str:
    return f"re-run with --reset-journal to start a new journal (complete files are kept), or remove {path}"


def journal_error(path: Path, exc: sqlite3.Error) -> JournalError:
    """One clear line for an SQLite error on the journal at ``path``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code == _SQLITE_READONLY:
        why = f"is not writable ({exc}): check the permissions of it and its folder, or use --journal PATH or --no-journal"
    elif code == _SQLITE_FULL:
        why = "cannot grow: no space left on its file system"
    elif code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        why = f"is busy ({exc}): another process holds it"
    else:
        why = f"is damaged or unreadable ({exc}): {_hint(path)}"
    return JournalError(f"journal {path} {why}")


class _Db:
    """The journal's SQLite connection: every :class:`sqlite3.Error` becomes a :class:`JournalError`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        try:
            return self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from exc

    def executescript(self, sql: str) -> sqlite3.Cursor:
        try:
            return self.conn.executescript(sql)
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from exc

    def close(self) -> None:
        self.conn.close()


def connect(path: Path, mode: str = "rwc") -> _Db:
    """Open the SQLite file at ``path`` (``mode`` ro, rw or rwc), never through a symlink."""
    try:
        # nofollow: SQLite refuses a symlink (also for its -wal/-shm companions)
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}&nofollow=1", uri=True, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise journal_error(path, exc) from exc
    db = _Db(conn, path)
    db.execute("PRAGMA busy_timeout=5000")
    return db


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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open the lock file {self.path}: {exc.strerror} (is it a symlink?)") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise JournalError(f"the lock file {self.path} is not a regular file: remove it (hcpsync creates it again)")
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


def _check_journal_path(path: Path) -> None:
    """Refuse a journal path SQLite cannot use as its file, and create its folder."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise JournalError(f"cannot use the journal {path}: {exc.strerror}") from exc
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise JournalError(f"journal {path} is a symlink; refusing to follow it: {_hint(path)}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise JournalError(f"journal {path} is not a regular file (a folder?): move it away, or use --journal PATH")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"cannot create the journal's folder {path.parent}: {exc.strerror}") from exc


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise JournalError(f"cannot remove {path} for --reset-journal: {exc.strerror}") from exc


class Journal:
    """The journal of one destination.  Use :meth:`open`; close with :meth:`close`."""

    #: buffered completed-file records are committed at least this often (seconds) ...
    FLUSH_INTERVAL = 0.25
    #: ... or when this many are waiting
    FLUSH_BATCH = 512

    def __init__(self, path: Path, db: _Db) -> None:
        self.path = path
        self._db = db
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
        if reset:
            for suffix in ("", "-wal", "-shm"):
                _remove(Path(f"{path}{suffix}"))
        _check_journal_path(path)
        db = connect(path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise JournalError(f"journal {path} is damaged ({check[0] if check else 'quick_check failed'}): {_hint(path)}")
            db.executescript(_SCHEMA)
            _migrate(db)
            version = db.execute("SELECT value FROM meta WHERE name='version'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            elif version[0] != str(SCHEMA_VERSION):
                raise JournalError(f"journal {path} has schema version {version[0]}, expected {SCHEMA_VERSION}: {_hint(path)}")
            journal = cls(path, db)
            journal._after_open()
        except BaseException:
            db.close()
            raise
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
        except BaseException:
            with contextlib.suppress(JournalError):
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

    def recorded_parts(self) -> dict[str, list[tuple[int, int, int | None]]]:
        """key -> its recorded ranges ``(start, end, crc)``, for every object with any."""
        out: dict[str, list[tuple[int, int, int | None]]] = {}
        for key, start, end, crc in self._db.execute("SELECT key, start, end, crc FROM parts ORDER BY key, start"):
            out.setdefault(key, []).append((start, end, crc))
        return out

    def drop_ranges(self, ranges: dict[str, list[int]]) -> None:
        """Forget the recorded ranges ``key -> [start, ...]`` (their bytes are not in the temp file)."""
        with self._tx():
            self._db.executemany("DELETE FROM parts WHERE key=? AND start=?",
                                 [(k, start) for k, starts in ranges.items() for start in starts])

    def record_part(self, part: Part, crc: int) -> None:
        """``part``'s bytes, of CRC-32 ``crc``, are in the temp file: record it at once (a small commit)."""
        self._db.execute(
            "INSERT OR REPLACE INTO parts (key, start, end, synced, seq, crc) VALUES (?,?,?,0,?,?)",
            (part.obj.key, part.start, part.end, self._next_seq(), crc),
        )

    def record_complete(self, obj: PlannedObject, mtime_ns: int, md5: str | None = None) -> None:
        self._rows[obj.key] = (obj.etag, obj.size, COMPLETE)
        self._pending_files.append((obj.size, obj.etag, COMPLETE, mtime_ns, md5, self._next_seq(), obj.key))
        self.maybe_flush()

    def bind_destination(self, dest: Path, default_location: bool) -> None:
        """Record which destination this journal describes; refuse another one.

        A journal in its default place, ``DEST/.hcpsync/``, moves with its destination and is
        re-bound silently.  One given with ``--journal`` describes one destination only: its
        ranges name temp files under that destination.
        """
        real = os.path.realpath(dest)
        row = self._db.execute("SELECT value FROM meta WHERE name='dest'").fetchone()
        if row is not None and row[0] != real and not default_location:
            raise JournalError(
                f"journal {self.path} records pulls into {row[0]}, not {real}: "
                "give each destination its own journal (the default is DEST/.hcpsync/journal.sqlite)"
            )
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dest', ?)", (real,))

    def recorded_source(self) -> dict[str, str] | None:
        """The bucket and release of the last selection pulled with this journal, if any."""
        row = self._db.execute("SELECT value FROM meta WHERE name='selection'").fetchone()
        try:
            sel = json.loads(row[0]) if row else None
        except ValueError:
            return None
        if not isinstance(sel, dict) or not isinstance(sel.get("bucket"), str) or not isinstance(sel.get("release"), str):
            return None
        return {"bucket": sel["bucket"], "release": sel["release"]}

    def record_refetch_path(self, relpath: str) -> None:
        """The file at ``relpath`` is known bad (``verify`` found it mismatched): fetch it again."""
        with self._tx():
            self._db.execute("UPDATE objects SET state=?, synced=0 WHERE relpath=?", (REFETCH, relpath))
            self._db.execute("DELETE FROM parts WHERE key IN (SELECT key FROM objects WHERE relpath=?)", (relpath,))

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

    def status(self, active_pid: int | None, dest: Path) -> JournalStatus:
        """Counts as the next pull would see them: a file is complete when the journal does not
        mark it for refetch and a regular file of the planned size is at its final path under
        ``dest`` (completed-file records are batched, so the journal alone lags behind the disk)."""
        db = self._db
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
            str(self.path), total[0], total[1], complete[0], complete[1], partial[0], partial[1],
            total[0] - complete[0] - partial[0], total[1] - complete[1] - partial[2],
            self._last_run(active_pid), active_pid, self._selection(),
        )

    def _last_run(self, active_pid: int | None) -> dict[str, Any] | None:
        run = self._db.execute("SELECT started, ended, pid, outcome, summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if run is None:
            return None
        return {
            "started": _iso(run[0]), "ended": _iso(run[1]) if run[1] else None, "pid": run[2],
            "outcome": run[3] or ("running" if active_pid else "interrupted"),
            "summary": json.loads(run[4]) if run[4] else None,
        }

    def _selection(self) -> dict[str, Any] | None:
        sel = self._db.execute("SELECT value FROM meta WHERE name='selection'").fetchone()
        return json.loads(sel[0]) if sel else None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def status_of(dest: Path, journal_path: Path | None = None) -> JournalStatus:
    """Read a destination's journal: read-only, so that it works while a pull is running; when
    that fails and no pull holds the destination, open it as a pull would (which recovers, say,
    a journal whose write-ahead log was lost: a plain re-run works there too)."""
    path = journal_path or default_journal_path(dest)
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
        return journal.status(active, dest)
    finally:
        journal.close()


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

    def mismatched(self, relpath: str) -> None:
        """``verify`` found the file at ``relpath`` wrong: the next pull fetches it again."""
        self.journal.flush()
        self.journal.record_refetch_path(relpath)


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
