"""The files on disk that no manifest lists: ``unlisted``, or checked against their S3 ETag.

A file S3 holds (online ``verify``) is checked against the object: a size that differs is
``mismatched`` without hashing; else its ETag decides (:mod:`.etagcheck`): the first pass runs
on ``verify``'s hashing pool with the manifest files, then :func:`settle` asks S3 what it must
(HEAD) before calling a file mismatched.  A file S3 does not hold, or any file offline, is
``unlisted``.  Plain-MD5 ETag results go to the checksum cache (they are MD5s); multipart
ones never do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path

from ..models import Selection
from ..planning.select import in_scope  # the pure filters only (the module, not the package: no import cycle)
from ..store import ObjectStore
from .cache import VerifiedCache
from .etagcheck import EtagVerdict, FirstPass, etag_checkable, etag_first_pass, settle_etag
from .hashing import etag_md5
from .hashpool import HashJob
from .links import Located, TreeLinks
from .report import FileCheck
from .s3view import S3View
from .walk import walk_subject

#: HEADs in flight at once while settling ETag verdicts
HEAD_CONCURRENCY = 16

HashResult = str | FirstPass | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A file waiting for its ETag verdict: the object's ETag, the file, and a first pass
    already known from the checksum cache (else its hash job's result)."""

    etag: str
    path: Path
    size: int
    mtime_ns: int
    first: FirstPass | None = None


@dataclass
class Extras:
    """The files no manifest lists: verdicts known now, hash jobs, and files awaiting :func:`settle`."""

    checks: list[FileCheck] = field(default_factory=list)
    jobs: list[HashJob[HashResult]] = field(default_factory=list)
    pending: dict[str, _Pending] = field(default_factory=dict)
    cached: int = 0


def classify_unlisted(
    links: TreeLinks, listed: Container[str], selection: Selection, view: S3View | None, cache: VerifiedCache, full: bool
) -> Extras:
    """Walk the selected subjects for files within the selection that no manifest lists."""
    out = Extras()
    for subject in selection.subjects:
        for rel, loc in walk_subject(links, subject):
            if rel not in listed and in_scope(rel, selection):
                _classify_one(out, rel, loc, view, cache, full)
    return out


def _classify_one(out: Extras, rel: str, loc: Located, view: S3View | None, cache: VerifiedCache, full: bool) -> None:
    if loc.kind != "file" or loc.st is None:
        out.checks.append(FileCheck(rel, "refused" if loc.kind == "refused" else "unlisted", detail=loc.detail))
        return
    st = loc.st
    obj = view.objects.get(rel) if view is not None else None
    if obj is None:
        out.checks.append(FileCheck(rel, "unlisted", size=st.st_size))
        return
    size, etag = obj
    if st.st_size != size:
        out.checks.append(FileCheck(rel, "mismatched", etag, None, st.st_size, f"size {st.st_size} bytes, S3 says {size}",
                                    by_etag=True))
        return
    plain = etag_md5(etag)
    hit = cache.get(rel, st.st_size, st.st_mtime_ns) if plain is not None and not full else None
    first = FirstPass(hit == plain, hit) if hit is not None else None
    out.pending[rel] = _Pending(etag, Path(loc.path), size, st.st_mtime_ns, first)
    if first is not None:
        out.cached += 1
    elif etag_checkable(size, etag):
        out.jobs.append(HashJob(rel, Path(loc.path), size, _first_pass_work(size, etag)))


def _first_pass_work(size: int, etag: str) -> Callable[[Path, threading.Event], HashResult]:
    def work(path: Path, stop: threading.Event) -> HashResult:
        return etag_first_pass(path, size, etag, stop)

    return work


async def settle(
    extras: Extras, store: ObjectStore, selection: Selection, hashed: dict[str, HashResult | OSError],
    cache: VerifiedCache,
) -> list[FileCheck]:
    """A verdict for every file awaiting one (HEADs, ``HEAD_CONCURRENCY`` at a time)."""
    sem = asyncio.Semaphore(HEAD_CONCURRENCY)
    stop = threading.Event()

    async def one(rel: str, p: _Pending) -> FileCheck:
        got = p.first if p.first is not None else hashed.get(rel)
        if isinstance(got, OSError):
            return FileCheck(rel, "mismatched", p.etag, None, p.size, f"cannot read it: {got.strerror or got}", by_etag=True)
        first = got if isinstance(got, FirstPass) else None
        if p.first is None and first is not None and etag_md5(p.etag) is not None:
            cache.put(rel, p.size, p.mtime_ns, first.got)  # a plain ETag's first pass is the file's MD5
        async with sem:
            verdict = await _verdict(store, selection, rel, p, first, stop)
        return _check(rel, p, verdict)

    try:
        return list(await asyncio.gather(*(one(rel, p) for rel, p in extras.pending.items())))
    except asyncio.CancelledError:
        stop.set()
        raise


async def _verdict(
    store: ObjectStore, selection: Selection, rel: str, p: _Pending, first: FirstPass | None, stop: threading.Event
) -> EtagVerdict:
    try:
        return await settle_etag(store, selection.bucket, selection.release_prefix + rel, p.path, p.etag, first, stop)
    except OSError as exc:
        return EtagVerdict("mismatched", None, f"cannot read it: {exc.strerror or exc}")


def _check(rel: str, p: _Pending, v: EtagVerdict) -> FileCheck:
    if v.status in ("ok", "mismatched"):
        return FileCheck(rel, v.status, p.etag, v.got, p.size, v.detail, by_etag=True)
    return FileCheck(rel, "unverifiable", None, None, p.size, v.detail, by_etag=True)
