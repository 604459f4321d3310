"""A selection with ``--package``: HCP download packages resolved through the subjects'
``.xdlm`` manifests to exactly their files (:func:`plan_for`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..models import Plan, Selection
from ..store import ObjectStore
from ..verify.manifests import ManifestSet, fetch_manifests, manifest_notes
from .listing import build_plan
from .select import in_scope

#: at most this many per-file notes about package files absent from S3
_MAX_MISSING_NOTES = 20


def resolve_packages(manifests: ManifestSet, selection: Selection) -> tuple[dict[str, set[str]], list[str]]:
    """subject -> URIs of the selected packages in that subject's manifests; and notes.

    Raises :class:`~hcpsync.errors.SelectionError` (one line, listing the packages
    available) when a package is in no selected subject's manifests.
    """
    return manifests.package_uris(selection.subjects, selection.packages)


async def plan_for(storage: ObjectStore, selection: Selection) -> tuple[Plan, ManifestSet | None]:
    """The plan of ``selection``, honouring ``selection.packages``; and the manifests, if fetched.

    With packages, the subjects' manifests are fetched to resolve them (returned, so a pull
    verifies with them): manifest problems are in the plan's notes, and so is each package
    file that its manifest lists but S3 does not have.  Without, this is ``build_plan``.
    """
    if not selection.packages:
        return await build_plan(storage, selection), None
    mset = await fetch_manifests(storage, selection.bucket, selection.release, selection.subjects)
    if not mset.manifests:
        await build_plan(storage, selection)  # an unknown subject is the better error than "no manifests"
    restrict, notes = resolve_packages(mset, selection)
    plan = await build_plan(storage, selection, restrict=restrict)
    notes += _absent_notes(plan, restrict, mset)
    return _with_notes(plan, manifest_notes(mset) + notes), mset


def _absent_notes(plan: Plan, restrict: dict[str, set[str]], mset: ManifestSet) -> list[str]:
    """A note for each package file (up to a limit) its manifest lists but S3 does not have."""
    selection = plan.selection
    planned = {o.relpath for o in plan.objects}
    prefix = selection.release_prefix
    planned.update(r.key[len(prefix):] for r in plan.rejected if r.key.startswith(prefix))
    absent = sorted(u for s in selection.subjects for u in restrict[s] if u not in planned and in_scope(u, selection))
    where = f"s3://{selection.bucket}/{prefix}"
    notes = [
        f"{uri}: listed in manifest {mset.index.source_of(uri) or '?'} but not found under {where}"
        for uri in absent[:_MAX_MISSING_NOTES]
    ]
    if len(absent) > _MAX_MISSING_NOTES:
        notes.append(f"... and {len(absent) - _MAX_MISSING_NOTES} more package file(s) not found under {where}")
    return notes


def _with_notes(plan: Plan, notes: Sequence[str]) -> Plan:
    if not notes:
        return plan
    return replace(plan, notes=tuple(plan.notes) + tuple(n for n in notes if n not in plan.notes))
