"""Selection -> plan: the listing (:mod:`.stream`) written into a plan table, with the packages of
``--package`` resolved through the subjects' ``.xdlm`` manifests first.

:func:`plan_into` fills a :class:`~hcpsync.journal.plan.PlanTable` (the journal's, during a
pull; a plan file's, for ``hcpsync plan``); :func:`build_plan` makes a :class:`~hcpsync.plan.Plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..journal.plan import PlanTable
from ..models import PlannedObject, Rejected, Selection
from ..planfile import Plan, open_plan_db, record_manifest_keys, scratch_plan_path, write_meta
from ..shard import Shard
from ..store import ObjectStore
from ..verify.manifests import ManifestSet, fetch_manifests, list_manifest_keys, manifest_notes
from .coverage import absent_from_s3
from .select import glob_filter, minimal_paths, under_path
from .stream import LIST_CONCURRENCY, Lister

__all__ = ["LIST_CONCURRENCY", "Planned", "build_plan", "glob_filter", "minimal_paths", "plan_into", "under_path"]


@dataclass
class Planned:
    """What planning adds to the rows: notes, and the manifests fetched to resolve packages."""

    notes: list[str] = field(default_factory=list)
    manifests: ManifestSet | None = None


async def plan_into(
    storage: ObjectStore,
    selection: Selection,
    table: PlanTable,
    *,
    concurrency: int = LIST_CONCURRENCY,
    on_page: Callable[[], None] | None = None,
    on_unit: Callable[[int], None] | None = None,
    restrict: dict[str, set[str]] | None = None,
    shard: Shard | None = None,
) -> Planned:
    """List ``selection`` into ``table``, a page at a time (``on_page`` after each, ``on_unit``
    when a listing unit is complete: see :class:`~.stream.Lister`).

    ``restrict`` (subject -> release-relative paths) narrows a subject to exactly those files;
    ``--package`` makes it from the subjects' manifests."""
    out = Planned()
    subjects = shard.subjects(selection.subjects) if shard is not None else selection.subjects
    if selection.packages and subjects:
        out.manifests = mset = await fetch_manifests(storage, selection.bucket, selection.release, subjects)
        if not mset.manifests:  # an unknown subject is the better error than "no manifests"
            await Lister(storage, selection, _Discard(), concurrency=concurrency, shard=shard).run()
        restrict, notes = mset.package_uris(subjects, selection.packages)
        out.notes += manifest_notes(mset) + notes
    allowed = restrict

    async def restrict_of(subject: str) -> set[str] | None:
        return allowed.get(subject) if allowed is not None else None

    lister = Lister(storage, selection, table, concurrency=concurrency,
                    restrict=restrict_of if restrict is not None else None, on_page=on_page, on_unit=on_unit,
                    shard=shard)
    listed = await lister.run()
    out.notes += listed.notes
    return out


class _Discard:
    """A sink that keeps nothing (a listing run only for its errors)."""

    def add(self, objects: Sequence[PlannedObject], unit: int = 0) -> list[Rejected]:
        return []

    def reject(self, rejected: Sequence[Rejected]) -> None:
        return None


async def build_plan(storage: ObjectStore, selection: Selection, *, concurrency: int = LIST_CONCURRENCY,
                     save: str | None = None, on_unit: Callable[[PlanTable, int], None] | None = None,
                     restrict: dict[str, set[str]] | None = None, shard: Shard | None = None,
                     coverage: bool = False) -> Plan:
    """List ``selection`` (``shard``'s part of it) into a new plan file (temporary, or ``save``)
    and return its :class:`Plan`.  Its ``absent`` (the manifests' files S3 does not have) is known
    when the manifests are: with ``--package`` or ``coverage``; else None (``save`` lists the
    manifests' keys for the saved plan, and fetches none)."""
    plan = await _build(storage, selection, concurrency, on_unit, restrict, with_manifests=save is not None,
                        shard=shard, coverage=coverage)
    if save is not None:
        plan.save(save)
    return plan


async def _build(storage: ObjectStore, selection: Selection, concurrency: int,
                 on_unit: Callable[[PlanTable, int], None] | None,
                 restrict: dict[str, set[str]] | None = None, with_manifests: bool = False,
                 shard: Shard | None = None, coverage: bool = False) -> Plan:
    path = scratch_plan_path()
    db = open_plan_db(path)
    try:
        table = PlanTable(db, 1)
        planned = await plan_into(storage, selection, table, concurrency=concurrency, restrict=restrict, shard=shard,
                                  on_unit=(lambda unit: on_unit(table, unit)) if on_unit is not None else None)
        listed = None
        if with_manifests:  # a pull of the saved plan then verifies with no listing at all
            listed = await list_manifest_keys(storage, selection)
            record_manifest_keys(db, listed)
        mset = planned.manifests
        if mset is None and coverage:  # all the subjects' manifests: only when asked (--coverage)
            mset = await fetch_manifests(storage, selection.bucket, selection.release,
                                         shard.subjects(selection.subjects) if shard else selection.subjects, listed=listed)
            planned.notes += manifest_notes(mset)
        absent = absent_from_s3(mset.manifests, selection, table, shard) if mset is not None else None
        write_meta(db, selection, 1, planned.notes, table.totals.files, table.totals.bytes, absent)
    except BaseException:
        db.close()
        Plan(selection, path, 1, files=0, total_bytes=0, temporary=True).close()
        raise
    db.close()
    return Plan(selection, path, 1, planned.notes, files=table.totals.files, total_bytes=table.totals.bytes,
                temporary=True, absent=absent)

