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
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            if stop is not None and stop.is_set():
                raise HashStopped(str(path))
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


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
