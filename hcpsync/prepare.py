"""Before a pull: the plan (packages resolved through the manifests) and the verifier that
checks the pull's files.  It composes :mod:`hcpsync.planning` and :mod:`hcpsync.verify`, so
it sits above both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .models import Plan, Selection
from .paths import is_complete_file
from .planning import plan_for
from .store import ObjectStore
from .verify.cache import VerifiedCache
from .verify.checker import PullVerifier
from .verify.manifests import ManifestSet, fetch_manifests_for_plan, keep_manifests, manifest_notes


@dataclass
class PreparedPull:
    """What :func:`prepare_pull` hands to the pull: the plan, the verifier (the pool's checker
    and one of its listeners; None with ``verify=False``) and notes for the report.  After the
    run, add ``verifier.notes`` to the report's notes."""

    plan: Plan
    verifier: PullVerifier | None
    notes: list[str] = field(default_factory=list)


def _anything_to_fetch(plan: Plan, dest: Path) -> bool:
    """Whether some planned file is not yet at its final path with its planned size."""
    return any(not is_complete_file(dest / o.relpath, o.size) for o in plan.objects)


async def prepare_pull(
    storage: ObjectStore,
    selection: Selection | Plan,
    *,
    dest: Path | None = None,
    verify: bool = True,
    cache: VerifiedCache | None = None,
) -> PreparedPull:
    """Plan ``selection`` (resolving packages) and set up the verification of the pull.

    The manifests the pull checks against are kept under ``DEST/<subject>/.xdlm/`` (for
    ``verify --offline``).  The manifests of the plan's subjects are fetched now when some file is to be downloaded
    (or ``dest`` is not given); when every file already looks complete, only if one turns
    out to need downloading after all (so a re-run of a finished pull makes no GET).
    """
    if isinstance(selection, Plan):
        plan, mset = selection, None
    else:
        plan, mset = await plan_for(storage, selection)
    if not verify:
        return PreparedPull(plan, None)
    pulled = {o.relpath for o in plan.objects}
    if mset is not None:
        return PreparedPull(plan, PullVerifier(mset.index, cache), keep_manifests(mset, dest, pulled) if dest else [])

    async def load() -> ManifestSet:
        fetched = await fetch_manifests_for_plan(storage, plan)
        if dest is not None:
            kept_notes.extend(keep_manifests(fetched, dest, pulled))
        return fetched

    kept_notes: list[str] = []
    if dest is not None and not _anything_to_fetch(plan, dest):
        return PreparedPull(plan, PullVerifier(None, cache, loader=load))
    mset = await load()
    notes = [n for n in manifest_notes(mset) if n not in plan.notes]
    return PreparedPull(plan, PullVerifier(mset.index, cache), notes + kept_notes)
