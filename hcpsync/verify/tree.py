"""Reconciling a local tree with the ``.xdlm`` manifests and S3 (:func:`verify_tree`, ``hcpsync verify``).

Every file is ``ok``, ``mismatched``, ``missing``, ``refused`` (a symlink leading outside the
tree), ``absent_from_s3`` (a manifest lists it, S3 does not hold it, nor does the disk),
``unlisted`` or ``unverifiable``.  The check runs in named steps: load the manifests, list the
files they expect, list S3 (online), classify the expected files on disk (:mod:`.expected`),
classify the files no manifest lists (:mod:`.unlisted`), hash what is left on one pool
(:mod:`.hashpool`), settle the S3 ETag verdicts, and report (:mod:`.report`).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ..config import TransferConfig
from ..errors import UsageError
from ..models import Absent, Selection
from ..planning.select import in_scope  # the pure filters only (the module, not the package: no import cycle)
from ..store.s3 import S3Storage, StorageOptions
from .cache import NullVerifiedCache, VerifiedCache
from .expected import classify_expected
from .hashpool import VerifyProgress, hash_all
from .links import TreeLinks
from .manifest import MANIFEST_DIR, ManifestEntry
from .manifests import ManifestSet, fetch_manifests, load_local_manifests, s3_manifest_folders
from .report import STATUSES, FileCheck, Status, VerifyReport
from .s3view import S3View, list_selection
from .unlisted import classify_unlisted, settle
from .walk import check_dest, discover_subjects

__all__ = ["STATUSES", "FileCheck", "Status", "VerifyProgress", "VerifyReport", "check_dest", "discover_subjects",
           "verify_tree"]

OFFLINE_NOTE = ("offline: S3 was not listed, so files a manifest lists that S3 lacks are not told apart "
                "and files no manifest lists are not checked against their S3 ETag")


async def verify_tree(
    dest: str | os.PathLike[str],
    selection: Selection | None = None,
    *,
    offline: bool = False,
    full: bool = False,
    jobs: int | None = None,
    cache: VerifiedCache | None = None,
    storage: StorageOptions | None = None,
    config: TransferConfig | None = None,
    progress: VerifyProgress | None = None,
) -> VerifyReport:
    """Reconcile the files under ``dest`` with the subjects' ``.xdlm`` manifests, and with S3.

    ``selection`` names subjects (default: every subject folder under ``dest``, release
    ``HCP_1200`` of ``hcp-openaccess``) and may narrow the check with paths, globs and
    packages.  Manifests come from S3, or with ``offline`` from ``DEST/<subject>/.xdlm/``
    (no network at all).  Online, the subjects' objects are listed: manifest files S3 lacks
    are reported (``absent_from_s3``, not a failure) and files no manifest lists are checked
    against their S3 ETag (plain or multipart; SSE-KMS/SSE-C ones are ``unverifiable``).
    Files are hashed by ``jobs`` threads (default: one per CPU), largest first; with ``full``
    every file is hashed even if ``cache`` knows its MD5.  Symlinks are followed only inside
    the tree (DataLad datasets); one leading outside is ``refused``.

    Raises :class:`~hcpsync.errors.UsageError` (exit 2) for a missing destination, no
    subjects, no manifests at all (a :class:`~hcpsync.errors.SelectionError`), or an
    unknown package.
    """
    t0 = time.monotonic()
    root = check_dest(dest)
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    workers = jobs or os.cpu_count() or 1
    if selection is None:
        selection = _default_selection(root)
    the_cache: VerifiedCache = cache if cache is not None else NullVerifiedCache()
    cfg = config or TransferConfig()

    async with _open_store(offline, storage, cfg) as store:
        mset = await _load_manifests(root, selection, store)
        expected, notes = _expected_files(mset, selection)
        view: S3View | None = None
        if store is None:
            notes.append(OFFLINE_NOTE)
        else:
            view = await list_selection(store, selection, expected, mset.index, cfg.list_concurrency)
        links = TreeLinks(root)
        absent = view.absent if view is not None else set()
        triage = classify_expected(links, expected, absent, mset.index, the_cache, full)
        extras = classify_unlisted(links, mset.index, selection, view, the_cache, full)
        h0 = time.monotonic()
        hashed = await hash_all([*triage.jobs, *extras.jobs], workers, progress)
        hash_seconds = time.monotonic() - h0
        triage.record_hashes(expected, hashed, the_cache)
        by_etag = await settle(extras, store, selection, hashed, the_cache) if store is not None else []
    checks = sorted([*triage.checks, *extras.checks, *by_etag], key=lambda c: c.relpath)
    for chk in checks:
        if chk.status == "mismatched":
            the_cache.mismatched(chk.relpath)
    all_jobs = [*triage.jobs, *extras.jobs]
    return VerifyReport(
        dest=str(root),
        source=mset.source,
        subjects=selection.subjects,
        checks=tuple(checks),
        problems=mset.problems,
        notes=tuple(notes),
        hashed_files=len(all_jobs),
        hashed_bytes=sum(j.size for j in all_jobs if j.relpath in hashed and not isinstance(hashed[j.relpath], OSError)),
        hash_seconds=hash_seconds,
        cached_files=triage.cached + extras.cached,
        jobs=workers,
        elapsed=time.monotonic() - t0,
        absent_from_s3=_absent_files(mset, absent, selection),
    )


def _default_selection(root: Path) -> Selection:
    """Every subject folder under ``root``, release ``HCP_1200`` of ``hcp-openaccess``."""
    found = discover_subjects(root)
    if not found:
        raise UsageError(f"no subject folders under {root}: give --subject ID")
    return Selection(subjects=tuple(found))


@asynccontextmanager
async def _open_store(offline: bool, storage: StorageOptions | None, config: TransferConfig) -> AsyncIterator[S3Storage | None]:
    """S3, opened for the whole check; None offline (no network at all)."""
    if offline:
        yield None
        return
    async with S3Storage(storage or StorageOptions(), config) as s3:
        yield s3


async def _load_manifests(root: Path, selection: Selection, store: S3Storage | None) -> ManifestSet:
    """Step 1: the subjects' manifests, from ``DEST/<subject>/.xdlm/`` or S3; none at all is an error."""
    if store is None:
        mset = load_local_manifests(root, selection.subjects)
        where = f"{root}/<subject>/{MANIFEST_DIR}/"
    else:
        mset = await fetch_manifests(store, selection.bucket, selection.release, selection.subjects)
        where = s3_manifest_folders(selection.bucket, selection.release)
    mset.require_some(selection.subjects, where)
    return mset


def _expected_files(mset: ManifestSet, selection: Selection) -> tuple[dict[str, ManifestEntry], list[str]]:
    """Step 2: what the manifests expect within the selection (uri -> merged entry); and notes."""
    notes: list[str] = []
    lacking = mset.subjects_without_manifests
    if lacking:
        notes.append(f"no .xdlm manifests for subject(s) {', '.join(lacking)}: their files are all unlisted")
    if selection.packages:
        restrict, pkg_notes = mset.package_uris(selection.subjects, selection.packages)
        notes.extend(pkg_notes)
        wanted = {u for uris in restrict.values() for u in uris}
    else:
        wanted = {e.uri for m in mset.manifests for e in m.entries}
    expected: dict[str, ManifestEntry] = {}
    for uri in sorted(wanted):
        entry = mset.index.entry(uri)
        if entry is not None and in_scope(uri, selection):
            expected[uri] = entry
    return expected, notes


def _absent_files(mset: ManifestSet, absent: set[str], selection: Selection) -> tuple[Absent, ...]:
    """The coverage: each file S3 lacks, with its subject and the package whose manifest lists
    it (a selected package first, when ``--package`` chose some)."""
    if not absent:
        return ()
    prefer = set(selection.packages)
    package: dict[str, str] = {}
    for m in mset.manifests:
        for e in m.entries:
            if e.uri in absent and (e.uri not in package or (m.package in prefer and package[e.uri] not in prefer)):
                package[e.uri] = m.package
    return tuple(Absent(u, u.partition("/")[0], package.get(u, "")) for u in sorted(absent))
