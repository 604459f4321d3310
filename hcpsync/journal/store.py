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

Its schema and connection are in :mod:`.db`, the lock in :mod:`.lock`, ``status`` in
:mod:`.status`, the verifier's checksum cache in :mod:`.checksums`, a pull's hold on it in
:mod:`.session`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JournalError
from ..models import Part, PlannedObject, Selection
from .db import COMPLETE, REFETCH, _Db, boot_id, check_journal_path, open_database, remove_file
from .plan import PlanTable

if TYPE_CHECKING:
    from ..planfile import Plan
    from .checksums import JournalChecksums


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
        self._amends: int | None = None  # the generation an amending run adds to
        self._seq = 0
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
                remove_file(Path(f"{path}{suffix}"))
        check_journal_path(path)
        db = open_database(path)
        try:
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

    def begin_run(self, selection: Selection, *, amend: bool = False) -> PlanTable:
        """Start a run of ``selection``: its plan is a new generation of the ``objects`` rows,
        written by the listing through the :class:`PlanTable` returned (see :mod:`.plan`).

        ``amend``: a run that adds to the last plan rather than replacing it (``verify --repair``
        fetching a few of its files): the recorded selection is kept, and :meth:`fold_last_plan`
        gives the last plan's other rows to this run's generation."""
        db = self._db
        last = db.execute("SELECT max(coalesce((SELECT max(gen) FROM objects), 0), "
                          "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE name='gen'), 0))").fetchone()[0]
        gen = int(last) + 1
        with self._tx():
            db.execute("INSERT OR REPLACE INTO meta VALUES ('gen', ?)", (str(gen),))
            if not amend:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('selection', ?)", (json.dumps(selection.to_json()),))
            cur = db.execute("INSERT INTO runs (started, pid) VALUES (?, ?)", (time.time(), os.getpid()))
            self._run_id = cur.lastrowid
        self._gen = gen
        self._amends = int(last) if amend else None
        return PlanTable(db, gen)

    def fold_last_plan(self) -> None:
        """After an amending run (:meth:`begin_run`): the last plan's rows this run did not plan
        become this run's, so the plan stays whole (``status``, the next run's notes)."""
        if self._amends is None:
            return
        self.flush()
        with self._tx():
            for table in ("objects", "folders", "rejected"):
                self._db.execute(f"UPDATE {table} SET gen=? WHERE gen=?", (self._gen, self._amends))
        self._amends = None

    def plan_notes(self, table: PlanTable) -> list[str]:
        """Once the listing is complete: notes on objects changed on the server since the last
        run, and on those an earlier selection planned and this one does not."""
        notes = list(self.notes)
        t = table.totals
        notes += [f"{k} changed on the server since the last run (ETag or size differs): fetched again from scratch"
                  for k in t.changed_keys]
        if t.changed > len(t.changed_keys):
            notes.append(f"... and {t.changed - len(t.changed_keys)} more objects changed on the server since the last run")
        dropped, one = table.dropped()
        if dropped:
            notes.append(f"{dropped} object(s) from an earlier selection are no longer selected; "
                         f"they are left on disk untouched (e.g. {one})")
        return notes

    def start_run(self, plan: Plan) -> list[str]:
        """Record a plan made beforehand (all at once); returns the notes of :meth:`plan_notes`."""
        table = self.begin_run(plan.selection)
        for unit, page in enumerate(plan.pages(), 1):
            table.add(page, unit)
        return self.plan_notes(table)

    def end_run(self, outcome: str, summary: dict[str, Any]) -> None:
        self.flush()
        if self._run_id is not None:
            with self._tx():
                self._db.execute("UPDATE runs SET ended=?, outcome=?, summary=? WHERE id=?",
                                 (time.time(), outcome, json.dumps(summary), self._run_id))

    # -- per object ----------------------------------------------------------------------------

    def state_of(self, key: str) -> int | None:
        row = self._db.execute("SELECT state FROM objects WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else None

    def done_ranges(self, key: str) -> list[tuple[int, int]]:
        return [(a, b) for a, b in self._db.execute("SELECT start, end FROM parts WHERE key=? ORDER BY start", (key,))]

    def recorded_parts(self) -> dict[str, list[tuple[int, int, int | None]]]:
        """key -> its recorded ranges ``(start, end, crc)``, for every object with any."""
        out: dict[str, list[tuple[int, int, int | None]]] = {}
        for key, start, end, crc in self._db.execute("SELECT key, start, end, crc FROM parts ORDER BY key, start"):
            out.setdefault(key, []).append((start, end, crc))
        return out

    def relpaths(self, keys: list[str]) -> dict[str, str]:
        """key -> local path, for those of ``keys`` the journal knows."""
        return {k: r for k in keys for (r,) in self._db.execute("SELECT relpath FROM objects WHERE key=?", (k,))}

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

    def _selection_doc(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE name='selection'").fetchone()
        try:
            sel = json.loads(row[0]) if row else None
        except ValueError:
            return None
        if not isinstance(sel, dict) or not isinstance(sel.get("bucket"), str) or not isinstance(sel.get("release"), str):
            return None
        return sel

    def recorded_source(self) -> dict[str, str] | None:
        """The bucket and release of the last selection pulled with this journal, if any."""
        sel = self._selection_doc()
        return None if sel is None else {"bucket": sel["bucket"], "release": sel["release"]}

    def recorded_selection(self) -> Selection | None:
        """The last selection pulled with this journal (what ``verify`` checks by default), if any."""
        return Selection.from_json(self._selection_doc())

    def record_refetch_path(self, relpath: str) -> None:
        """The file at ``relpath`` is known bad (``verify`` found it mismatched): fetch it again."""
        with self._tx():
            self._db.execute("UPDATE objects SET state=?, synced=0 WHERE relpath=?", (REFETCH, relpath))
            self._db.execute("DELETE FROM parts WHERE key IN (SELECT key FROM objects WHERE relpath=?)", (relpath,))

    def record_refetch(self, obj: PlannedObject) -> None:
        with self._tx():
            self._db.execute("UPDATE objects SET state=?, etag=?, size=? WHERE key=?", (REFETCH, obj.etag, obj.size, obj.key))
            self._db.execute("DELETE FROM parts WHERE key=?", (obj.key,))

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
        from .checksums import JournalChecksums

        return JournalChecksums(self)
