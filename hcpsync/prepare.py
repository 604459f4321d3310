"""The verification of a pull, set up before its first byte: a :class:`PullVerifier` whose
manifests are fetched when the first downloaded file is checked (so a re-run that downloads
nothing makes no manifest request), and kept under ``DEST/<subject>/.xdlm/`` for
``verify --offline``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Mapping, Sequence
from pathlib import Path

from .models import ObjectInfo, Selection
from .store import ObjectStore
from .verify.cache import VerifiedCache
from .verify.checker import PullVerifier
from .verify.manifests import ManifestSet, fetch_manifests, keep_manifests


def make_verifier(
    storage: ObjectStore,
    selection: Selection,
    *,
    dest: Path | None,
    cache: VerifiedCache | None,
    planned: Callable[[], Container[str]],
    from_planner: asyncio.Future[ManifestSet | None] | None = None,
    listed: Mapping[str, Sequence[ObjectInfo]] | None = None,
    subjects: Sequence[str] | None = None,
) -> PullVerifier:
    """The pull's verifier.  Its manifests: those the planner fetched for ``--package``
    (``from_planner``), else the selection's subjects', fetched when first needed.  ``planned()``
    gives the relpaths the pull fetches itself (their manifests are not written beside them);
    ``listed``, the manifests' keys when known (a saved plan's): then no listing is made.
    ``subjects``: those whose manifests to fetch (a shard's), by default the selection's."""

    async def load() -> ManifestSet:
        mset = await from_planner if from_planner is not None else None
        if mset is None:
            mset = await fetch_manifests(storage, selection.bucket, selection.release,
                                         selection.subjects if subjects is None else subjects, listed=listed)
        if dest is not None:
            verifier.extra_notes(keep_manifests(mset, dest, planned()))
        return mset

    verifier = PullVerifier(None, cache, loader=load, store=storage, bucket=selection.bucket)
    return verifier
