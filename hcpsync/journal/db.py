"""The journal's SQLite file: schema, migration, a connection whose every error is a one-line
:class:`~hcpsync.errors.JournalError`, and the states an object can be in."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import JournalError
from ..paths import STATE_DIR

#: 2: the plan lives in the journal (``objects.unit``/``folded``, ``folders``, ``rejected``); 1 is migrated
SCHEMA_VERSION = 2
JOURNAL_NAME = "journal.sqlite"

# objects.state
UNKNOWN = 0  # planned; nothing known about the local file (a present file of the right size is trusted)
REFETCH = 1  # must be fetched again whatever is on disk (changed on the server, or not durable)
COMPLETE = 2  # at its final path, complete

_TABLES = """
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
    seq INTEGER NOT NULL DEFAULT 0,
    unit INTEGER,
    folded TEXT
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
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    pid INTEGER NOT NULL,
    outcome TEXT,
    summary TEXT
);
-- the folders of the planned keys (folded, as objects.folded): a key that is also a folder clashes
CREATE TABLE IF NOT EXISTS folders (folded TEXT PRIMARY KEY, gen INTEGER NOT NULL, key TEXT NOT NULL);
-- listed keys the plan of run ``gen`` refuses (unsafe local path, clash, collision), and why
CREATE TABLE IF NOT EXISTS rejected (key TEXT PRIMARY KEY, reason TEXT NOT NULL, gen INTEGER NOT NULL);
"""

_INDEXES = """
-- the checksum cache looks files up by path (the verifier's get, flush's md5 UPDATEs): without
-- this index each lookup scanned the whole table, and a re-run was quadratic in the file count.
CREATE INDEX IF NOT EXISTS objects_relpath ON objects (relpath);
-- the engine reads a run's plan a listing unit at a time, in key order, a page at a time
CREATE INDEX IF NOT EXISTS objects_plan ON objects (gen, unit, key);
-- keys that land in one local file on case-folding file systems
CREATE INDEX IF NOT EXISTS objects_folded ON objects (folded);
"""


def _migrate(conn: _Db) -> None:
    """Bring a journal of an earlier hcpsync up to this schema: added columns (a schema-1 journal's
    rows get theirs when the next run plans them again; its ranges and complete files stay)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(parts)")}
    if "crc" not in columns:  # ranges recorded without a CRC cannot be checked: fetched again
        conn.execute("ALTER TABLE parts ADD COLUMN crc INTEGER")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(objects)")}
    for name in ("unit INTEGER", "folded TEXT"):
        if name.split()[0] not in columns:
            conn.execute(f"ALTER TABLE objects ADD COLUMN {name}")


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

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
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


def check_journal_path(path: Path) -> None:
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
    make_journal_folder(path)


def make_journal_folder(path: Path) -> None:
    """Create the folder the journal at ``path`` lives in (one line if it cannot be)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"cannot create the journal's folder {path.parent}: {exc.strerror}") from exc


def remove_file(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise JournalError(f"cannot remove {path} for --reset-journal: {exc.strerror}") from exc


def _check_version(db: _Db, path: Path) -> None:
    """Refuse a journal of a newer schema than this hcpsync knows (older ones are migrated)."""
    row = db.execute("SELECT value FROM meta WHERE name='version'").fetchone()
    if row is not None and (not row[0].isdigit() or int(row[0]) > SCHEMA_VERSION):
        raise JournalError(f"journal {path} has schema version {row[0]}, newer than this hcpsync's "
                           f"({SCHEMA_VERSION}): upgrade hcpsync, or {_hint(path)}")


def open_database(path: Path) -> _Db:
    """Open (creating if needed) the journal at ``path``: WAL mode, checked, schema up to date."""
    db = connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise JournalError(f"journal {path} is damaged ({check[0] if check else 'quick_check failed'}): {_hint(path)}")
        db.executescript(_TABLES)
        _check_version(db, path)
        _migrate(db)
        db.executescript(_INDEXES)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
    except BaseException:
        db.close()
        raise
    return db
