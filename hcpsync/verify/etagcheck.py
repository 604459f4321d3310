"""A local file checked against its S3 object's ETag alone (no manifest lists it): one rule.

The ETag of a single-PUT object is the MD5 of its bytes; a multipart upload's is
``<md5 of the parts' md5s>-N``, reproduced for the part sizes that cut the file into N parts
(:func:`~hcpsync.verify.hashing.part_size_candidates`).  Before a file is called mismatched the
object is HEADed: the ETag of an SSE-KMS/SSE-C object is no MD5 (``unverifiable``); and a
multipart ETag no candidate reproduced is recomputed with the part size S3 gives
(HEAD ``?partNumber=1``), or ``unverifiable`` when it does not say.

:func:`etag_verdict` is the whole rule.  Its two halves are public so a caller that hashes in
its own thread pool (``verify``) runs :func:`etag_first_pass` there, then :func:`settle_etag`.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import CredentialsError, EndpointError, HcpsyncError
from ..store import ObjectStore
from .hashing import HASH_BLOCK, MIB, etag_md5, md5_file, multipart_etag, multipart_etags_file, part_size_candidates

SSE_REASON = "the S3 ETag of an SSE-KMS/SSE-C object is not an MD5"

EtagStatus = Literal["ok", "mismatched", "unverifiable", "unchecked"]


@dataclass(frozen=True, slots=True)
class EtagVerdict:
    """``ok``, ``mismatched``, ``unverifiable`` (nothing can tell) or ``unchecked`` (the ETag says
    nothing checkable); ``got``: what the file gave (its MD5, or its multipart ETag); ``detail``:
    one line saying what the file was checked against."""

    status: EtagStatus
    got: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class FirstPass:
    """What hashing the file found: whether it matched, what it gave, and for a multipart
    ETag the part size it was cut at (the one that matched, else the first tried)."""

    matched: bool
    got: str
    part_size: int | None = None


def parts_text(parts: int, part_size: int) -> str:
    return f"{parts} part{'s' if parts != 1 else ''} of {part_size / MIB:g} MiB"


def _targets(size: int, etag: str) -> tuple[str, list[int]] | None:
    """What a first pass compares the file with: ``(the ETag's value, the part sizes to cut it
    at)`` (no part sizes: a plain MD5), or None when the ETag gives nothing to compare (neither
    shape, or no candidate part size)."""
    single = etag_md5(etag)
    if single is not None:
        return single, []
    multi = multipart_etag(etag)
    sizes = part_size_candidates(size, multi[1]) if multi is not None else []
    return (f"{multi[0]}-{multi[1]}", sizes) if multi is not None and sizes else None


def etag_first_pass(path: Path, size: int, etag: str, stop: threading.Event | None = None) -> FirstPass | None:
    """Blocking: hash ``path`` for ``etag`` (plain MD5, or multipart for each candidate part size);
    None when that ETag gives nothing to compare (see :func:`etag_checkable`)."""
    targets = _targets(size, etag)
    if targets is None:
        return None
    want, sizes = targets
    if not sizes:
        got = md5_file(path, HASH_BLOCK, stop)
        return FirstPass(got == want, got)
    found = multipart_etags_file(path, sizes, HASH_BLOCK, stop)
    for ps, got in found.items():
        if got == want:
            return FirstPass(True, got, ps)
    return FirstPass(False, found[sizes[0]], sizes[0])


def etag_checkable(size: int, etag: str) -> bool:
    """Whether :func:`etag_first_pass` has something to hash for ``etag`` (a plain MD5, or a
    multipart ETag some candidate part size reproduces)."""
    return _targets(size, etag) is not None


async def settle_etag(
    store: ObjectStore, bucket: str, key: str, path: Path, etag: str, first: FirstPass | None,
    stop: threading.Event | None = None,
) -> EtagVerdict:
    """The verdict after :func:`etag_first_pass`: a match is ``ok``; anything else asks S3 first
    (HEAD: SSE -> ``unverifiable``; a multipart ETag -> the real part size, recomputed).  A request
    that fails makes the file ``unverifiable`` (what S3 would have said is unknown), but for bad
    credentials or an unreachable endpoint, which are raised: they stop the run."""
    multi = multipart_etag(etag)
    if first is not None and first.matched:
        return EtagVerdict("ok", first.got, _what(multi, first.part_size))
    if first is None and multi is None:
        return _unchecked(etag)
    try:
        return await _ask_s3(store, bucket, key, path, etag, first, stop)
    except (EndpointError, CredentialsError):
        raise
    except HcpsyncError as err:
        return EtagVerdict("unverifiable", first.got if first is not None else None, f"could not ask S3 about it: {err}")


async def _ask_s3(store: ObjectStore, bucket: str, key: str, path: Path, etag: str, first: FirstPass | None,
                  stop: threading.Event | None) -> EtagVerdict:
    """A failed (or impossible) first pass: what the object's HEADs say (see :func:`settle_etag`)."""
    multi = multipart_etag(etag)
    if (await store.head(bucket, key)).encrypted:
        return EtagVerdict("unverifiable", first.got if first is not None else None, SSE_REASON)
    if multi is None:  # a plain MD5: hashed, so there is a first pass
        return _mismatch(etag, first.got, None) if first is not None else _unchecked(etag)
    real = await store.part_size(bucket, key)
    if real is None:
        return EtagVerdict("unverifiable", None, f"no usual part size reproduces the S3 multipart ETag {etag} "
                                                 "and S3 does not say the object's part size")
    if first is not None and first.part_size == real:
        return _mismatch(etag, first.got, real)
    got = (await asyncio.to_thread(multipart_etags_file, path, [real], HASH_BLOCK, stop))[real]
    if got == f"{multi[0]}-{multi[1]}":
        return EtagVerdict("ok", got, _what(multi, real))
    return _mismatch(etag, got, real)


async def etag_verdict(
    store: ObjectStore, bucket: str, key: str, path: Path, size: int, etag: str, stop: threading.Event | None = None
) -> EtagVerdict:
    """Check the file at ``path`` (``size`` bytes, the object's size) against the ETag of
    ``s3://bucket/key``, hashing in a worker thread (cancelling stops it within a block); see the
    module's docstring for the rule.  Raises :class:`~hcpsync.errors.HcpsyncError` when a request
    it needs fails, ``OSError`` when the file cannot be read."""
    stop = stop or threading.Event()
    try:
        first = await asyncio.to_thread(etag_first_pass, path, size, etag, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
    return await settle_etag(store, bucket, key, path, etag, first, stop)


def _what(multi: tuple[str, int] | None, part_size: int | None) -> str:
    if multi is None or part_size is None:
        return "S3 ETag"
    return f"S3 multipart ETag, {parts_text(multi[1], part_size)}"


def _unchecked(etag: str) -> EtagVerdict:
    return EtagVerdict("unchecked", None, f"the S3 ETag {etag!r} is neither an MD5 nor a multipart ETag")


def _mismatch(etag: str, got: str, part_size: int | None) -> EtagVerdict:
    return EtagVerdict("mismatched", got, f"{_what(multipart_etag(etag), part_size)}: expected {etag}, got {got}")
