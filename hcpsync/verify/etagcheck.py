"""One rule for a file checked against its S3 ETag alone (no manifest lists it): :func:`etag_verdict`.

An ETag is no checksum to trust blindly: SSE-KMS and SSE-C objects have 32-hex ETags that are not
the MD5 of their bytes, and a multipart upload's ``<md5 of part md5s>-N`` depends on the part size
it was uploaded with.  So before a file is called *mismatched*:

* the object is HEADed: encrypted -> *unverifiable*, never mismatched;
* a multipart ETag no candidate part size reproduced is computed again with the part size the
  server gives (``HEAD ?partNumber=1``); when it does not say, the file is *unverifiable*.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

from ..store import ObjectStore
from .hashing import HASH_BLOCK, check_file_etag, etag_md5, multipart_etag, multipart_etags_file, part_size_candidates

P = ParamSpec("P")
T = TypeVar("T")
EtagStatus = Literal["ok", "mismatched", "unverifiable", "unchecked"]

_ENCRYPTED = "encrypted with SSE-KMS or SSE-C: its S3 ETag is not an MD5"


@dataclass(frozen=True)
class EtagVerdict:
    """What the ETag says of a local file: ``ok``, ``mismatched``, ``unverifiable`` (the ETag
    cannot tell: encrypted object, unknown part size) or ``unchecked`` (the ETag says nothing
    checkable).  ``got``: what the file gave (its MD5, or its multipart ETag), when hashed."""

    status: EtagStatus
    got: str | None
    detail: str


async def etag_verdict(store: ObjectStore, bucket: str, key: str, path: Path, size: int, etag: str,
                       stop: threading.Event | None = None) -> EtagVerdict:
    """Check the file at ``path`` (``size`` bytes) against ``etag``, the ETag of ``key``; hashing
    runs in a worker thread (cancelling stops it within a block).  Raises
    :class:`~hcpsync.errors.HcpsyncError` when the HEAD it needs fails, ``OSError`` when the file
    cannot be read."""
    if etag_md5(etag) is None and multipart_etag(etag) is None:
        return EtagVerdict("unchecked", None, "the S3 ETag is neither an MD5 nor a multipart ETag")
    stop = stop or threading.Event()
    found = await _in_thread(stop, check_file_etag, path, size, etag, stop)
    if found is not None and found[0] == "match":
        return EtagVerdict("ok", found[1], "")
    got = found[1] if found is not None else None
    info = await store.head(bucket, key)
    if info.encrypted:
        return EtagVerdict("unverifiable", got, _ENCRYPTED)
    multi = multipart_etag(etag)
    if multi is None:
        return EtagVerdict("mismatched", got, f"MD5 {got}, the S3 ETag says {etag_md5(etag)}")
    return await _with_real_part_size(store, bucket, key, path, size, f"{multi[0]}-{multi[1]}", got, stop)


async def _with_real_part_size(store: ObjectStore, bucket: str, key: str, path: Path, size: int, want: str,
                               got: str | None, stop: threading.Event) -> EtagVerdict:
    """A multipart ETag no candidate part size gave: recompute it with the part size the server
    says (if it is one not tried yet)."""
    tried = part_size_candidates(size, int(want.rsplit("-", 1)[1]))
    real = await store.part_size(bucket, key)
    if real is None:
        return EtagVerdict("unverifiable", got, f"no usual part size gives the multipart ETag {want}, and the "
                           "server does not say the part size it was uploaded with")
    if real not in tried:
        got = (await _in_thread(stop, multipart_etags_file, path, [real], HASH_BLOCK, stop))[real]
        if got == want:
            return EtagVerdict("ok", got, "")
    return EtagVerdict("mismatched", got, f"multipart ETag {got} with {real}-byte parts, the S3 ETag says {want}")


async def _in_thread(stop: threading.Event, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args)`` in a worker thread; cancelling sets ``stop`` (which ``fn`` watches)."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except asyncio.CancelledError:
        stop.set()
        raise
