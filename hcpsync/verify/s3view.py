"""What S3 holds of the selection, as ``verify`` needs it: the manifest files it lacks, and the
size and ETag of the objects no manifest lists.

Each selected subject's folder is listed once (the subjects side by side, ``concurrency`` at a
time), page by page: a manifest-listed key only strikes its file off the subject's expected
set; only the few other objects are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Container
from dataclasses import dataclass, field

from ..models import Selection
from ..planning.select import in_scope  # the pure filters only (the module, not the package: no import cycle)
from ..store import ObjectStore
from .manifest import MANIFEST_DIR


@dataclass
class S3View:
    """``absent``: the expected files S3 does not hold; ``objects``: release-relative path ->
    (size, ETag) of the objects within the selection that no manifest lists."""

    absent: set[str] = field(default_factory=set)
    objects: dict[str, tuple[int, str]] = field(default_factory=dict)


async def list_selection(
    store: ObjectStore, selection: Selection, expected: Collection[str], listed: Container[str], concurrency: int
) -> S3View:
    """List the selected subjects' objects; ``expected``: the manifest files within the selection,
    ``listed``: every URI a manifest lists (kept out of :attr:`S3View.objects`)."""
    by_subject: dict[str, set[str]] = {s: set() for s in selection.subjects}
    for uri in expected:
        by_subject.setdefault(uri.partition("/")[0], set()).add(uri)
    sem = asyncio.Semaphore(max(1, concurrency))
    view = S3View()

    async def one(subject: str) -> None:
        remaining = by_subject[subject]
        cut = len(selection.release_prefix)
        async with sem:
            async for objs, _ in store.list_pages(selection.bucket, selection.subject_prefix(subject)):
                for o in objs:
                    rel = o.key[cut:]
                    if rel in remaining:
                        remaining.discard(rel)
                    elif rel not in listed and not _is_manifest(rel) and in_scope(rel, selection):
                        view.objects[rel] = (o.size, o.etag)
        view.absent.update(remaining)

    await asyncio.gather(*(one(s) for s in selection.subjects))
    return view


def _is_manifest(rel: str) -> bool:
    parts = rel.split("/", 2)
    return len(parts) == 3 and parts[1] == MANIFEST_DIR
