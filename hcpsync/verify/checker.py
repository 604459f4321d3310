"""Verifying files during a pull: :class:`PullVerifier`, a
:class:`~hcpsync.engine.pool.TransferObserver`.

A single-GET object is hashed as it streams in, a ranged one from its temp file in a worker
thread; a mismatch raises :class:`~hcpsync.errors.VerificationError`, so the file never
reaches its final path.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..engine.pool import TransferObserver
from ..errors import EtagMismatchError, HcpsyncError, VerificationError
from ..models import PlannedObject
from ..paths import is_complete_file
from .cache import NullVerifiedCache, VerifiedCache
from .hashing import HASH_BLOCK, etag_md5, md5_file
from .manifest import ManifestIndex
from .manifests import ManifestSet, manifest_notes

_UNVERIFIED = ""

ManifestLoader = Callable[[], Awaitable[ManifestSet]]


class PullVerifier(TransferObserver):
    """Checks each downloaded file's MD5 before it is renamed to its final path.

    The expected MD5 is the manifest's; for a file no manifest lists (or lists without a
    checksum), the S3 ETag when it is a plain MD5; otherwise the file is *unverified*
    (size-checked only).  A mismatch raises :class:`VerificationError`: the pool removes the
    temp file and the pull fetches the object again (a few rounds), then reports it failed.

    The manifests are ``index``, or fetched by ``loader`` when the first downloaded file is
    checked (a re-run that downloads nothing then makes no manifest request); until then
    every single-GET stream is hashed.

    ``verified_files`` / ``unverified_files`` count files that reached their final path.
    Files already complete are not hashed again; they count as verified only when ``cache``
    holds their MD5 for their current size and mtime and it matches; a file whose cached
    MD5 contradicts the manifest is not complete (it is fetched again).
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
        #: files size-checked only because their GET said SSE-KMS/SSE-C (their ETag is no MD5)
        self.encrypted_files = 0
        self._problems: list[str] = []
        self._etag_not_md5: set[str] = set()
        self._loader = loader if index is None else None
        self._lock = asyncio.Lock()
        self._checked: dict[str, str] = {}
        #: (key, whether the cache holds its expected MD5) from the last is_complete, for the
        #: file_skipped that follows it (one stat and one cache lookup per skipped file, not two)
        self._last_complete: tuple[str, bool] | None = None
        self._set_index(index if index is not None else ManifestIndex(()))

    def _set_index(self, index: ManifestIndex) -> None:
        self.index = index

    async def _ready(self) -> None:
        if self._loader is None:
            return
        async with self._lock:
            loader, self._loader = self._loader, None
            if loader is None:
                return
            try:
                mset = await loader()
            except HcpsyncError as err:
                self._problems.append(f"could not fetch the .xdlm manifests ({err}); files were checked against S3 ETags only")
                return
            self._problems.extend(manifest_notes(mset))
            self._set_index(mset.index)

    @property
    def notes(self) -> list[str]:
        """Notes for the report: manifest problems found by a deferred load, encrypted files."""
        if not self.encrypted_files:
            return list(self._problems)
        return [*self._problems, f"{self.encrypted_files} file(s) encrypted with SSE-KMS or SSE-C and listed in no "
                "manifest: their S3 ETag is not an MD5, so they are size-checked only"]

    def etag_not_md5(self, obj: PlannedObject) -> None:
        self._etag_not_md5.add(obj.key)

    def expected(self, obj: PlannedObject) -> tuple[str, str] | None:
        """(expected MD5, where it comes from), or None when nothing says."""
        md5 = self.index.lookup(obj.relpath)
        if md5 is not None:
            return md5, f"manifest {self.index.source_of(obj.relpath) or '?'}"
        if obj.key in self._etag_not_md5:
            return None
        from_etag = etag_md5(obj.etag)
        if from_etag is not None:
            return from_etag, "S3 ETag"
        return None

    def wants_md5(self, obj: PlannedObject) -> bool:
        return self._loader is not None or self.expected(obj) is not None

    async def check_file(self, obj: PlannedObject, temp: Path, streamed_md5: str | None) -> None:
        await self._ready()
        exp = self.expected(obj)
        if exp is None:
            self._checked[obj.key] = _UNVERIFIED
            return
        actual = streamed_md5 if streamed_md5 is not None else await _md5_in_thread(temp)
        want, source = exp
        if actual != want:
            self._checked.pop(obj.key, None)
            if source == "S3 ETag":
                raise EtagMismatchError(
                    f"MD5 mismatch with the S3 ETag: expected {want}, got {actual} (the expected value came from "
                    "the S3 ETag, as no manifest lists the file; an ETag is not always an MD5)"
                )
            raise VerificationError(f"MD5 mismatch with the {source}: expected {want}, got {actual}")
        self._checked[obj.key] = actual

    def file_done(self, obj: PlannedObject, path: Path) -> None:
        md5 = self._checked.pop(obj.key, _UNVERIFIED)
        if md5 == _UNVERIFIED:
            self.unverified_files += 1
            if obj.key in self._etag_not_md5 and self.index.lookup(obj.relpath) is None:
                self.encrypted_files += 1
            self._etag_not_md5.discard(obj.key)
            return
        self._etag_not_md5.discard(obj.key)
        self.verified_files += 1
        try:
            st = os.stat(path)
        except OSError:
            return
        self.cache.put(obj.relpath, st.st_size, st.st_mtime_ns, md5)

    def file_failed(self, obj: PlannedObject, error: HcpsyncError, kept_partial: bool) -> None:
        self._checked.pop(obj.key, None)
        self._etag_not_md5.discard(obj.key)

    def _cached(self, obj: PlannedObject, path: Path) -> tuple[str | None, str | None]:
        exp = self.expected(obj)
        if exp is None:
            return None, None
        try:
            st = os.stat(path)
        except OSError:
            return exp[0], None
        return exp[0], self.cache.get(obj.relpath, st.st_size, st.st_mtime_ns)

    def is_complete(self, obj: PlannedObject, path: Path) -> bool:
        self._last_complete = None
        if not is_complete_file(path, obj.size):
            return False
        want, have = self._cached(obj, path)
        self._last_complete = (obj.key, want is not None and have == want)
        return not (want is not None and have is not None and have != want)  # known bad: fetch again

    def file_skipped(self, obj: PlannedObject, path: Path) -> None:
        last, self._last_complete = self._last_complete, None
        if last is None or last[0] != obj.key:  # not just asked by is_complete
            want, have = self._cached(obj, path)
            last = (obj.key, want is not None and have == want)
        if last[1]:
            self.verified_files += 1


async def _md5_in_thread(path: Path) -> str:
    """MD5 of a file in a worker thread; cancelling stops the thread's hashing too."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(md5_file, path, HASH_BLOCK, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
