"""Verification against HCP's ``.xdlm`` checksum manifests, and package selection.

HCP publishes, per subject, one manifest per download package with the MD5 of each file::

    HCP_1200/100307/.xdlm/100307_3T_tfMRI_MOTOR_preproc.json

URIs in a manifest are relative to the release root (``100307/MNINonLinear/...``), the same
form as :attr:`~hcpsync.models.PlannedObject.relpath`, so a file's local path is
``DEST/<uri>``.  This module:

* fetches the manifests of the selected subjects from S3 (:func:`fetch_manifests`: one
  listing of ``<release>/<subject>/.xdlm/`` and one GET per manifest, concurrently) or reads
  them from a local tree (:func:`load_local_manifests`).  A malformed manifest, or a bad entry
  in one, is a one-line *problem* naming the manifest; the rest goes on;
* resolves ``Selection.packages`` to exactly the files of those packages
  (:func:`plan_for`, through :func:`~hcpsync.planner.build_plan`'s ``restrict``);
* verifies files during a pull (:class:`PullVerifier`, a
  :class:`~hcpsync.engine.events.Checker`): a single-GET object is hashed as it streams
  in, a ranged one is hashed from its temp file in a worker thread; a mismatch raises
  :class:`~hcpsync.errors.VerificationError`, so the file never reaches its final path;
* reconciles a local tree with the manifests (:func:`verify_tree`, ``hcpsync verify``):
  every file is ``ok``, ``mismatched``, ``missing``, ``unlisted`` or ``unverifiable``;
* lists the packages of subjects (:func:`list_packages`, ``hcpsync packages``).

Checksums already computed can be remembered through a :class:`VerifiedCache` (keyed by
path, size and mtime), so a later ``verify`` need not hash an unchanged file again.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from ..config import TransferConfig
from ..engine.events import FileDone, FileSkipped, Outcome, SkipVerdict
from ..errors import (
    CredentialsError,
    DestinationError,
    EndpointError,
    EtagMismatchError,
    HcpsyncError,
    ManifestError,
    SelectionError,
    UsageError,
    VerificationError,
)
from ..models import DEFAULT_BUCKET, DEFAULT_RELEASE, ObjectInfo, Plan, PlannedObject, Selection
from ..paths import STATE_DIR, TEMP_SUFFIX, is_complete_file
from ..planning.listing import build_plan, glob_filter, under_path
from ..store.s3 import S3Storage, StorageOptions
from .hashing import HASH_BLOCK, HashStopped, etag_md5, md5_file
from .manifest import MANIFEST_DIR, Manifest, ManifestEntry, ManifestIndex, is_manifest_key, parse_manifest

#: listings and GETs of manifests in flight at once
MANIFEST_CONCURRENCY = 32
#: a manifest bigger than this is refused (real ones are a few hundred KB at most)
MANIFEST_MAX_BYTES = 64 * 1024 * 1024
#: at most this many per-file notes about package files absent from S3
_MAX_MISSING_NOTES = 20

_SUBJECT_DIR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Status = Literal["ok", "mismatched", "missing", "unlisted", "unverifiable"]
STATUSES: tuple[Status, ...] = ("ok", "mismatched", "missing", "unlisted", "unverifiable")


# --- cache of verified checksums ---------------------------------------------------------------


class VerifiedCache(Protocol):
    """Checksums already computed for local files, keyed by (path, size, mtime).

    ``relpath`` is relative to the destination (``100307/T1w/x.nii.gz``).  A hit is trusted
    only when size and ``mtime_ns`` are the same as when the checksum was stored.  Methods are
    called from one thread (the event loop's, or the caller's).
    """

    def get(self, relpath: str, size: int, mtime_ns: int) -> str | None: ...

    def put(self, relpath: str, size: int, mtime_ns: int, md5: str) -> None: ...

    def mismatched(self, relpath: str) -> None:
        """``verify`` found the file wrong: whatever remembers it must not call it complete."""


class NullVerifiedCache:
    """Remembers nothing: every verify hashes every file (the default)."""

    def get(self, relpath: str, size: int, mtime_ns: int) -> str | None:
        return None

    def put(self, relpath: str, size: int, mtime_ns: int, md5: str) -> None:
        return None

    def mismatched(self, relpath: str) -> None:
        return None


class MemoryVerifiedCache:
    """A dict-backed :class:`VerifiedCache` (for one process; tests, notebooks)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, int, str]] = {}

    def get(self, relpath: str, size: int, mtime_ns: int) -> str | None:
        hit = self.entries.get(relpath)
        if hit is None or hit[0] != size or hit[1] != mtime_ns:
            return None
        return hit[2]

    def put(self, relpath: str, size: int, mtime_ns: int, md5: str) -> None:
        self.entries[relpath] = (size, mtime_ns, md5)

    def mismatched(self, relpath: str) -> None:
        return None  # the entry holds the file's actual MD5, which contradicts its manifest


# --- manifests -----------------------------------------------------------------------------------


class ManifestSet:
    """The manifests of some subjects, where they came from, and what was wrong with them.

    ``problems`` are one-line messages, each naming its manifest: files that could not be
    fetched or parsed as a whole, and entries refused inside otherwise good manifests
    (unsafe URIs, malformed checksums, conflicting duplicates).
    """

    def __init__(
        self,
        by_subject: dict[str, list[Manifest]],
        problems: Iterable[str] = (),
        source: str = "",
    ) -> None:
        self.by_subject = {s: tuple(ms) for s, ms in by_subject.items()}
        self.manifests: tuple[Manifest, ...] = tuple(m for ms in self.by_subject.values() for m in ms)
        self.index = ManifestIndex(self.manifests)
        self.source = source
        self.problems: tuple[str, ...] = tuple(problems) + tuple(
            f"manifest {name}: {p}" for name, p in self.index.problems
        )

    @property
    def subjects_without_manifests(self) -> list[str]:
        return [s for s, ms in self.by_subject.items() if not ms]

    def packages(self, subject: str) -> dict[str, Manifest]:
        """package name -> manifest, for one subject."""
        return {m.package: m for m in self.by_subject.get(subject, ())}

    def manifest_of(self) -> dict[str, str]:
        """uri -> name of the first manifest listing it (for messages)."""
        out: dict[str, str] = {}
        for m in self.manifests:
            for e in m.entries:
                out.setdefault(e.uri, m.name)
        return out


def _manifest_problem(name: str, err: HcpsyncError) -> str:
    text = str(err)
    return text if text.startswith("manifest ") else f"manifest {name}: {text}"


async def fetch_manifests(
    storage: S3Storage,
    bucket: str,
    release: str,
    subjects: Sequence[str],
    *,
    listed: Mapping[str, Sequence[ObjectInfo]] | None = None,
    concurrency: int = MANIFEST_CONCURRENCY,
) -> ManifestSet:
    """Fetch and parse every ``<release>/<subject>/.xdlm/*.json`` of ``subjects``.

    ``listed`` gives, for some subjects, their manifest objects already known from a listing
    (then their ``.xdlm/`` folder is not listed again).  Listing errors stop the run (an
    unreachable endpoint, no credentials); a manifest that cannot be fetched or parsed
    becomes a problem and the others are used.
    """
    sem = asyncio.Semaphore(max(1, concurrency))
    release = release.strip("/")

    async def get_one(info: ObjectInfo) -> Manifest | str:
        name = info.key.rsplit("/", 1)[-1]
        async with sem:
            try:
                data = await storage.get_bytes(bucket, info.key, limit=MANIFEST_MAX_BYTES)
            except (EndpointError, CredentialsError):
                raise
            except HcpsyncError as err:
                return _manifest_problem(name, err)
        try:
            return parse_manifest(info.key, data)
        except ManifestError as err:
            return _manifest_problem(name, err)

    async def one_subject(subject: str) -> tuple[list[Manifest], list[str]]:
        prefix = f"{release}/{subject}/{MANIFEST_DIR}/"
        known = listed.get(subject) if listed is not None else None
        infos: list[ObjectInfo] = []
        if known is not None:
            infos = [o for o in known if _is_manifest_of(o.key, prefix)]
        else:
            async with sem:
                async for objs, _ in storage.list_pages(bucket, prefix):
                    infos.extend(o for o in objs if _is_manifest_of(o.key, prefix))
        results = await asyncio.gather(*(get_one(i) for i in infos))
        return [r for r in results if isinstance(r, Manifest)], [r for r in results if isinstance(r, str)]

    subjects = list(dict.fromkeys(subjects))
    done = await asyncio.gather(*(one_subject(s) for s in subjects))
    problems = [p for _, probs in done for p in probs]
    return ManifestSet({s: ms for s, (ms, _) in zip(subjects, done, strict=True)}, problems, f"s3://{bucket}/{release}/")


def _is_manifest_of(key: str, prefix: str) -> bool:
    """A manifest directly in the folder ``prefix`` (``<release>/<subject>/.xdlm/``)."""
    return key.startswith(prefix) and "/" not in key[len(prefix):] and is_manifest_key(key)


def load_local_manifests(dest: str | os.PathLike[str], subjects: Sequence[str]) -> ManifestSet:
    """Read the manifests already under ``DEST/<subject>/.xdlm/`` (no network)."""
    root = Path(dest)
    by_subject: dict[str, list[Manifest]] = {}
    problems: list[str] = []
    for subject in dict.fromkeys(subjects):
        found: list[Manifest] = []
        by_subject[subject] = found
        folder = root / subject / MANIFEST_DIR
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = folder / name
            if not is_manifest_key(f"{subject}/{MANIFEST_DIR}/{name}") or not path.is_file():
                continue
            try:
                if path.stat().st_size > MANIFEST_MAX_BYTES:
                    raise ManifestError(f"manifest {name}: over {MANIFEST_MAX_BYTES} bytes")
                found.append(parse_manifest(name, path.read_bytes()))
            except ManifestError as err:
                problems.append(_manifest_problem(name, err))
            except OSError as exc:
                problems.append(f"manifest {name}: cannot read it: {exc.strerror or exc}")
    return ManifestSet(by_subject, problems, f"{root}/<subject>/{MANIFEST_DIR}/")


# --- selection by package ------------------------------------------------------------------------


def in_scope(relpath: str, selection: Selection) -> bool:
    """Whether a release-relative path passes the selection's subjects, paths and globs."""
    subject, _, rest = relpath.partition("/")
    if subject not in selection.subjects:
        return False
    if selection.paths and not any(under_path(rest, p) for p in selection.paths):
        return False
    return glob_filter(relpath, selection.includes, selection.excludes)


def resolve_packages(manifests: ManifestSet, selection: Selection) -> tuple[dict[str, set[str]], list[str]]:
    """subject -> URIs of the selected packages in that subject's manifests; and notes.

    Raises :class:`SelectionError` (one line, listing the packages available) when a package
    is in no selected subject's manifests.
    """
    manifests.index.uris_for_packages(selection.packages)  # raises for unknown packages
    restrict: dict[str, set[str]] = {}
    notes: list[str] = []
    for subject in selection.subjects:
        have = manifests.packages(subject)
        uris: set[str] = set()
        lacking = []
        for pkg in selection.packages:
            m = have.get(pkg)
            if m is None:
                lacking.append(pkg)
            else:
                uris.update(e.uri for e in m.entries)
        if lacking:
            notes.append(f"subject {subject} has no package {', '.join(lacking)} (no such .xdlm manifest)")
        restrict[subject] = uris
    return restrict, notes


async def plan_for(storage: S3Storage, selection: Selection) -> tuple[Plan, ManifestSet | None]:
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
    planned = {o.relpath for o in plan.objects}
    prefix = selection.release + "/"
    planned.update(r.key[len(prefix):] for r in plan.rejected if r.key.startswith(prefix))
    absent = sorted(u for s in selection.subjects for u in restrict[s] if u not in planned and in_scope(u, selection))
    where = f"s3://{selection.bucket}/{prefix}"
    source = mset.manifest_of()
    for uri in absent[:_MAX_MISSING_NOTES]:
        notes.append(f"{uri}: listed in manifest {source.get(uri, '?')} but not found under {where}")
    if len(absent) > _MAX_MISSING_NOTES:
        notes.append(f"... and {len(absent) - _MAX_MISSING_NOTES} more package file(s) not found under {where}")
    return _with_notes(plan, manifest_notes(mset) + notes), mset


async def fetch_manifests_for_plan(storage: S3Storage, plan: Plan) -> ManifestSet:
    """The manifests of a plan's subjects.  When the selection has no filter the planner
    listed whole subject folders, so the manifests' keys are known from the plan."""
    sel = plan.selection
    listed: dict[str, list[ObjectInfo]] | None = None
    if not (sel.paths or sel.includes or sel.excludes or sel.packages):
        listed = {s: [] for s in sel.subjects}
        for o in plan.objects:
            if o.subject in listed and is_manifest_key(o.key):
                listed[o.subject].append(ObjectInfo(o.key, o.size, o.etag))
    return await fetch_manifests(storage, sel.bucket, sel.release, sel.subjects, listed=listed)


def manifest_notes(mset: ManifestSet) -> list[str]:
    notes = list(mset.problems)
    lacking = mset.subjects_without_manifests
    if lacking:
        notes.append(
            f"no .xdlm manifests for subject(s) {', '.join(lacking[:10])}{' ...' if len(lacking) > 10 else ''}: "
            "their files are checked against S3 ETags where those are MD5s"
        )
    return notes


def _with_notes(plan: Plan, notes: Sequence[str]) -> Plan:
    if not notes:
        return plan
    return replace(plan, notes=tuple(plan.notes) + tuple(n for n in notes if n not in plan.notes))


# --- verification during a pull ----------------------------------------------------------------


ManifestLoader = Callable[[], Awaitable[ManifestSet]]


class PullVerifier:
    """Checks each downloaded file's MD5 before it is renamed to its final path.

    It is the pool's :class:`~hcpsync.engine.events.Checker`, and a listener of its outcomes
    (call it with each one): it caches the checksum of every file it verified, and counts.

    The expected MD5 is the manifest's; for a file no manifest lists (or lists without a
    checksum), the S3 ETag when it is a plain MD5 and the GET did not say SSE-KMS/SSE-C;
    otherwise the file is *unverified* (size-checked only).  A mismatch raises
    :class:`VerificationError` (:class:`EtagMismatchError` when the ETag said it): the pool
    removes the temp file and the pull fetches the object again, then reports it failed.

    The manifests are ``index``, or fetched by ``loader`` when the first downloaded file is
    checked (a re-run that downloads nothing then makes no manifest request); until then
    every single-GET stream is hashed.

    ``verified_files`` / ``unverified_files`` count files that reached their final path.
    Files already complete are not hashed again; they count as verified only when ``cache``
    holds their MD5 for their current size and mtime and it matches; a file whose cached
    MD5 contradicts the manifest is "bad" (fetched again).
    """

    def __init__(
        self,
        index: ManifestIndex | None = None,
        cache: VerifiedCache | None = None,
        *,
        loader: ManifestLoader | None = None,
    ) -> None:
        self.cache: VerifiedCache = cache if cache is not None else NullVerifiedCache()
        self.verified_files = 0
        self.unverified_files = 0
        self._problems: list[str] = []
        self._encrypted: set[str] = set()  # keys size-checked only: SSE-KMS/SSE-C, in no manifest
        self._loader = loader if index is None else None
        self._lock = asyncio.Lock()
        self._source: dict[str, str] = {}
        self._set_index(index if index is not None else ManifestIndex(()))

    def _set_index(self, index: ManifestIndex) -> None:
        self.index = index
        self._source = {}
        for m in index.manifests:
            for e in m.entries:
                self._source.setdefault(e.uri, m.name)

    async def _ready(self) -> None:
        if self._loader is None:
            return
        async with self._lock:  # the first check loads; the others wait for the index
            loader = self._loader
            if loader is None:
                return
            try:
                mset = await loader()
            except HcpsyncError as err:
                self._problems.append(f"could not fetch the .xdlm manifests ({err}); files were checked against S3 ETags only")
            else:
                self._problems.extend(manifest_notes(mset))
                self._set_index(mset.index)
            self._loader = None

    @property
    def notes(self) -> list[str]:
        """Notes for the report: manifest problems found by a deferred load, encrypted files."""
        if not self._encrypted:
            return list(self._problems)
        return [*self._problems, f"{len(self._encrypted)} file(s) encrypted with SSE-KMS or SSE-C and listed in no "
                "manifest: their S3 ETag is not an MD5, so they are size-checked only"]

    def expected(self, obj: PlannedObject, etag_is_md5: bool = True) -> tuple[str, str] | None:
        """(expected MD5, where it comes from), or None when nothing says."""
        md5 = self.index.lookup(obj.relpath)
        if md5 is not None:
            return md5, f"manifest {self._source.get(obj.relpath, '?')}"
        from_etag = etag_md5(obj.etag) if etag_is_md5 else None
        return (from_etag, "S3 ETag") if from_etag is not None else None

    def wants_md5(self, obj: PlannedObject) -> bool:
        return self._loader is not None or self.expected(obj) is not None

    def skip_verdict(self, obj: PlannedObject, size: int, mtime_ns: int) -> SkipVerdict:
        exp = self.expected(obj)
        have = self.cache.get(obj.relpath, size, mtime_ns) if exp is not None else None
        if exp is None or have is None:
            return "unverified"
        return "verified" if have == exp[0] else "bad"

    async def check(self, obj: PlannedObject, temp: Path, streamed_md5: str | None, etag_is_md5: bool) -> str | None:
        await self._ready()
        exp = self.expected(obj, etag_is_md5)
        if exp is None:
            if not etag_is_md5 and etag_md5(obj.etag) is not None:
                self._encrypted.add(obj.key)
            return None
        actual = streamed_md5 if streamed_md5 is not None else await _md5_in_thread(temp)
        want, source = exp
        if actual == want:
            return actual
        if source == "S3 ETag":
            raise EtagMismatchError(
                f"MD5 mismatch with the S3 ETag: expected {want}, got {actual} (the expected value came from "
                "the S3 ETag, as no manifest lists the file; an ETag is not always an MD5)"
            )
        raise VerificationError(f"MD5 mismatch with the {source}: expected {want}, got {actual}")

    def __call__(self, outcome: Outcome) -> None:
        """Count what landed, and cache the checksum of every file verified."""
        if isinstance(outcome, FileDone):
            if outcome.md5 is None:
                self.unverified_files += 1
                return
            self.verified_files += 1
            self.cache.put(outcome.obj.relpath, outcome.obj.size, outcome.mtime_ns, outcome.md5)
        elif isinstance(outcome, FileSkipped) and outcome.verified:
            self.verified_files += 1


async def _md5_in_thread(path: Path) -> str:
    """MD5 of a file in a worker thread; cancelling stops the thread's hashing too."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(md5_file, path, HASH_BLOCK, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


@dataclass
class PreparedPull:
    """What :func:`prepare_pull` hands to the pull: the plan, the verifier to add to the
    pull's observers (None with ``verify=False``) and notes for the report.  After the run,
    add ``verifier.notes`` to the report's notes."""

    plan: Plan
    verifier: PullVerifier | None
    notes: list[str] = field(default_factory=list)


def _anything_to_fetch(plan: Plan, dest: Path) -> bool:
    """Whether some planned file is not yet at its final path with its planned size."""
    return any(not is_complete_file(dest / o.relpath, o.size) for o in plan.objects)


async def prepare_pull(
    storage: S3Storage,
    selection: Selection | Plan,
    *,
    dest: Path | None = None,
    verify: bool = True,
    cache: VerifiedCache | None = None,
) -> PreparedPull:
    """Plan ``selection`` (resolving packages) and set up the verification of the pull.

    The manifests of the plan's subjects are fetched now when some file is to be downloaded
    (or ``dest`` is not given); when every file already looks complete, only if one turns
    out to need downloading after all (so a re-run of a finished pull makes no GET).
    """
    if isinstance(selection, Plan):
        plan, mset = selection, None
    else:
        plan, mset = await plan_for(storage, selection)
    if not verify:
        return PreparedPull(plan, None)
    if mset is not None:
        return PreparedPull(plan, PullVerifier(mset.index, cache))

    async def load() -> ManifestSet:
        return await fetch_manifests_for_plan(storage, plan)

    if dest is not None and not _anything_to_fetch(plan, dest):
        return PreparedPull(plan, PullVerifier(None, cache, loader=load))
    mset = await load()
    notes = [n for n in manifest_notes(mset) if n not in plan.notes]
    return PreparedPull(plan, PullVerifier(mset.index, cache), notes)


# --- verifying a local tree ----------------------------------------------------------------------


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
        if e.name != STATE_DIR and _SUBJECT_DIR_RE.match(e.name) and e.is_dir(follow_symlinks=True)
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
    subjects, no manifests at all, or an unknown package.
    """
    t0 = time.monotonic()
    root = check_dest(dest)
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    workers = jobs or os.cpu_count() or 1
    if selection is None:
        found = discover_subjects(root)
        if not found:
            raise UsageError(f"no subject folders under {root}: give --subject ID")
        selection = Selection(subjects=tuple(found))
    the_cache: VerifiedCache = cache if cache is not None else NullVerifiedCache()

    if offline:
        mset = load_local_manifests(root, selection.subjects)
        where = f"{root}/<subject>/{MANIFEST_DIR}/"
    else:
        async with S3Storage(storage or StorageOptions(), config or TransferConfig()) as s3:
            mset = await fetch_manifests(s3, selection.bucket, selection.release, selection.subjects)
        where = f"s3://{selection.bucket}/{selection.release}/<subject>/{MANIFEST_DIR}/"
    if not mset.manifests:
        names = ", ".join(selection.subjects[:5]) + (" ..." if len(selection.subjects) > 5 else "")
        extra = f" ({len(mset.problems)} could not be read)" if mset.problems else ""
        raise UsageError(f"no usable .xdlm manifests under {where} for subject(s) {names}{extra}")

    notes: list[str] = []
    lacking = mset.subjects_without_manifests
    if lacking:
        notes.append(f"no .xdlm manifests for subject(s) {', '.join(lacking)}: their files are all unlisted")

    # what the manifests expect, within the selection
    if selection.packages:
        restrict, pkg_notes = resolve_packages(mset, selection)
        notes.extend(pkg_notes)
        wanted = {u for uris in restrict.values() for u in uris}
    else:
        wanted = {e.uri for ms in mset.by_subject.values() for m in ms for e in m.entries}
    expected: dict[str, ManifestEntry] = {}
    for uri in sorted(wanted):
        entry = mset.index.entry(uri)
        if entry is not None and in_scope(uri, selection):
            expected[uri] = entry

    checks: list[FileCheck] = []
    to_hash: list[tuple[str, Path, int]] = []
    stats: dict[str, os.stat_result] = {}
    cached = 0
    for uri, entry in expected.items():
        try:
            st = os.stat(root / uri)
        except OSError:
            checks.append(FileCheck(uri, "missing", entry.md5, size=entry.size))
            continue
        if not stat.S_ISREG(st.st_mode):
            checks.append(FileCheck(uri, "missing", entry.md5, size=entry.size, detail="not a regular file"))
            continue
        if entry.size is not None and st.st_size != entry.size:
            checks.append(FileCheck(uri, "mismatched", entry.md5, None, st.st_size,
                                    f"size {st.st_size} bytes, the manifest says {entry.size}"))
            continue
        if entry.md5 is None:
            checks.append(FileCheck(uri, "unverifiable", None, size=st.st_size, detail="no checksum in the manifests"))
            continue
        hit = None if full else the_cache.get(uri, st.st_size, st.st_mtime_ns)
        if hit is not None:
            cached += 1
            status: Status = "ok" if hit == entry.md5 else "mismatched"
            checks.append(FileCheck(uri, status, entry.md5, hit, st.st_size, "cached checksum"))
            continue
        stats[uri] = st
        to_hash.append((uri, root / uri, st.st_size))

    # largest first, so the big files' tails overlap the small ones
    to_hash.sort(key=lambda j: -j[2])
    total_bytes = sum(j[2] for j in to_hash)
    counter = [0, 0]

    def on_done(rel: str, size: int) -> None:
        counter[0] += 1
        counter[1] += size
        if progress is not None:
            progress(counter[0], len(to_hash), counter[1], total_bytes)

    h0 = time.monotonic()
    stop = threading.Event()
    try:
        hashed = await asyncio.to_thread(_hash_all, to_hash, workers, on_done, stop)
    except asyncio.CancelledError:  # Ctrl-C: the hashing threads stop within a block
        stop.set()
        raise
    hash_seconds = time.monotonic() - h0
    for uri, _, size in to_hash:
        entry = expected[uri]
        got = hashed[uri]
        if isinstance(got, OSError):
            checks.append(FileCheck(uri, "mismatched", entry.md5, None, size, f"cannot read it: {got.strerror or got}"))
            continue
        st = stats[uri]
        the_cache.put(uri, st.st_size, st.st_mtime_ns, got)
        checks.append(FileCheck(uri, "ok" if got == entry.md5 else "mismatched", entry.md5, got, size))

    # files on disk that no manifest lists
    for subject in selection.subjects:
        for rel, st in _walk_subject(root, subject):
            if rel not in mset.index and in_scope(rel, selection):
                checks.append(FileCheck(rel, "unlisted", size=st.st_size))

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
        hashed_files=len(to_hash),
        hashed_bytes=sum(j[2] for j in to_hash if isinstance(hashed.get(j[0]), str)),
        hash_seconds=hash_seconds,
        cached_files=cached,
        jobs=workers,
        elapsed=time.monotonic() - t0,
    )


# --- listing packages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageInfo:
    """One download package of one subject."""

    subject: str
    name: str
    manifest: str
    files: int
    bytes: int
    #: files whose size neither the manifest nor the S3 listing gives (not in ``bytes``)
    unsized: int = 0

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"files": self.files, "bytes": self.bytes, "manifest": self.manifest}
        if self.unsized:
            doc["unsized_files"] = self.unsized
        return doc


@dataclass(frozen=True)
class PackagesReport:
    bucket: str
    release: str
    packages: tuple[PackageInfo, ...]
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        subjects: dict[str, dict[str, object]] = {}
        for p in self.packages:
            subjects.setdefault(p.subject, {})[p.name] = p.to_json()
        return {
            "bucket": self.bucket,
            "release": self.release,
            "subjects": subjects,
            "problems": list(self.problems),
        }


async def list_packages(
    subjects: Sequence[str],
    *,
    bucket: str = DEFAULT_BUCKET,
    release: str = DEFAULT_RELEASE,
    storage: StorageOptions | None = None,
    config: TransferConfig | None = None,
) -> PackagesReport:
    """The download packages of ``subjects`` with file counts and total sizes.

    Sizes come from the manifest entries; for entries without one, from the S3 listing of
    the subject (listed only when needed).  Raises :class:`SelectionError` when no subject
    has any readable manifest.
    """
    sel = Selection(subjects=tuple(subjects), bucket=bucket, release=release)
    async with S3Storage(storage or StorageOptions(), config or TransferConfig()) as s3:
        mset = await fetch_manifests(s3, sel.bucket, sel.release, sel.subjects)
        if not mset.manifests:
            names = ", ".join(sel.subjects[:5]) + (" ..." if len(sel.subjects) > 5 else "")
            extra = f" ({len(mset.problems)} could not be read)" if mset.problems else ""
            raise SelectionError(
                f"no usable .xdlm manifests under s3://{sel.bucket}/{sel.release}/<subject>/{MANIFEST_DIR}/ "
                f"for subject(s) {names}{extra}"
            )
        listed: dict[str, dict[str, int]] = {}
        for subject, ms in mset.by_subject.items():
            if any(e.size is None for m in ms for e in m.entries):
                sizes: dict[str, int] = {}
                prefix = f"{sel.release}/"
                async for objs, _ in s3.list_pages(sel.bucket, sel.subject_prefix(subject)):
                    sizes.update((o.key[len(prefix):], o.size) for o in objs)
                listed[subject] = sizes
    out: list[PackageInfo] = []
    for subject, ms in mset.by_subject.items():
        sizes = listed.get(subject, {})
        for m in sorted(ms, key=lambda m: m.package):
            total = unsized = 0
            for e in m.entries:
                size = e.size if e.size is not None else sizes.get(e.uri)
                if size is None:
                    unsized += 1
                else:
                    total += size
            out.append(PackageInfo(subject, m.package, m.name, len(m.entries), total, unsized))
    notes = list(mset.problems)
    for s in mset.subjects_without_manifests:
        notes.append(f"subject {s}: no .xdlm manifests")
    return PackagesReport(sel.bucket, sel.release, tuple(out), tuple(notes))
