"""CRC-32 (the zlib / gzip polynomial) of the bytes of a range, as fast as this machine allows.

zlib's ``crc32`` runs at ~4.5 GB/s here, and each streamed byte passes through it once: 15 % of
the CPU of a large pull.  ISA-L's (the ``isal`` package, carry-less multiplication) gives the
same values at ~50 GB/s.  Both compute the same CRC, so a journal written with one is checked
with the other; without ``isal`` (a platform with no wheel), zlib's is used.
"""

from __future__ import annotations

from collections.abc import Callable

crc32: Callable[[bytes | memoryview, int], int]
try:
    from isal.isal_zlib import crc32 as _isal_crc32
except ImportError:  # pragma: no cover - isal is a dependency where it has wheels
    from zlib import crc32
else:
    crc32 = _isal_crc32

#: which implementation :data:`crc32` is (for the profile notes)
IMPLEMENTATION = "isal" if crc32.__module__.startswith("isal") else "zlib"
