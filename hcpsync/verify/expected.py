"""The files the manifests expect, sorted by what is known of them without hashing, then
given a verdict from their MD5.

Each is looked for through :class:`~.links.TreeLinks` (symlinks followed inside the tree only):
``missing`` (or ``absent_from_s3`` when S3 does not hold it either), ``refused`` (a symlink
leading outside the tree), ``mismatched`` by size, ``unverifiable`` (no checksum), decided by
the checksum cache, or queued for hashing.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .cache import VerifiedCache
from .hashing import HASH_BLOCK, md5_file
from .hashpool import HashJob
from .links import Located, TreeLinks
from .manifest import ManifestEntry, ManifestIndex
from .report import FileCheck, Status
from .unlisted import HashResult


def _md5_work(path: Path, stop: threading.Event) -> HashResult:
    return md5_file(path, HASH_BLOCK, stop)


@dataclass
class Triage:
    """The expected files: verdicts known without hashing, and the hash jobs of the rest."""

    checks: list[FileCheck] = field(default_factory=list)
    jobs: list[HashJob[HashResult]] = field(default_factory=list)
    stats: dict[str, os.stat_result] = field(default_factory=dict)
    cached: int = 0

    def record_hashes(
        self, expected: dict[str, ManifestEntry], hashed: dict[str, HashResult | OSError], cache: VerifiedCache
    ) -> None:
        """A verdict for every hashed file; its MD5 goes to ``cache``."""
        for job in self.jobs:
            uri, size = job.relpath, job.size
            entry = expected[uri]
            got = hashed.get(uri)
            if isinstance(got, OSError):
                self.checks.append(FileCheck(uri, "mismatched", entry.md5, None, size, f"cannot read it: {got.strerror or got}"))
                continue
            if not isinstance(got, str):  # stopped before it was hashed
                continue
            st = self.stats[uri]
            cache.put(uri, st.st_size, st.st_mtime_ns, got)
            self.checks.append(FileCheck(uri, "ok" if got == entry.md5 else "mismatched", entry.md5, got, size))


def classify_expected(
    links: TreeLinks, expected: dict[str, ManifestEntry], absent: set[str], index: ManifestIndex,
    cache: VerifiedCache, full: bool,
) -> Triage:
    """Look for each expected file; decide what needs no hashing and queue the rest.
    ``absent``: the files S3 does not hold; ``index``: the manifests (named in messages)."""
    out = Triage()
    for uri, entry in expected.items():
        loc = links.locate(uri)
        if loc.kind != "file" or loc.st is None:
            out.checks.append(_not_there(uri, entry, loc, absent, index))
            continue
        st = loc.st
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
        out.jobs.append(HashJob(uri, Path(loc.path), st.st_size, _md5_work))
    return out


def _not_there(uri: str, entry: ManifestEntry, loc: Located, absent: set[str], index: ManifestIndex) -> FileCheck:
    """The verdict of an expected file that is not a readable regular file inside the tree."""
    if loc.kind == "refused":
        return FileCheck(uri, "refused", entry.md5, size=entry.size, detail=loc.detail)
    if loc.kind in ("absent", "dangling") and uri in absent:
        where = f"listed in {index.source_of(uri) or 'a manifest'}, not on S3"
        return FileCheck(uri, "absent_from_s3", entry.md5, size=entry.size, detail=where)
    return FileCheck(uri, "missing", entry.md5, size=entry.size, detail=loc.detail)
