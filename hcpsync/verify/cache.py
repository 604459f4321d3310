"""Checksums already computed for local files, so a later ``verify`` need not hash an
unchanged file again (keyed by path, size and mtime)."""

from __future__ import annotations

from typing import Protocol


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
