"""The rolling MD5 of a ranged file: hashed in file order as ranges land in any order, the
digest is the file's, a range never landed (or a short file) gives None (the checker then
reads the file), and closing mid-way stops the thread and closes its descriptor."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from pathlib import Path

from hcpsync.engine.rolling import RollingMd5


def temp_with(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "f.hcpsync-part"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


async def test_ranges_landing_out_of_order_give_the_files_md5(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3_000_003)
    fd = temp_with(tmp_path, data)
    cuts = [0, 17, 1 << 20, 1_500_000, 2_999_999, len(data)]
    ranges = list(itertools.pairwise(cuts))
    random.Random(2).shuffle(ranges)
    rolling = RollingMd5(fd, len(data))
    for start, end in ranges:
        rolling.landed(start, end)
    assert await rolling.hexdigest() == hashlib.md5(data).hexdigest()
    rolling.close()
    os.close(fd)


async def test_a_range_never_landed_or_a_short_file_gives_none(tmp_path: Path) -> None:
    data = b"x" * 100_000
    fd = temp_with(tmp_path, data)
    gap = RollingMd5(fd, len(data))
    gap.landed(0, 40_000)
    gap.landed(50_000, 100_000)
    assert await gap.hexdigest() is None
    gap.close()
    short = RollingMd5(fd, 200_000)
    short.landed(0, 200_000)  # the file holds only 100,000 bytes
    assert await short.hexdigest() is None
    short.close()
    os.close(fd)


async def test_close_stops_hashing_and_closes_its_descriptor(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    fd = temp_with(tmp_path, data)
    before = set(os.listdir("/proc/self/fd"))
    rolling = RollingMd5(fd, len(data))
    rolling.landed(0, len(data))
    rolling.close()
    assert await rolling.hexdigest() in (None, hashlib.md5(data).hexdigest())
    assert set(os.listdir("/proc/self/fd")) <= before
    os.close(fd)
