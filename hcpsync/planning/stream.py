"""Selection -> plan rows, as the listing goes: many listings at once, every page planned as it
arrives (filtered, mapped to local paths, written to a :class:`PlanSink`), and each listing
*unit* announced when complete, so the engine fetches its files while the others are listed.

Units, taken in subject order by ``concurrency`` workers:

* *split*: a delimited listing of a folder (a subject's root, and with few subjects each of its
  top folders too): its files are one unit; each sub-folder becomes a unit of its own;
* *tree*: a plain (recursive) listing of a folder;
* *path* (``--path``): a plain listing of ``<release>/<subject>/<path>``.

Folders whose names differ only by case or Unicode normalisation are one unit (listed one after
the other), so keys that would land in one local file are always in one unit: the plan refuses
them before the unit is announced, and no byte of either moves.  A file named as a sibling
folder (``a/b`` beside ``a/b/...``) is refused at once.

A subject's units rank after the roots of the next ``concurrency`` subjects, so the first units
complete within a few listings of the start while subjects are still looked up well ahead (an
unknown subject stops the plan early, not after hours of a long pull).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import SelectionError, UnsafePathError
from ..models import ObjectInfo, PlannedObject, Rejected, Selection
from ..paths import check_relpath, fold_name
from ..shard import Shard
from ..store import ObjectStore
from .select import Rule, compile_filters, minimal_paths, rules_filter, under_path

#: listings in flight at once, by default (``--list-concurrency``)
LIST_CONCURRENCY = 64
#: with fewer subjects than listings in flight, their top folders are split once more
_SPLIT_DEEPER_BELOW = 1.0
_CLASH = "key is also the folder of other keys; cannot be both a file and a folder locally"


class PlanSink(Protocol):
    """Where planned objects go (the journal's :class:`~hcpsync.journal.plan.PlanTable`)."""

    def add(self, objects: Sequence[PlannedObject], unit: int = 0) -> list[Rejected]: ...

    def reject(self, rejected: Sequence[Rejected]) -> None: ...


@dataclass(order=True)
class _Unit:
    rank: tuple[int, int]
    kind: str = field(compare=False)  # "split", "tree" or "path"
    subject: str = field(compare=False)
    prefixes: tuple[str, ...] = field(compare=False)  # folders that fold to one name: one unit
    depth: int = field(compare=False, default=0)
    path: str | None = field(compare=False, default=None)


@dataclass
class Listed:
    """What the listing found besides the rows: notes, and counts of keys planned and refused."""

    notes: list[str] = field(default_factory=list)
    planned: int = 0
    refused: int = 0
    #: subject -> paths (of ``--path``) that matched nothing for it
    missing_paths: dict[str, list[str]] = field(default_factory=dict)


class Lister:
    """Lists ``selection`` into ``sink`` (see the module's docstring); :meth:`run` once.

    ``restrict(subject)`` (``--package``) gives the release-relative paths a subject may plan,
    or None for all.  ``on_page()`` is called after each page is in the sink, ``on_unit(id)``
    when a unit is complete (its rows final).
    """

    def __init__(
        self,
        storage: ObjectStore,
        selection: Selection,
        sink: PlanSink,
        *,
        concurrency: int = LIST_CONCURRENCY,
        restrict: Callable[[str], Awaitable[set[str] | None]] | None = None,
        on_page: Callable[[], None] | None = None,
        on_unit: Callable[[int], None] | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.storage = storage
        self.shard = shard
        self.sel = selection
        self.sink = sink
        self.concurrency = max(1, concurrency)
        self.restrict = restrict
        self.on_page = on_page or (lambda: None)
        self.on_unit = on_unit or (lambda unit: None)
        self.paths = minimal_paths(selection.paths)
        self.rules: tuple[Rule, ...] = compile_filters(selection)
        self.max_depth = 1 if len(selection.subjects) < self.concurrency * _SPLIT_DEEPER_BELOW else 0
        self.result = Listed()
        self._queue: asyncio.PriorityQueue[tuple[_Unit, int]] = asyncio.PriorityQueue()
        self._open = 0
        self._idle = asyncio.Event()
        self._order = itertools.count()
        self._ids = itertools.count(1)

    def _put(self, unit: _Unit) -> None:
        self._open += 1
        self._queue.put_nowait((unit, next(self._ids)))

    async def run(self) -> Listed:
        """List everything; raise :class:`SelectionError` for an unknown subject or a selection
        that matches nothing (when that is known: after the listing)."""
        _refuse_folded_twins(self.sel.subjects, "subjects")
        subjects = self.shard.subjects(self.sel.subjects) if self.shard is not None else self.sel.subjects
        for i, subject in enumerate(subjects):
            prefix = self.sel.subject_prefix(subject)
            for group in _fold_groups(self.paths) if self.paths else ():
                self._put(_Unit((i, next(self._order)), "path", subject, tuple(prefix + p for p in group),
                                path=group[0]))
            if not self.paths:
                self._put(_Unit((i - self.concurrency, next(self._order)), "split", subject, (prefix,)))
        if self._open:
            await self._work()
        self._check_paths(subjects)
        if self.shard is not None and not self.result.planned and not self.result.refused:
            self.result.notes.append(f"shard {self.shard} holds no object of this selection")
        elif not self.result.planned and not self.result.refused:
            where = self.sel.release_uri
            raise SelectionError(f"the selection matches no object under {where} (check --include/--exclude/--package)")
        return self.result

    async def _work(self) -> None:
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.concurrency)]
        idle = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait([idle, *workers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (idle, *workers):
                t.cancel()
            await asyncio.gather(idle, *workers, return_exceptions=True)
        for w in workers:  # workers end only by raising (or when cancelled above)
            if not w.cancelled() and w.exception() is not None:
                raise w.exception()  # type: ignore[misc]

    async def _worker(self) -> None:
        while True:
            unit, uid = await self._queue.get()
            try:
                await self._list(unit, uid)
            finally:
                self._open -= 1
                if not self._open:
                    self._idle.set()

    async def _list(self, unit: _Unit, uid: int) -> None:
        allowed = await self.restrict(unit.subject) if self.restrict is not None else None
        if unit.kind == "split":
            await self._split(unit, uid, allowed)
        else:
            found = False
            for prefix in unit.prefixes:
                async for objs, _ in self.storage.list_pages(self.sel.bucket, prefix):
                    objs = self._under_paths(unit, objs)
                    found = found or bool(objs)
                    self._plan(objs, allowed, uid)
            if unit.kind == "path" and not found:
                await self._path_missing(unit)
        self.on_unit(uid)

    def _under_paths(self, unit: _Unit, objs: list[ObjectInfo]) -> list[ObjectInfo]:
        if unit.kind != "path":
            return objs
        base = len(self.sel.subject_prefix(unit.subject))
        return [o for o in objs if any(under_path(o.key[base:], p[base:]) for p in unit.prefixes)]

    async def _split(self, unit: _Unit, uid: int, allowed: set[str] | None) -> None:
        """A delimited listing: plan its files (this unit), queue its folders (units of their own)."""
        anything = False
        folders: list[str] = []
        files: dict[str, str] = {}  # folded key -> key, of the files this unit planned
        for prefix in unit.prefixes:
            async for objs, prefixes in self.storage.list_pages(self.sel.bucket, prefix, delimiter="/"):
                anything = anything or bool(objs or prefixes)
                folders += prefixes
                self._clash_earlier(files, prefixes)
                files.update((fold_name(o.key), o.key) for o in self._plan(objs, allowed, uid, folders=folders))
        if unit.depth == 0 and not anything:
            raise SelectionError(f"subject {unit.subject} not found under {self.sel.release_uri}")
        deeper = unit.depth < self.max_depth
        for group in _fold_groups(folders):
            rank = (unit.rank[0] + (self.concurrency if unit.depth == 0 else 0), next(self._order))
            self._put(_Unit(rank, "split" if deeper else "tree", unit.subject, tuple(group), unit.depth + 1))

    def _clash_earlier(self, files: dict[str, str], prefixes: Sequence[str]) -> None:
        """Refuse files planned from an earlier page that are named as a folder of this page."""
        clash = [Rejected(files.pop(f), _CLASH) for f in (fold_name(p[:-1]) for p in prefixes) if f in files]
        if clash:
            self.sink.reject(clash)
            self.result.refused += len(clash)
            self.result.planned -= len(clash)

    async def _path_missing(self, unit: _Unit) -> None:
        """A path that matched nothing: the subject's existence decides between an error and a note."""
        async for objs, prefixes in self.storage.list_pages(self.sel.bucket, self.sel.subject_prefix(unit.subject),
                                                            delimiter="/"):
            if objs or prefixes:
                self.result.missing_paths.setdefault(unit.subject, []).append(unit.path or "")
                return
            break
        raise SelectionError(f"subject {unit.subject} not found under {self.sel.release_uri}")

    def _plan(self, objs: list[ObjectInfo], allowed: set[str] | None, uid: int,
              folders: Sequence[str] = ()) -> list[PlannedObject]:
        """Filter one page, map it to local paths, and hand it to the sink; returns what it planned."""
        planned, refused = self._filter(objs, allowed, {fold_name(f[:-1]) for f in folders})
        if refused:
            self.sink.reject(refused)
        if planned:
            conflicts = self.sink.add(planned, uid)
            self.result.planned += len(planned)
            self.result.refused += len(conflicts)
        self.result.refused += len(refused)
        if planned or refused:
            self.on_page()
        return planned

    def _filter(self, objs: list[ObjectInfo], allowed: set[str] | None,
                folders: set[str]) -> tuple[list[PlannedObject], list[Rejected]]:
        rel_prefix = len(self.sel.release_prefix)
        planned: list[PlannedObject] = []
        refused: list[Rejected] = []
        for o in objs:
            rel = o.key[rel_prefix:]
            if o.key.endswith("/") and o.size == 0:
                continue  # a "folder" marker object, as the S3 console creates
            if allowed is not None and rel not in allowed:
                continue
            if self.rules and not rules_filter(rel, self.rules, self.sel.release):
                continue
            if self.shard is not None and not self.shard.has_key(o.key):
                continue
            try:
                check_relpath(rel)
            except UnsafePathError as exc:
                refused.append(Rejected(o.key, f"unsafe key: {exc}"))
                continue
            if folders and fold_name(o.key) in folders:
                refused.append(Rejected(o.key, _CLASH))
                continue
            planned.append(PlannedObject(o.key, o.size, o.etag, rel))
        return planned, refused

    def _check_paths(self, subjects: Sequence[str]) -> None:
        """A path no subject has is an error; one some subjects lack, a note."""
        missing = self.result.missing_paths
        for p in self.paths:
            lacking = [s for s in subjects if p in missing.get(s, ())]
            if lacking and len(lacking) == len(subjects):
                raise SelectionError(f"path {p!r} matches nothing under {self.sel.release_uri}<subject>/ "
                                     "for the selected subjects")
            if lacking:
                self.result.notes.append(f"path {p!r} matches nothing for subject(s) {', '.join(lacking)}")


def _fold_groups(names: Sequence[str]) -> list[list[str]]:
    """``names`` grouped by the name they fold to (case, Unicode normalisation), in first-seen order."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(fold_name(n), []).append(n)
    return list(groups.values())


def _refuse_folded_twins(names: Sequence[str], what: str) -> None:
    for group in _fold_groups(names):
        if len(group) > 1:
            raise SelectionError(f"{what} {', '.join(group)} differ only by case: they would land in one local folder")
