"""``pull --checksum``: the files already at their final path, checked before the pool sees them.

Without it a file of the planned size at its final path is skipped (fast re-runs; a same-size
stale file is kept).  With it, :meth:`ChecksumPass.batch` runs on each batch of the plan before
the pool takes it: every such file is checked against its manifest MD5, else its S3 ETag (plain
MD5, or multipart, by the shared rule of :func:`~.etagcheck.etag_verdict`: an encrypted object's
file is kept unverified, never fetched again for that).  The pool's skip check then asks
:meth:`ChecksumPass.verdict`: "bad" files are fetched again.

Files are hashed on every core (:class:`~.hashpool.HashPool`); an MD5 the checksum cache holds
for the file's size and mtime is not computed again, and each MD5 computed goes to the cache.
Verdicts are kept for the batch only (memory bounded by the batch), but those of files found
different, kept for the run (a later round must not skip them).
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..engine.events import Gate, SkipVerdict
from ..errors import UnsafePathError
from ..models import ChecksumCounts, PlannedObject
from ..paths import DestGuard
from .checker import PullVerifier
from .etagcheck import EtagStatus, EtagVerdict, etag_verdict
from .hashing import multipart_etag
from .hashpool import HashPool

#: what the ETag rule's answer makes of a file already present
_SKIP: dict[EtagStatus, SkipVerdict] = {"ok": "verified", "mismatched": "bad", "unverifiable": "unverified",
                                        "unchecked": "unverified"}


@dataclass(frozen=True, slots=True)
class _Present:
    """A file of ``obj`` at its final path with the planned size: its path, size and mtime."""

    obj: PlannedObject
    path: Path
    mtime_ns: int


class ChecksumPass:
    """The ``--checksum`` check of each batch (see the module's docstring).  Use as a context
    manager (its threads stop on the way out); ``counts`` says what it found."""

    def __init__(self, verifier: PullVerifier, root: Path, gate: Gate | None = None, workers: int | None = None) -> None:
        self.verifier, self.root, self.gate = verifier, root, gate
        self.guard = DestGuard(root)
        self.pool = HashPool(workers)
        self.counts = ChecksumCounts()
        self._slots = asyncio.Semaphore(self.pool.workers)  # files hashed at once, MD5s and ETags alike
        self._verdicts: dict[str, tuple[int, int, SkipVerdict]] = {}
        self._bad: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> ChecksumPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()

    def verdict(self, relpath: str, size: int, mtime_ns: int) -> SkipVerdict | None:
        """What the pass found of the file at ``relpath``, if it is still the file it checked."""
        found = self._verdicts.get(relpath)
        if found is not None and found[:2] == (size, mtime_ns):
            return found[2]
        return "bad" if self._bad.get(relpath) == (size, mtime_ns) else None

    def bad_in(self, objects: Sequence[PlannedObject]) -> list[PlannedObject]:
        """Those of ``objects`` (the batch just checked) whose file was found different."""
        return [o for o in objects if (found := self._verdicts.get(o.relpath)) is not None and found[2] == "bad"]

    async def batch(self, objects: Sequence[PlannedObject]) -> None:
        """Check the files of ``objects`` already present (the manifests loaded first)."""
        self._verdicts = {}
        await self.verifier.ready()
        present = [p for p in map(self._present, objects) if p is not None]
        await asyncio.gather(*(self._check(p) for p in present))

    def _present(self, obj: PlannedObject) -> _Present | None:
        """``obj``'s file when the pool would otherwise skip it: a regular file of the planned size,
        not marked for refetch.  A symlink (a DataLad tree) counts when it leads to such a file inside
        DEST: its target is hashed, read only (the pool refuses a link found different)."""
        path = self.root / obj.relpath
        try:
            at = self.guard.at_final(path)
        except (OSError, UnsafePathError):
            return None  # the pool refuses it, with the reason
        if at is None or not stat.S_ISREG(at.st.st_mode) or at.st.st_size != obj.size:
            return None
        if self.gate is not None and self.gate.must_refetch(obj):
            return None
        return _Present(obj, path, at.st.st_mtime_ns)

    async def _check(self, p: _Present) -> None:
        obj, v = p.obj, self.verifier
        exp = v.expected(obj)
        if exp is not None and exp[1] != "S3 ETag":
            got = await self._md5(p)
            self._set(p, "bad" if got != exp[0] else "verified")
        elif exp is not None or multipart_etag(obj.etag) is not None:
            await self._by_etag(p)
        else:
            self._set(p, "unverified")

    async def _md5(self, p: _Present) -> str | None:
        """The file's MD5: the cache's for its size and mtime, else hashed (and cached); None
        when it cannot be read."""
        rel, size = p.obj.relpath, p.obj.size
        cached = self.verifier.cache.get(rel, size, p.mtime_ns)
        if cached is not None:
            return cached
        try:
            async with self._slots:
                got = await self.pool.md5(p.path)
        except OSError:
            return None
        self._hashed(size)
        self.verifier.cache.put(rel, size, p.mtime_ns, got)
        return got

    async def _by_etag(self, p: _Present) -> None:
        """A file in no manifest: its ETag decides, by the shared rule.  A cached MD5 equal to a
        plain-MD5 ETag needs no hashing; anything else is hashed (a HEAD before a mismatch)."""
        obj = p.obj
        if self.verifier.cache.get(obj.relpath, obj.size, p.mtime_ns) == (self.verifier.expected(obj) or ("",))[0]:
            self._set(p, "verified")
            return
        try:
            async with self._slots:
                found = await etag_verdict(self.verifier.store, self.verifier.bucket, obj.key, p.path, obj.size,
                                           obj.etag, self.pool.stop) if self.verifier.store is not None else None
        except OSError:
            found = EtagVerdict("mismatched", None, "")  # unreadable: fetched again
        self._etag_result(p, found)

    def _etag_result(self, p: _Present, found: EtagVerdict | None) -> None:
        if found is None or found.status == "unchecked":
            self._set(p, "unverified")
            return
        if found.got is not None:  # hashed (an SSE object's file too: it is the ETag that cannot tell)
            self._hashed(p.obj.size)
        if found.status == "ok" and multipart_etag(found.got) is None and found.got is not None:
            self.verifier.cache.put(p.obj.relpath, p.obj.size, p.mtime_ns, found.got)
        if found.status == "unverifiable":
            self.counts = replace(self.counts, unverifiable=self.counts.unverifiable + 1)
            self.verifier.unverifiable(p.obj.key, found.detail)
        self._set(p, _SKIP[found.status])

    def _hashed(self, size: int) -> None:
        self.counts = replace(self.counts, hashed=self.counts.hashed + 1, bytes=self.counts.bytes + size)

    def _set(self, p: _Present, verdict: SkipVerdict) -> None:
        self._verdicts[p.obj.relpath] = (p.obj.size, p.mtime_ns, verdict)
        if verdict == "bad":
            self._bad[p.obj.relpath] = (p.obj.size, p.mtime_ns)
            self.counts = replace(self.counts, differed=self.counts.differed + 1)
