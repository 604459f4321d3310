"""A plan: what a selection covers, as a summary and an iterator over its objects.

The objects live in a SQLite file of the journal's schema (a temporary one, or the file of
``hcpsync plan --save``), read a page at a time: a plan of 15 M objects costs the memory of a
page, not of the objects.  :meth:`Plan.build` makes one from objects in memory (tests, small
scripts); :meth:`Plan.load` opens a saved one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import HcpsyncError, UsageError
from .models import Absent, ObjectInfo, PlannedObject, Rejected, Selection, coverage_counts

#: what ``meta.kind`` says in a saved plan
PLAN_KIND = "hcpsync-plan"
#: objects read from the file at a time
PAGE = 2000


class Plan:
    """The plan of ``selection``: ``files``, ``total_bytes``, ``rejected``, ``notes``; iterate
    :attr:`objects` (or :meth:`iter_objects`) for the objects, in key order."""

    def __init__(self, selection: Selection, path: Path, gen: int, notes: Sequence[str] = (), *,
                 files: int, total_bytes: int, temporary: bool = False, absent: Sequence[Absent] | None = None) -> None:
        self.selection = selection
        #: the manifests' files within the selection that S3 does not have (None: manifests not fetched)
        self.absent: tuple[Absent, ...] | None = tuple(absent) if absent is not None else None
        self.path = path
        self.gen = gen
        self.notes: tuple[str, ...] = tuple(notes)
        self.files = files
        self.total_bytes = total_bytes
        self._rejected: tuple[Rejected, ...] | None = None
        self._summary: tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]] | None = None
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(path.parent), True) if temporary else None

    # -- making and opening ----------------------------------------------------------------

    @classmethod
    def build(cls, selection: Selection, objects: Iterable[PlannedObject], rejected: Sequence[Rejected] = (),
              notes: Sequence[str] = ()) -> Plan:
        """A plan of the given objects (kept in a temporary file, removed with the plan)."""
        from .journal.plan import PlanTable

        path = scratch_plan_path()
        db = open_plan_db(path)
        try:
            table = PlanTable(db, 1)
            batch: list[PlannedObject] = []
            for o in objects:
                batch.append(o)
                if len(batch) == PAGE:
                    table.add(batch)
                    batch = []
            table.add(batch)
            table.reject(rejected)
            write_meta(db, selection, 1, notes, table.totals.files, table.totals.bytes)
        finally:
            db.close()
        return cls(selection, path, 1, notes, files=table.totals.files, total_bytes=table.totals.bytes, temporary=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """The plan saved at ``path`` (``hcpsync plan --save``); one clear line when it is none."""
        from .journal.db import connect

        p = Path(path).expanduser()
        if not p.is_file():
            raise UsageError(f"no saved plan at {p}: make one with hcpsync plan ... --save {p}")
        try:
            db = connect(p, mode="ro")
            try:
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            finally:
                db.close()
        except HcpsyncError:
            raise UsageError(f"{p} is not a plan saved by hcpsync plan --save (not an SQLite file of its kind)") from None
        return cls._from_meta(p, meta)

    @classmethod
    def _from_meta(cls, p: Path, meta: dict[str, str]) -> Plan:
        if meta.get("kind") != PLAN_KIND:
            raise UsageError(f"{p} is not a plan saved by hcpsync plan --save")
        if meta.get("listing") != "complete":
            raise UsageError(f"the plan {p} is incomplete (its listing did not finish): make it again")
        selection = Selection.from_json(json.loads(meta.get("selection", "null")))
        if selection is None:
            raise UsageError(f"the plan {p} has no valid selection: make it again")
        return cls(selection, p, int(meta["gen"]), json.loads(meta.get("notes", "[]")),
                   files=int(meta["files"]), total_bytes=int(meta["bytes"]), absent=_absent_of(meta.get("absent")))

    def manifest_keys(self) -> dict[str, list[ObjectInfo]] | None:
        """subject -> its manifests' objects, as listed when the plan was saved (None: not recorded)."""
        from .journal.db import connect

        db = connect(self.path, mode="ro")
        try:
            if db.execute("SELECT 1 FROM meta WHERE name='manifests' AND value='listed'").fetchone() is None:
                return None
            out: dict[str, list[ObjectInfo]] = {s: [] for s in self.selection.subjects}
            for subject, key, size, etag in db.execute("SELECT subject, key, size, etag FROM manifests ORDER BY key"):
                out.setdefault(subject, []).append(ObjectInfo(key, size, etag))
            return out
        finally:
            db.close()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Copy this plan to ``path`` (a new file: an existing one is replaced atomically)."""
        dest = Path(path).expanduser()
        part = dest.with_name(dest.name + ".partial")
        shutil.copyfile(self.path, part)
        os.replace(part, dest)
        return dest

    @property
    def temporary(self) -> bool:
        """Whether the plan's file is a scratch one, removed with the plan (not saved, not loaded)."""
        return self._finalizer is not None

    def close(self) -> None:
        """Remove a temporary plan's file now (else when the plan is garbage)."""
        if self._finalizer is not None:
            self._finalizer()

    # -- reading -----------------------------------------------------------------------------

    @property
    def objects(self) -> PlanObjects:
        """The planned objects (``len``, iteration), read from the plan's file as they are used."""
        return PlanObjects(self)

    def iter_objects(self, page: int = PAGE) -> Iterator[PlannedObject]:
        """The objects in key order, read ``page`` at a time."""
        from .journal.db import connect
        from .journal.plan import PlanTable

        db = connect(self.path, mode="ro")
        try:
            table = PlanTable.reader(db, self.gen)
            after: str | None = None
            while True:
                rows = table.by_key(after, page)
                if not rows:
                    return
                after = rows[-1].key
                yield from rows
        finally:
            db.close()

    def pages(self, keep: Callable[[PlannedObject], bool] | None = None, size: int = PAGE) -> Iterator[list[PlannedObject]]:
        """The objects (those ``keep`` accepts) in key order, ``size`` at a time; at least one page."""
        page: list[PlannedObject] = []
        for o in self.iter_objects():
            if keep is None or keep(o):
                page.append(o)
                if len(page) == size:
                    yield page
                    page = []
        yield page

    @property
    def rejected(self) -> tuple[Rejected, ...]:
        """Listed keys the plan refuses (unsafe local path, clash, collision), with why."""
        if self._rejected is None:
            from .journal.db import connect
            from .journal.plan import PlanTable

            db = connect(self.path, mode="ro")
            try:
                self._rejected = tuple(PlanTable.reader(db, self.gen).rejected())
            finally:
                db.close()
        return self._rejected

    def per_subject(self) -> dict[str, tuple[int, int]]:
        """subject -> (files, bytes), in selection order."""
        return self.summary()[0]

    def top_folders(self, n: int = 10) -> list[tuple[str, int, int]]:
        """The ``n`` folders (two levels below the subject, across subjects) holding most bytes:
        ``(folder, files, bytes)``."""
        folders = self.summary()[1]
        return sorted(((f, c, b) for f, (c, b) in folders.items()), key=lambda t: (-t[2], t[0]))[:n]

    def summary(self) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        """Per subject and per folder: (files, bytes); one pass over the objects (then kept)."""
        if self._summary is None:
            self._summary = self._count()
        return self._summary

    def _count(self) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        from .journal.db import connect
        from .journal.plan import PlanTable

        subjects: dict[str, list[int]] = {s: [0, 0] for s in self.selection.subjects}
        folders: dict[str, list[int]] = {}
        db = connect(self.path, mode="ro")
        try:
            for relpath, size in PlanTable.reader(db, self.gen).sizes():
                subject, _, rest = relpath.partition("/")
                for acc, name in ((subjects, subject), (folders, _folder(rest))):
                    c = acc.setdefault(name, [0, 0])
                    c[0] += 1
                    c[1] += size
        finally:
            db.close()
        return ({s: (c[0], c[1]) for s, c in subjects.items()}, {f: (c[0], c[1]) for f, c in folders.items()})

    def to_json(self, with_objects: bool = True) -> dict[str, object]:
        doc: dict[str, object] = {
            "selection": self.selection.to_json(),
            "files": self.files,
            "bytes": self.total_bytes,
            "subjects": {s: {"files": n, "bytes": b} for s, (n, b) in self.per_subject().items()},
            "rejected": [{"key": r.key, "reason": r.reason} for r in self.rejected],
            "absent_from_s3": [a.to_json() for a in self.absent] if self.absent is not None else None,
            "coverage": coverage_counts(self.absent) if self.absent is not None else None,
            "notes": list(self.notes),
        }
        if with_objects:
            doc["objects"] = [object_json(o) for o in self.iter_objects()]
        return doc


class PlanObjects:
    """A plan's objects as a read-only collection: ``len()``, ``bool()``, iteration (in key order)."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    def __len__(self) -> int:
        return self._plan.files

    def __bool__(self) -> bool:
        return self._plan.files > 0

    def __iter__(self) -> Iterator[PlannedObject]:
        return self._plan.iter_objects()

    def __getitem__(self, i: int) -> PlannedObject:
        for k, o in enumerate(self):
            if k == i:
                return o
        raise IndexError(i)


def object_json(o: PlannedObject) -> dict[str, object]:
    return {"key": o.key, "size": o.size, "etag": o.etag, "path": o.relpath}


def _folder(rest: str) -> str:
    """The folder two levels below the subject (``MNINonLinear/Results``), or fewer for a shallow file."""
    parts = rest.split("/")[:-1]
    return "/".join(parts[:2]) if parts else "."


def _absent_of(text: str | None) -> tuple[Absent, ...] | None:
    """The coverage a saved plan recorded (None: not recorded, or not readable)."""
    try:
        return tuple(Absent(d["path"], d["subject"], d["package"]) for d in json.loads(text)) if text else None
    except (ValueError, TypeError, KeyError):
        return None


def scratch_plan_path() -> Path:
    """A new file for a temporary plan, in a folder of its own (removed with it)."""
    return Path(tempfile.mkdtemp(prefix="hcpsync-plan-")) / "plan.sqlite"


def open_plan_db(path: Path) -> Any:
    """A new plan file of the journal's schema, tuned for one writer that may lose it all."""
    from .journal.db import open_database

    db = open_database(path)
    db.execute("PRAGMA synchronous=OFF")
    return db


def record_manifest_keys(db: Any, listed: dict[str, list[ObjectInfo]]) -> None:
    """Keep the manifests' keys of every subject of the plan (a pull of it then lists nothing)."""
    db.execute("CREATE TABLE IF NOT EXISTS manifests (subject TEXT NOT NULL, key TEXT PRIMARY KEY, "
               "size INTEGER NOT NULL, etag TEXT NOT NULL)")
    db.executemany("INSERT OR REPLACE INTO manifests VALUES (?,?,?,?)",
                   [(s, o.key, o.size, o.etag) for s, objs in listed.items() for o in objs])
    db.execute("INSERT OR REPLACE INTO meta VALUES ('manifests', 'listed')")


def write_meta(db: Any, selection: Selection, gen: int, notes: Sequence[str], files: int, nbytes: int,
               absent: Sequence[Absent] | None = None) -> None:
    """Mark the plan file complete: what it plans, for :meth:`Plan.load`."""
    from . import __version__

    meta = {"kind": PLAN_KIND, "gen": str(gen), "selection": json.dumps(selection.to_json()),
            "notes": json.dumps(list(notes)), "files": str(files), "bytes": str(nbytes), "listing": "complete",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hcpsync": __version__}
    if absent is not None:
        meta["absent"] = json.dumps([a.to_json() for a in absent])
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))
    with contextlib.suppress(HcpsyncError):  # one self-contained file, to copy or move
        db.execute("PRAGMA journal_mode=DELETE")
