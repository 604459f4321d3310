"""The plan of one run as a table: the rows of ``objects`` whose ``gen`` is the run's.

A listing page at a time, :meth:`PlanTable.add` writes the planned objects of one listing *unit*
(a folder, listed by one worker) in one transaction:
new keys are inserted, known ones reconciled in SQL (an ETag or size that changed marks the
object for refetch and forgets its ranges; a complete file stays complete), and keys that cannot
be local files beside the others are refused, whichever page they came in:

* a key that is also the folder of other keys (``a/b`` and ``a/b/c``);
* keys that differ only by case or Unicode normalisation (one file on macOS, Windows, exFAT).

The engine reads the plan back with :class:`PlanFeed` a unit at a time, once the unit's listing
is complete (so a key that collides with a later page of its unit is refused before any byte of
either moves; units never collide with each other: the lister groups folders that fold to one
name), in key order, a page at a time, while the listing goes on; nothing holds the whole plan in
memory.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..models import PlannedObject, Rejected
from ..paths import fold_name
from .db import REFETCH, UNKNOWN, _Db

_CLASH = "key is also the folder of other keys; cannot be both a file and a folder locally"
#: notes name at most this many objects changed on the server since the last run
MAX_CHANGED_NOTES = 20

_PAGE_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS page (
    key TEXT PRIMARY KEY, relpath TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    folded TEXT NOT NULL, unit INTEGER NOT NULL)
"""
_PAGE_FOLDERS = "CREATE TEMP TABLE IF NOT EXISTS page_folders (folded TEXT PRIMARY KEY, key TEXT NOT NULL)"

_UPSERT = """
INSERT INTO objects (key, relpath, size, etag, state, gen, unit, folded)
SELECT key, relpath, size, etag, :unknown, :gen, unit, folded FROM temp.page WHERE true
ON CONFLICT (key) DO UPDATE SET
    state = CASE WHEN objects.etag != excluded.etag OR objects.size != excluded.size THEN :refetch
                 ELSE objects.state END,
    mtime_ns = CASE WHEN objects.etag != excluded.etag OR objects.size != excluded.size THEN NULL
                    ELSE objects.mtime_ns END,
    md5 = CASE WHEN objects.etag != excluded.etag OR objects.size != excluded.size THEN NULL ELSE objects.md5 END,
    synced = CASE WHEN objects.etag != excluded.etag OR objects.size != excluded.size THEN 0 ELSE objects.synced END,
    relpath = excluded.relpath, size = excluded.size, etag = excluded.etag, gen = excluded.gen,
    unit = excluded.unit, folded = excluded.folded
"""
# CROSS JOIN: the page is the outer loop, each of its rows one index lookup (left to itself, the
# planner may scan the whole plan through objects_plan for every page: quadratic)
_CHANGED = """
SELECT p.key FROM temp.page p CROSS JOIN objects o ON o.key = p.key WHERE o.etag != p.etag OR o.size != p.size
"""
_COLLISIONS = """
SELECT p.key, o.key FROM temp.page p CROSS JOIN objects o ON o.folded = p.folded AND o.key != p.key WHERE o.gen = :gen
"""
_KEY_IS_FOLDER = "SELECT p.key FROM temp.page p CROSS JOIN folders f ON f.folded = p.folded WHERE f.gen = :gen"
_FOLDER_IS_KEY = "SELECT o.key FROM temp.page_folders f CROSS JOIN objects o ON o.folded = f.folded WHERE o.gen = :gen"


class PlanRow(NamedTuple):
    """A planned object as the engine reads it, with what the journal knows of it."""

    obj: PlannedObject
    state: int
    md5: str | None  # the checksum cache: the MD5 of the file of ...
    verified_mtime_ns: int | None  # ... this mtime


@dataclass
class PlanTotals:
    """What the plan of a run holds so far (refused keys not counted)."""

    files: int = 0
    bytes: int = 0
    changed: int = 0
    changed_keys: list[str] = field(default_factory=list)


class PlanTable:
    """The plan of run ``gen`` in the journal-schema database ``db`` (the journal, or a saved plan)."""

    def __init__(self, db: _Db, gen: int, *, writer: bool = True) -> None:
        self.db = db
        self.gen = gen
        self.totals = PlanTotals()
        #: keys refused after they were planned (a later page collided with them): the engine
        #: checks this before it starts a file read from an earlier page
        self.refused: set[str] = set()
        if writer:
            db.execute(_PAGE_TABLE)
            db.execute(_PAGE_FOLDERS)

    @classmethod
    def reader(cls, db: _Db, gen: int) -> PlanTable:
        """The plan of run ``gen``, to read only (``db`` may be read-only)."""
        return cls(db, gen, writer=False)

    # -- writing ---------------------------------------------------------------------------

    def add(self, objects: Sequence[PlannedObject], unit: int = 0) -> list[Rejected]:
        """Plan ``objects`` (one listing page of listing unit ``unit``); returns the keys refused
        because of them."""
        fresh = self._fresh(objects)
        if not fresh:
            return []
        db, gen = self.db, self.gen
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM temp.page")
            db.execute("DELETE FROM temp.page_folders")
            db.executemany("INSERT OR IGNORE INTO temp.page VALUES (?,?,?,?,?,?)",
                           [(o.key, o.relpath, o.size, o.etag, fold_name(o.relpath), unit) for o in fresh])
            db.executemany("INSERT OR IGNORE INTO temp.page_folders VALUES (?,?)", _folders(fresh))
            changed = [k for (k,) in db.execute(_CHANGED)]
            db.executemany("DELETE FROM parts WHERE key=?", [(k,) for k in changed])
            db.execute(_UPSERT, {"unknown": UNKNOWN, "refetch": REFETCH, "gen": gen})
            db.execute("INSERT INTO folders SELECT folded, :gen, key FROM temp.page_folders WHERE true "
                       "ON CONFLICT (folded) DO UPDATE SET gen = excluded.gen, key = excluded.key", {"gen": gen})
            refused = self._conflicts()
            db.execute("COMMIT")
        except BaseException:
            db.conn.rollback()
            raise
        self._count(fresh, changed, refused)
        return refused

    @staticmethod
    def _fresh(objects: Sequence[PlannedObject]) -> list[PlannedObject]:
        """``objects``, each key once (listing units never overlap: no key comes in two pages)."""
        return list({o.key: o for o in objects}.values())

    def _conflicts(self) -> list[Rejected]:
        """Refuse the keys of this page that clash or collide with any key of the plan (both sides)."""
        db, gen = self.db, {"gen": self.gen}
        found: dict[str, str] = {}
        for (key,) in db.execute(_KEY_IS_FOLDER, gen):
            found[key] = _CLASH
        for (key,) in db.execute(_FOLDER_IS_KEY, gen):
            found[key] = _CLASH
        pairs: dict[str, list[str]] = {}
        for new, old in db.execute(_COLLISIONS, gen).fetchall():
            pairs.setdefault(new, []).append(old)
            pairs.setdefault(old, []).append(new)
        for key, others in pairs.items():
            found.setdefault(key, _collision(others))
        if found:
            self.reject_in_tx([Rejected(k, why) for k, why in found.items()])
        return [Rejected(k, why) for k, why in found.items()]

    def reject(self, rejected: Sequence[Rejected]) -> None:
        """Record listed keys the plan refuses (unsafe local paths...)."""
        if rejected:
            self.db.execute("BEGIN")
            try:
                self.reject_in_tx(rejected)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.conn.rollback()
                raise

    def reject_in_tx(self, rejected: Sequence[Rejected]) -> None:
        rows = [(r.key, r.reason, self.gen) for r in rejected]
        self.db.executemany("INSERT INTO rejected VALUES (?,?,?) ON CONFLICT (key) DO UPDATE SET "
                            "reason = excluded.reason, gen = excluded.gen", rows)
        planned = self.db.execute  # a refused key that was planned leaves the totals
        for r in rejected:
            row = planned("SELECT size FROM objects WHERE key=? AND gen=?", (r.key, self.gen)).fetchone()
            if row is not None and r.key not in self.refused:
                self.refused.add(r.key)
                self.totals.files -= 1
                self.totals.bytes -= row[0]

    def _count(self, fresh: Sequence[PlannedObject], changed: list[str], refused: list[Rejected]) -> None:
        t = self.totals
        t.files += len(fresh)
        t.bytes += sum(o.size for o in fresh)
        t.changed += len(changed)
        t.changed_keys.extend(changed[: max(0, MAX_CHANGED_NOTES - len(t.changed_keys))])

    # -- reading ---------------------------------------------------------------------------

    def page(self, unit: int, after: str, limit: int) -> list[PlanRow]:
        """Up to ``limit`` planned objects of listing unit ``unit`` with keys after ``after``, in key order."""
        rows = self.db.execute(
            "SELECT key, relpath, size, etag, state, md5, verified_mtime_ns FROM objects o WHERE gen=? AND unit=? "
            "AND key>? AND NOT EXISTS (SELECT 1 FROM rejected r WHERE r.key = o.key AND r.gen = o.gen) "
            "ORDER BY key LIMIT ?", (self.gen, unit, after, limit)).fetchall()
        return [PlanRow(PlannedObject(k, s, e, r), st, md5, vm) for k, r, s, e, st, md5, vm in rows]

    def by_key(self, after: str | None, limit: int) -> list[PlannedObject]:
        """Up to ``limit`` planned objects with keys after ``after`` (None: from the first), in key order."""
        rows = self.db.execute(
            "SELECT key, relpath, size, etag FROM objects o WHERE +gen=? AND key>? "  # +gen: walk the keys
            "AND NOT EXISTS (SELECT 1 FROM rejected r WHERE r.key = o.key AND r.gen = o.gen) ORDER BY key LIMIT ?",
            (self.gen, after if after is not None else "", limit)).fetchall()
        return [PlannedObject(k, s, e, r) for k, r, s, e in rows]

    def sizes(self) -> Iterator[tuple[str, int]]:
        """``(relpath, size)`` of every planned object, streamed (one query, no object built)."""
        yield from self.db.execute(
            "SELECT relpath, size FROM objects o WHERE +gen=? "
            "AND NOT EXISTS (SELECT 1 FROM rejected r WHERE r.key = o.key AND r.gen = o.gen)", (self.gen,))

    def rejected(self) -> list[Rejected]:
        return [Rejected(k, why) for k, why in self.db.execute(
            "SELECT key, reason FROM rejected WHERE gen=? ORDER BY key", (self.gen,))]

    def relpaths_of(self, subject: str) -> set[str]:
        """The local paths planned for one subject (a subject's files: bounded)."""
        return {r for (r,) in self.db.execute("SELECT relpath FROM objects WHERE +gen=? AND relpath >= ? AND relpath < ?",
                                               (self.gen, subject + "/", subject + "0"))}

    def has_relpath(self, relpath: str) -> bool:
        row = self.db.execute("SELECT 1 FROM objects WHERE +gen=? AND relpath=?", (self.gen, relpath)).fetchone()
        return row is not None

    def rejected_keys_of(self, prefix: str) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM rejected WHERE gen=? AND key >= ? AND key < ?",
                                              (self.gen, prefix, prefix[:-1] + "0"))}

    def dropped(self) -> tuple[int, str | None]:
        """Objects an earlier selection planned that this run does not: how many, and one of them."""
        n = self.db.execute("SELECT count(*) FROM objects WHERE gen<?", (self.gen,)).fetchone()[0]
        one = self.db.execute("SELECT key FROM objects WHERE gen<? LIMIT 1", (self.gen,)).fetchone() if n else None
        return int(n), one[0] if one else None


def _folders(objects: Sequence[PlannedObject]) -> list[tuple[str, str]]:
    """The folders of ``objects``' local paths (folded), each once with one key in it."""
    out: dict[str, str] = {}
    for o in objects:
        folded = fold_name(o.relpath)
        i = folded.rfind("/")
        while i > 0:
            parent = folded[:i]
            if parent in out:
                break
            out[parent] = o.key
            i = folded.rfind("/", 0, i)
    return list(out.items())


def _collision(others: list[str]) -> str:
    names = ", ".join(repr(k) for k in sorted(set(others)))
    return (f"local path collides with {names} (differs only by case or Unicode normalisation: one file on "
            "macOS, Windows, exFAT and case-folding file systems)")


class PlanFeed:
    """The plan of a run as the engine reads it: batches of objects, a listing unit at a time once
    its listing is complete, while the listing goes on (``async for batch in feed``).

    The producer calls :meth:`unit_done` for each complete unit and :meth:`close` at the end (with
    its error, if it failed: the next read raises it); a read waits for either.  ``on_rows`` sees
    each batch's rows before the engine does (the engine looks at a batch's files before it reads
    the next batch: what it keeps of the rows can be replaced batch by batch).
    """

    def __init__(self, table: PlanTable, batch: int = 512,
                 on_rows: Callable[[list[PlanRow]], None] | None = None) -> None:
        self.table = table
        self.batch = batch
        self.on_rows = on_rows
        self._units: collections.deque[int] = collections.deque()
        self._after = ""
        self._grew = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def unit_done(self, unit: int) -> None:
        self._units.append(unit)
        self._grew.set()

    def close(self, error: BaseException | None = None) -> None:
        self._closed, self._error = True, error
        self._grew.set()

    def __aiter__(self) -> PlanFeed:
        return self

    async def __anext__(self) -> list[PlannedObject]:
        while True:
            batch = self._read()
            if batch:
                return batch
            if self._units:
                continue
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._grew.clear()
            await self._grew.wait()

    def _read(self) -> list[PlannedObject]:
        """The next batch of the unit being read (empty when there is none, or it just ended)."""
        if not self._units:
            return []
        rows = self.table.page(self._units[0], self._after, self.batch)
        if not rows:
            self._units.popleft()
            self._after = ""
            return []
        self._after = rows[-1].obj.key
        if self.on_rows is not None:
            self.on_rows(rows)
        return [r.obj for r in rows if r.obj.key not in self.table.refused]
