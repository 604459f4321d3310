"""Selection -> Plan: list only the prefixes the selection needs, filter, map to local paths."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..errors import SelectionError, UnsafePathError
from ..models import ObjectInfo, Plan, PlannedObject, Rejected, Selection
from ..paths import check_relpath, fold_name
from ..store import ObjectStore
from .select import compile_filters, glob_filter, minimal_paths, rules_filter, under_path

__all__ = ["LIST_CONCURRENCY", "build_plan", "glob_filter", "minimal_paths", "under_path"]

#: listings run at once across subjects
LIST_CONCURRENCY = 16


@dataclass(frozen=True)
class _Listed:
    subject: str
    path: str | None  # None: the whole subject
    objects: list[ObjectInfo]


async def _list_all(storage: ObjectStore, bucket: str, prefix: str) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    async for objs, _ in storage.list_pages(bucket, prefix):
        out.extend(objs)
    return out


async def _subject_exists(storage: ObjectStore, bucket: str, prefix: str) -> bool:
    async for objs, prefixes in storage.list_pages(bucket, prefix, delimiter="/"):
        return bool(objs or prefixes)
    return False


async def build_plan(
    storage: ObjectStore,
    selection: Selection,
    restrict: dict[str, set[str]] | None = None,
) -> Plan:
    """List what ``selection`` needs and turn it into a :class:`Plan`.

    ``restrict`` (subject -> set of release-relative paths) narrows a subject to exactly
    those files: it is how HCP package names, resolved through manifests, select files.
    """
    paths = minimal_paths(selection.paths)
    listed = await _list_selection(storage, selection, paths)
    notes = await _check_found(storage, selection, paths, listed)
    objects, rejected = _filter(listed, selection, restrict)
    objects, clashes = _drop_clashes(objects)
    rejected.extend(clashes)
    objects, collisions = _drop_collisions(objects)
    rejected.extend(collisions)
    if not objects and not rejected:
        where = selection.release_uri
        raise SelectionError(f"the selection matches no object under {where} (check --include/--exclude/--package)")
    objects.sort(key=lambda o: o.key)
    return Plan(selection, tuple(objects), tuple(rejected), tuple(notes))


async def _list_selection(storage: ObjectStore, selection: Selection, paths: tuple[str, ...]) -> list[_Listed]:
    """List each subject (each of its ``paths``, if any), a few listings at a time."""
    sem = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(subject: str, path: str | None) -> _Listed:
        prefix = selection.subject_prefix(subject) + (path or "")
        async with sem:
            objs = await _list_all(storage, selection.bucket, prefix)
        if path is not None:
            base = selection.subject_prefix(subject)
            objs = [o for o in objs if under_path(o.key[len(base) :], path)]
        return _Listed(subject, path, objs)

    jobs = [one(s, p) for s in selection.subjects for p in (paths or (None,))]
    return list(await asyncio.gather(*jobs))


async def _check_found(
    storage: ObjectStore, selection: Selection, paths: tuple[str, ...], listed: list[_Listed]
) -> list[str]:
    """Subjects with nothing at all are errors (typos), and so is a path no subject has;
    a path missing for only some subjects is a note (returned)."""
    empty_subjects = [s for s in selection.subjects if not any(r.objects for r in listed if r.subject == s)]
    unknown: list[str] = []
    for s in empty_subjects:
        if not paths or not await _subject_exists(storage, selection.bucket, selection.subject_prefix(s)):
            unknown.append(s)
    where = selection.release_uri
    if unknown:
        names = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise SelectionError(f"subject{'s' if len(unknown) > 1 else ''} {names} not found under {where}")
    notes: list[str] = []
    for p in paths:
        missing = [r.subject for r in listed if r.path == p and not r.objects]
        if len(missing) == len(selection.subjects):
            raise SelectionError(f"path {p!r} matches nothing under {where}<subject>/ for the selected subjects")
        if missing:
            notes.append(f"path {p!r} matches nothing for subject(s) {', '.join(missing)}")
    return notes


def _filter(
    listed: list[_Listed], selection: Selection, restrict: dict[str, set[str]] | None
) -> tuple[list[PlannedObject], list[Rejected]]:
    """The listed objects the selection keeps (each key once), and the unsafe keys it refuses."""
    rel_prefix = selection.release_prefix
    objects: list[PlannedObject] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    rules = compile_filters(selection)
    for r in listed:
        allowed = restrict.get(r.subject) if restrict is not None else None
        for o in r.objects:
            if o.key in seen:
                continue
            seen.add(o.key)
            rel = o.key[len(rel_prefix) :]
            if o.key.endswith("/") and o.size == 0:
                continue  # a "folder" marker object, as the S3 console creates
            if allowed is not None and rel not in allowed:
                continue
            if not rules_filter(rel, rules, selection.release):
                continue
            try:
                check_relpath(rel)
            except UnsafePathError as exc:
                rejected.append(Rejected(o.key, f"unsafe key: {exc}"))
                continue
            objects.append(PlannedObject(o.key, o.size, o.etag, rel))
    return objects, rejected


def _drop_clashes(objects: list[PlannedObject]) -> tuple[list[PlannedObject], list[Rejected]]:
    """A key that is also a folder of other keys (``a/b`` and ``a/b/c``) cannot be a local file."""
    folders: set[str] = set()
    for o in objects:
        rel = o.relpath
        i = rel.rfind("/")
        while i > 0:
            parent = rel[:i]
            if parent in folders:
                break
            folders.add(parent)
            i = rel.rfind("/", 0, i)
    if not any(o.relpath in folders for o in objects):
        return objects, []
    keep = [o for o in objects if o.relpath not in folders]
    bad = [
        Rejected(o.key, "key is also the folder of other keys; cannot be both a file and a folder locally")
        for o in objects
        if o.relpath in folders
    ]
    return keep, bad


def _drop_collisions(objects: list[PlannedObject]) -> tuple[list[PlannedObject], list[Rejected]]:
    """Keys that differ only by case or Unicode normalisation would land in one local file on
    many file systems: refuse every key of such a group, never pick one silently."""
    groups: dict[str, list[PlannedObject]] = {}
    for o in objects:
        groups.setdefault(fold_name(o.relpath), []).append(o)
    if all(len(g) == 1 for g in groups.values()):
        return objects, []
    bad: list[Rejected] = []
    for group in groups.values():
        for o in group if len(group) > 1 else ():
            others = ", ".join(repr(x.key) for x in group if x is not o)
            bad.append(Rejected(o.key, f"local path collides with {others} (differs only by case or Unicode "
                                       "normalisation: one file on macOS, Windows, exFAT and case-folding file systems)"))
    keep = [o for o in objects if len(groups[fold_name(o.relpath)]) == 1]
    return keep, bad
