"""Verifying files during a pull: :class:`PullVerifier`, the pool's
:class:`~hcpsync.engine.events.Checker` and a listener of its outcomes.

A single-GET object is hashed as it streams in, a ranged one from its temp file in a worker
thread; a mismatch raises :class:`~hcpsync.errors.VerificationError`, so the file never
reaches its final path.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..engine.events import FileDone, FileSkipped, Outcome, SkipVerdict
from ..errors import EtagMismatchError, HcpsyncError, VerificationError
from ..models import PlannedObject
from ..store import ObjectStore
from .cache import NullVerifiedCache, VerifiedCache
from .etagcheck import etag_verdict
from .hashing import HASH_BLOCK, etag_md5, is_md5, md5_file, multipart_etag
from .manifest import Manifest, ManifestIndex
from .manifests import ManifestSet, manifest_notes

ManifestLoader = Callable[[], Awaitable[ManifestSet]]
#: ``(relpath, size, mtime_ns) -> verdict``: what ``--checksum`` found of a file already present (None: nothing)
LocalVerdicts = Callable[[str, int, int], SkipVerdict | None]
#: notes name at most this many files kept unverified
_MAX_UNVERIFIABLE_NOTES = 10


class PullVerifier:
    """Checks each downloaded file's MD5 before it is renamed to its final path.

    It is the pool's :class:`~hcpsync.engine.events.Checker`, and a listener of its outcomes
    (call it with each one): it caches the checksum of every file it verified, and counts.

    The expected MD5 is the manifest's; for a file no manifest lists (or lists without a
    checksum), the S3 ETag when it is a plain MD5 and the GET did not say SSE-KMS/SSE-C, or a
    multipart ETag checked by :func:`~.etagcheck.etag_verdict` (``store`` and ``bucket`` given);
    otherwise the file is *unverified* (size-checked only).  A mismatch raises
    :class:`VerificationError` (:class:`EtagMismatchError` when the ETag said it): the pool
    removes the temp file and the pull fetches the object again, then reports it failed.

    The manifests are ``index``, or fetched by ``loader`` when the first downloaded file is
    checked (a re-run that downloads nothing then makes no manifest request); until then
    every single-GET stream is hashed.

    ``verified_files`` / ``unverified_files`` count files that reached their final path.
    Files already complete are not hashed again; they count as verified only when ``cache``
    holds their MD5 for their current size and mtime and it matches; a file whose cached
    MD5 contradicts the manifest is "bad" (fetched again).  With ``local`` (``--checksum``:
    :class:`~.localcheck.ChecksumPass`), what it found of a file decides first, and every file
    skipped unverified counts as unverified.
    """

    def __init__(
        self,
        index: ManifestIndex | None = None,
        cache: VerifiedCache | None = None,
        *,
        loader: ManifestLoader | None = None,
        store: ObjectStore | None = None,
        bucket: str = "",
    ) -> None:
        self.cache: VerifiedCache = cache if cache is not None else NullVerifiedCache()
        self.verified_files = 0
        self.unverified_files = 0
        self.store, self.bucket = store, bucket
        self.local: LocalVerdicts | None = None
        self._problems: list[str] = []
        self._encrypted: set[str] = set()  # keys size-checked only: SSE-KMS/SSE-C, in no manifest
        self._unverifiable: list[str] = []  # why files in no manifest were kept unverified
        self._loader = loader if index is None else None
        self._loaded = index is not None
        self._lock = asyncio.Lock()
        self.index = index if index is not None else ManifestIndex(())

    @property
    def manifests(self) -> tuple[Manifest, ...] | None:
        """The manifests checked against, once loaded (None: not loaded, or could not be)."""
        return self.index.manifests if self._loaded else None

    def unverifiable(self, key: str, detail: str) -> None:
        """A file in no manifest whose ETag could not tell (kept, unverified): a note says why."""
        self._unverifiable.append(f"{key}: {detail}; kept, unverified")

    async def ready(self) -> None:
        """Load the manifests now, if they are not yet (once, whoever asks first)."""
        await self._ready()

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
                self.index = mset.index
                self._loaded = True
            self._loader = None

    def extra_notes(self, notes: list[str]) -> None:
        """Add notes for the report (problems met while loading the manifests)."""
        self._problems.extend(notes)

    @property
    def notes(self) -> list[str]:
        """Notes for the report: manifest problems found by a deferred load, encrypted files,
        files whose ETag could not tell."""
        out = list(self._problems)
        if self._encrypted:
            out.append(f"{len(self._encrypted)} file(s) encrypted with SSE-KMS or SSE-C and listed in no manifest: "
                       "their S3 ETag is not an MD5, so they are size-checked only")
        out += self._unverifiable[:_MAX_UNVERIFIABLE_NOTES]
        if len(self._unverifiable) > _MAX_UNVERIFIABLE_NOTES:
            out.append(f"... and {len(self._unverifiable) - _MAX_UNVERIFIABLE_NOTES} more file(s) kept unverified")
        return out

    def expected(self, obj: PlannedObject, etag_is_md5: bool = True) -> tuple[str, str] | None:
        """(expected MD5, where it comes from), or None when nothing says."""
        md5 = self.index.lookup(obj.relpath)
        if md5 is not None:
            return md5, f"manifest {self.index.source_of(obj.relpath) or '?'}"
        from_etag = etag_md5(obj.etag) if etag_is_md5 else None
        return (from_etag, "S3 ETag") if from_etag is not None else None

    def wants_md5(self, obj: PlannedObject) -> bool:
        return self._loader is not None or self.expected(obj) is not None

    def skip_verdict(self, obj: PlannedObject, size: int, mtime_ns: int) -> SkipVerdict:
        found = self.local(obj.relpath, size, mtime_ns) if self.local is not None else None
        if found is not None:
            return found
        exp = self.expected(obj)
        have = self.cache.get(obj.relpath, size, mtime_ns) if exp is not None else None
        if exp is None or have is None:
            return "unverified"
        return "verified" if have == exp[0] else "bad"

    async def check(self, obj: PlannedObject, temp: Path, streamed_md5: str | None, etag_is_md5: bool) -> str | None:
        await self._ready()
        exp = self.expected(obj, etag_is_md5)
        if exp is None:
            if not etag_is_md5 and (etag_md5(obj.etag) or multipart_etag(obj.etag)) is not None:
                self._encrypted.add(obj.key)  # the GET said SSE: no HEAD needed
            elif multipart_etag(obj.etag) is not None and self.store is not None:
                return await self._multipart(obj, temp)
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

    async def _multipart(self, obj: PlannedObject, temp: Path) -> str | None:
        """A downloaded file in no manifest, of multipart ETag: the shared ETag rule decides."""
        assert self.store is not None
        try:
            found = await etag_verdict(self.store, self.bucket, obj.key, temp, obj.size, obj.etag)
        except OSError as exc:
            raise VerificationError(f"cannot read the downloaded file to check it: {exc.strerror or exc}") from exc
        if found.status == "mismatched":
            raise EtagMismatchError(f"multipart ETag mismatch: {found.detail} (no manifest lists the file)")
        if found.status == "unverifiable":
            self.unverifiable(obj.key, found.detail)
        return found.got if found.status == "ok" else None

    def __call__(self, outcome: Outcome) -> None:
        """Count what landed, and cache the MD5 of every file verified (a multipart ETag is no MD5:
        it is counted, not cached)."""
        if isinstance(outcome, FileDone):
            if outcome.md5 is None:
                self.unverified_files += 1
                return
            self.verified_files += 1
            if is_md5(outcome.md5):
                self.cache.put(outcome.obj.relpath, outcome.obj.size, outcome.mtime_ns, outcome.md5)
        elif isinstance(outcome, FileSkipped):
            if outcome.verified:
                self.verified_files += 1
            elif self.local is not None:
                self.unverified_files += 1


async def _md5_in_thread(path: Path) -> str:
    """MD5 of a file in a worker thread; cancelling stops the thread's hashing too."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(md5_file, path, HASH_BLOCK, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
