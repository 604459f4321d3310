"""Reconciling a local tree with the ``.xdlm`` manifests (:func:`verify_tree`, ``hcpsync verify``).

Every file is ``ok``, ``mismatched``, ``missing``, ``unlisted`` or ``unverifiable``.  The
check runs in named steps: load the manifests, list the files they expect, classify the
expected files on disk (stat, size, cached checksum), hash the rest, find the unlisted
files, and report.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import TransferConfig
from ..errors import DestinationError, UsageError
from ..models import _SUBJECT_RE, Selection
from ..paths import STATE_DIR, TEMP_SUFFIX
from ..planning.select import in_scope  # the pure filters only (the module, not the package: no import cycle)
from ..store.s3 import S3Storage, StorageOptions
from .cache import NullVerifiedCache, VerifiedCache
from .hashing import HASH_BLOCK, HashStopped, md5_file
from .manifest import MANIFEST_DIR, ManifestEntry
from .manifests import ManifestSet, fetch_manifests, load_local_manifests, s3_manifest_folders

Status = Literal["ok", "mismatched", "missing", "unlisted", "unverifiable"]
STATUSES: tuple[Status, ...] = ("ok", "mismatched", "missing", "unlisted", "unverifiable")


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One file's verdict.  ``relpath`` is relative to DEST (``100307/T1w/x.nii.gz``)."""

    relpath: str
    status: Status
    expected: str | None = None
    actual: str | None = None
    size: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.relpath}
        if self.expected is not None or self.status == "mismatched":
            doc["expected"] = self.expected
        if self.actual is not None or self.status == "mismatched":
            doc["actual"] = self.actual
        if self.size is not None:
            doc["size"] = self.size
        if self.detail:
            doc["detail"] = self.detail
        return doc


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found.  ``ok`` is True when nothing is mismatched or missing."""

    dest: str
    source: str
    subjects: tuple[str, ...]
    checks: tuple[FileCheck, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    hashed_files: int
    hashed_bytes: int
    hash_seconds: float
    cached_files: int
    jobs: int
    elapsed: float

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for c in self.checks:
            out[c.status] += 1
        return out

    def by_status(self, status: Status) -> list[FileCheck]:
        return [c for c in self.checks if c.status == status]

    @property
    def ok(self) -> bool:
        counts = self.counts
        return counts["mismatched"] == 0 and counts["missing"] == 0

    @property
    def rate(self) -> float:
        """Hashing throughput, bytes per second."""
        return self.hashed_bytes / self.hash_seconds if self.hash_seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dest": self.dest,
            "manifests": self.source,
            "subjects": list(self.subjects),
            "counts": self.counts,
            "hashed": {
                "files": self.hashed_files,
                "bytes": self.hashed_bytes,
                "seconds": round(self.hash_seconds, 3),
                "mb_per_second": round(self.rate / 1e6, 1),
                "jobs": self.jobs,
            },
            "cached": self.cached_files,
            "elapsed_seconds": round(self.elapsed, 3),
            **{s: [c.to_json() for c in self.by_status(s)] for s in STATUSES if s != "ok"},
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def discover_subjects(dest: str | os.PathLike[str]) -> list[str]:
    """Names of the subject-like folders directly under ``dest`` (hcpsync's state excluded)."""
    try:
        entries = sorted(os.scandir(dest), key=lambda e: e.name)
    except OSError:
        return []
    return [
        e.name for e in entries
        if e.name != STATE_DIR and _SUBJECT_RE.match(e.name) and e.is_dir(follow_symlinks=True)
    ]


def check_dest(dest: str | os.PathLike[str]) -> Path:
    root = Path(dest).expanduser()
    if not root.exists():
        raise DestinationError(f"destination {root} does not exist")
    if not root.is_dir():
        raise DestinationError(f"destination {root} is not a folder")
    return root


def _walk_subject(root: Path, subject: str) -> Iterable[tuple[str, os.stat_result]]:
    """(release-relative path, stat) of the files under ``root/subject``.

    Skips the subject's ``.xdlm/`` folder, hcpsync's state folder and temp files; does not
    follow symlinked folders (a symlink to a file is a file).
    """
    base = root / subject
    stack = [(base, subject)]
    while stack:
        folder, rel = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            continue
        with it:
            for e in it:
                child = f"{rel}/{e.name}"
                try:
                    if e.is_dir(follow_symlinks=False):
                        if e.name == STATE_DIR or (rel == subject and e.name == MANIFEST_DIR):
                            continue
                        stack.append((Path(e.path), child))
                        continue
                    if e.name.endswith(TEMP_SUFFIX):
                        continue
                    st = e.stat(follow_symlinks=True)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield child, st


def _hash_all(
    jobs: list[tuple[str, Path, int]],
    workers: int,
    on_done: Callable[[str, int], None] | None,
    stop: threading.Event,
) -> dict[str, str | OSError]:
    """relpath -> MD5 (or the OSError reading it), hashing with ``workers`` threads, in
    ``jobs`` order.  Setting ``stop`` abandons the work within a block per thread."""
    out: dict[str, str | OSError] = {}
    if not jobs:
        return out
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="hcpsync-md5") as pool:
        futures = {pool.submit(md5_file, path, HASH_BLOCK, stop): (rel, size) for rel, path, size in jobs}
        try:
            for fut in as_completed(futures):
                rel, size = futures[fut]
                try:
                    out[rel] = fut.result()
                except OSError as exc:
                    out[rel] = exc
                if on_done is not None:
                    on_done(rel, size)
        except HashStopped:
            for f in futures:
                f.cancel()
    return out


VerifyProgress = Callable[[int, int, int, int], None]
"""``(files_done, files_total, bytes_done, bytes_total)`` of the hashing, from a worker thread."""


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
    """Reconcile the files under ``dest`` with the subjects' ``.xdlm`` manifests.

    ``selection`` names subjects (default: every subject folder under ``dest``, release
    ``HCP_1200`` of ``hcp-openaccess``) and may narrow the check with paths, globs and
    packages.  Manifests come from S3, or with ``offline`` from ``DEST/<subject>/.xdlm/``
    (no network at all).  Files are hashed by ``jobs`` threads (default: one per CPU),
    largest first; with ``full`` every file is hashed even if ``cache`` knows its MD5.

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

    mset = await _load_manifests(root, selection, offline, storage, config)
    expected, notes = _expected_files(mset, selection)
    triage = _classify(root, expected, the_cache, full)
    h0 = time.monotonic()
    hashed = await _hash_files(triage.to_hash, workers, progress)
    hash_seconds = time.monotonic() - h0
    triage.record_hashes(expected, hashed, the_cache)
    checks = triage.checks + _unlisted(root, mset, selection)
    checks.sort(key=lambda c: c.relpath)
    for chk in checks:
        if chk.status == "mismatched":
            the_cache.mismatched(chk.relpath)
    return VerifyReport(
        dest=str(root),
        source=mset.source,
        subjects=selection.subjects,
        checks=tuple(checks),
        problems=mset.problems,
        notes=tuple(notes),
        hashed_files=len(triage.to_hash),
        hashed_bytes=sum(j[2] for j in triage.to_hash if isinstance(hashed.get(j[0]), str)),
        hash_seconds=hash_seconds,
        cached_files=triage.cached,
        jobs=workers,
        elapsed=time.monotonic() - t0,
    )


def _default_selection(root: Path) -> Selection:
    """Every subject folder under ``root``, release ``HCP_1200`` of ``hcp-openaccess``."""
    found = discover_subjects(root)
    if not found:
        raise UsageError(f"no subject folders under {root}: give --subject ID")
    return Selection(subjects=tuple(found))


async def _load_manifests(
    root: Path, selection: Selection, offline: bool, storage: StorageOptions | None, config: TransferConfig | None
) -> ManifestSet:
    """Step 1: the subjects' manifests, from ``DEST/<subject>/.xdlm/`` or S3; none at all is an error."""
    if offline:
        mset = load_local_manifests(root, selection.subjects)
        where = f"{root}/<subject>/{MANIFEST_DIR}/"
    else:
        async with S3Storage(storage or StorageOptions(), config or TransferConfig()) as s3:
            mset = await fetch_manifests(s3, selection.bucket, selection.release, selection.subjects)
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


@dataclass
class _Triage:
    """The expected files sorted by what is known of them without hashing."""

    checks: list[FileCheck] = field(default_factory=list)
    #: (relpath, path, size) of the files to hash, largest first
    to_hash: list[tuple[str, Path, int]] = field(default_factory=list)
    stats: dict[str, os.stat_result] = field(default_factory=dict)
    cached: int = 0

    def record_hashes(
        self, expected: dict[str, ManifestEntry], hashed: dict[str, str | OSError], cache: VerifiedCache
    ) -> None:
        """Step 4b: a verdict for every hashed file; its MD5 goes to ``cache``."""
        for uri, _, size in self.to_hash:
            entry = expected[uri]
            got = hashed[uri]
            if isinstance(got, OSError):
                self.checks.append(FileCheck(uri, "mismatched", entry.md5, None, size, f"cannot read it: {got.strerror or got}"))
                continue
            st = self.stats[uri]
            cache.put(uri, st.st_size, st.st_mtime_ns, got)
            self.checks.append(FileCheck(uri, "ok" if got == entry.md5 else "mismatched", entry.md5, got, size))


def _classify(root: Path, expected: dict[str, ManifestEntry], cache: VerifiedCache, full: bool) -> _Triage:
    """Step 3: stat each expected file; decide what needs no hashing (missing, wrong size, no
    checksum, cached checksum) and queue the rest, largest first."""
    out = _Triage()
    for uri, entry in expected.items():
        try:
            st = os.stat(root / uri)
        except OSError:
            out.checks.append(FileCheck(uri, "missing", entry.md5, size=entry.size))
            continue
        if not stat.S_ISREG(st.st_mode):
            out.checks.append(FileCheck(uri, "missing", entry.md5, size=entry.size, detail="not a regular file"))
            continue
        if entry.size is not None and st.st_size != entry.size:
            out.checks.append(FileCheck(uri, "mismatched", entry.md5, None, st.st_size,
                                        f"size {st.st_size} bytes, the manifest says {entry.size}"))
            continue
        if entry.md5 is None:
            out.checks.append(FileCheck(uri, "unverifiable", None, size=st.st_size, detail="no checksum in the manifests"))
            continue
        hit = None if full else cache.get(uri, st.st_size, st.st_mtime_ns)
        if hit is not None:
            out.cached += 1
            status: Status = "ok" if hit == entry.md5 else "mismatched"
            out.checks.append(FileCheck(uri, status, entry.md5, hit, st.st_size, "cached checksum"))
            continue
        out.stats[uri] = st
        out.to_hash.append((uri, root / uri, st.st_size))
    # largest first, so the big files' tails overlap the small ones
    out.to_hash.sort(key=lambda j: -j[2])
    return out


async def _hash_files(
    to_hash: list[tuple[str, Path, int]], workers: int, progress: VerifyProgress | None
) -> dict[str, str | OSError]:
    """Step 4: hash ``to_hash`` in worker threads, reporting ``progress``; Ctrl-C stops the threads."""
    total_bytes = sum(j[2] for j in to_hash)
    counter = [0, 0]

    def on_done(rel: str, size: int) -> None:
        counter[0] += 1
        counter[1] += size
        if progress is not None:
            progress(counter[0], len(to_hash), counter[1], total_bytes)

    stop = threading.Event()
    try:
        return await asyncio.to_thread(_hash_all, to_hash, workers, on_done, stop)
    except asyncio.CancelledError:  # Ctrl-C: the hashing threads stop within a block
        stop.set()
        raise


def _unlisted(root: Path, mset: ManifestSet, selection: Selection) -> list[FileCheck]:
    """Step 5: the files on disk, within the selection, that no manifest lists."""
    return [
        FileCheck(rel, "unlisted", size=st.st_size)
        for subject in selection.subjects
        for rel, st in _walk_subject(root, subject)
        if rel not in mset.index and in_scope(rel, selection)
    ]
