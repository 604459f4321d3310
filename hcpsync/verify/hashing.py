"""MD5 of local files, and what an S3 ETag says about an object's MD5.

:func:`md5_file` is blocking: call it from a worker thread (``asyncio.to_thread`` or a
``ThreadPoolExecutor``).  It reads ``block``-sized pieces into one reused buffer; hashlib
releases the GIL while it hashes buffers over 2 KiB and the read itself is a syscall, so
several threads hash several files on several cores at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator

#: read size for hashing: large enough that syscalls and GIL hand-offs are noise
HASH_BLOCK = 1024 * 1024

_MD5_HEX = re.compile(r"^[0-9a-fA-F]{32}$")


class HashStopped(Exception):
    """:func:`md5_file` was asked to stop (the run was cancelled)."""


def md5_file(path: str | os.PathLike[str], block: int = HASH_BLOCK, stop: threading.Event | None = None) -> str:
    """Hex MD5 of the whole file at ``path`` (raises ``OSError`` if it cannot be read).

    With ``stop``, raises :class:`HashStopped` soon after it is set (checked every block),
    so a cancelled run does not wait for a large file to be hashed to the end.
    """
    h = hashlib.md5(usedforsecurity=False)
    for data in _blocks(path, block, stop):
        h.update(data)
    return h.hexdigest()


def _blocks(path: str | os.PathLike[str], block: int, stop: threading.Event | None) -> Iterator[memoryview]:
    """The file at ``path`` in ``block``-sized pieces, read into one reused buffer (each piece is
    valid until the next); raises :class:`HashStopped` soon after ``stop`` is set."""
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            if stop is not None and stop.is_set():
                raise HashStopped(str(path))
            n = f.readinto(buf)
            if not n:
                return
            yield view[:n]


def is_md5(text: str | None) -> bool:
    """True for 32 hex digits."""
    return bool(text) and _MD5_HEX.match(text or "") is not None


def etag_md5(etag: str | None) -> str | None:
    """The MD5 an S3 ETag stands for, or None.

    A single-PUT object's ETag is the hex MD5 of its bytes; a multipart upload's is
    ``<md5 of the parts' md5s>-<parts>`` (not the file's MD5), and other stores use other
    shapes (nginx: ``<mtime>-<size>``).  Only a bare 32-hex ETag is taken as an MD5.
    """
    e = (etag or "").strip().strip('"')
    return e.lower() if _MD5_HEX.match(e) else None


# --- multipart ETags -----------------------------------------------------------------------

MIB = 1024 * 1024
#: part sizes of the common uploaders (aws-cli and boto3 8 MiB, s5cmd and others 5, 15, 16, 64 MiB)
COMMON_PART_SIZES = tuple(n * MIB for n in (8, 16, 5, 15, 64))

_MULTIPART = re.compile(r"^([0-9a-fA-F]{32})-([1-9][0-9]{0,4})$")


def multipart_etag(etag: str | None) -> tuple[str, int] | None:
    """``(md5 of the parts' md5s, parts)`` of a multipart upload's ETag ``<32 hex>-N``, or None."""
    m = _MULTIPART.match((etag or "").strip().strip('"'))
    return (m.group(1).lower(), int(m.group(2))) if m else None


def part_size_candidates(size: int, parts: int) -> list[int]:
    """The part sizes that cut ``size`` bytes into exactly ``parts`` parts: the common uploaders'
    (:data:`COMMON_PART_SIZES`), ``size / parts`` rounded up to a MiB, and, when there are few
    (:data:`FEW`), every other whole number of MiB that does; in that order, unique."""
    if parts < 1 or size < 0:
        return []
    if parts == 1:  # any part size from the file's size up gives the one ETag
        return [max(size, 1)]
    even = -(-size // parts)
    even_mib = max(MIB, -(-even // MIB) * MIB)
    top = (size - 1) // (parts - 1)  # the largest part size giving `parts`
    whole = range(even_mib, min(top, FEW * MIB + even_mib) + 1, MIB)
    out: list[int] = []
    for ps in (*COMMON_PART_SIZES, even_mib, *(whole if len(whole) <= FEW else ())):
        if ps not in out and max(1, -(-size // ps)) == parts:
            out.append(ps)
    return out


#: how many whole-MiB part sizes beyond the common ones are tried
FEW = 4


def multipart_etags_file(
    path: str | os.PathLike[str], part_sizes: list[int], block: int = HASH_BLOCK, stop: threading.Event | None = None
) -> dict[int, str]:
    """``part size -> "<md5 of part md5s>-<parts>"`` of the file at ``path`` for each of
    ``part_sizes``, reading it once (raises ``OSError``, or :class:`HashStopped` once ``stop`` is set)."""
    cuts = {ps: _PartHasher(ps) for ps in part_sizes}
    for data in _blocks(path, block, stop):
        for hasher in cuts.values():
            hasher.update(data)
    return {ps: hasher.etag() for ps, hasher in cuts.items()}


class _PartHasher:
    """The multipart ETag of a stream cut into ``part_size`` parts."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.digests: list[bytes] = []
        self.current = hashlib.md5(usedforsecurity=False)
        self.filled = 0

    def update(self, data: memoryview) -> None:
        while data:
            take = min(len(data), self.part_size - self.filled)
            self.current.update(data[:take])
            self.filled += take
            data = data[take:]
            if self.filled == self.part_size:
                self.digests.append(self.current.digest())
                self.current = hashlib.md5(usedforsecurity=False)
                self.filled = 0

    def etag(self) -> str:
        digests = self.digests + ([self.current.digest()] if self.filled or not self.digests else [])
        return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"
