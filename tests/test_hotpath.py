"""The streaming hot path's parts, without a server: the CRC-32 of ranges, the body's hand-over of
aiohttp's buffers, a temp file's creation over a stale one."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader

from hcpsync.engine import md5stream
from hcpsync.engine.crc import crc32
from hcpsync.engine.tempfile import TempFile
from hcpsync.errors import RangeMismatchError, ShortReadError
from hcpsync.store.body import S3Body


def test_crc32_is_zlibs_crc32_so_old_journals_stay_checkable() -> None:
    rng = random.Random(12)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 300_000))
        seed = rng.randrange(0, 2**32)
        cut = rng.randrange(0, len(data) + 1)
        assert crc32(data, seed) == zlib.crc32(data, seed)
        # chained over pieces, from bytes or memoryview slices: the CRC a journal records per range
        view = memoryview(data)
        assert crc32(view[cut:], crc32(view[:cut], 0)) == zlib.crc32(data)


class _Raw:
    headers: dict[str, str] = {}

    def __init__(self, content: StreamReader) -> None:
        self.content = content


def _stream(pieces: list[bytes], eof: bool = True) -> StreamReader:
    proto = mock.Mock(_reading_paused=False)
    reader = StreamReader(proto, 2**16, loop=asyncio.get_running_loop())
    for p in pieces:
        reader.feed_data(p)
    if eof:
        reader.feed_eof()
    return reader


async def _collect(body: S3Body, size: int) -> list[Any]:
    return [c async for c in body.chunks(size)]


async def test_body_hands_over_the_parsers_buffers_without_copying() -> None:
    pieces = [os.urandom(n) for n in (1000, 70_000, 5, 262_144)]
    body = S3Body(_Raw(_stream(pieces)), "b", "k", sum(map(len, pieces)))
    got = await _collect(body, 262_144)
    assert got == pieces and all(g is p for g, p in zip(got, pieces, strict=True))  # the very objects
    assert body.received == body.length


async def test_body_slices_a_buffer_over_the_chunk_size_as_views() -> None:
    piece = os.urandom(10_000)
    body = S3Body(_Raw(_stream([piece])), "b", "k", len(piece))
    got = await _collect(body, 4096)
    assert [len(c) for c in got] == [4096, 4096, 1808]
    assert all(isinstance(c, memoryview) and c.obj is piece for c in got)
    assert b"".join(got) == piece


async def test_body_checks_its_length() -> None:
    with pytest.raises(ShortReadError):
        await _collect(S3Body(_Raw(_stream([b"abc"])), "b", "k", 4), 1024)
    with pytest.raises(RangeMismatchError):
        await _collect(S3Body(_Raw(_stream([b"abc", b"de"])), "b", "k", 4), 1024)


def test_temp_file_replaces_a_stale_one_and_is_exclusive(tmp_path: Path) -> None:
    temp, final = tmp_path / ".a.part", tmp_path / "a"
    temp.write_bytes(b"stale bytes of an earlier run")
    f, resumed = TempFile.open(temp, final, resume=False)
    try:
        assert not resumed and temp.stat().st_size == 0
        f.write_at(b"new", 0)
    finally:
        f.close()
    assert temp.read_bytes() == b"new"
    f2, resumed = TempFile.open(temp, final, resume=True)  # resumed: kept as it is
    f2.close()
    assert resumed and temp.read_bytes() == b"new"


@pytest.mark.parametrize("size", [0, 1000, 128 * 1024, 3_000_000])
async def test_stream_md5_off_the_loop_is_the_md5_of_the_stream(size: int, monkeypatch: Any) -> None:
    monkeypatch.setattr(md5stream, "MAX_PENDING", 100_000)  # the loop waits for the thread now and then
    data = os.urandom(size)
    s = md5stream.StreamMd5(size)
    assert (s._hasher is None) == (size < md5stream.INLINE_BELOW)
    view = memoryview(data)
    for i in range(0, size, 65_536):
        s.update(view[i : i + 65_536] if i % 2 else bytes(view[i : i + 65_536]))
    assert await s.hexdigest() == hashlib.md5(data).hexdigest()


async def test_stream_md5s_of_interleaved_streams_stay_apart() -> None:
    blobs = [os.urandom(700_000) for _ in range(5)]
    streams = [md5stream.StreamMd5(len(b)) for b in blobs]
    for i in range(0, 700_000, 50_000):
        for s, b in zip(streams, blobs, strict=True):
            s.update(b[i : i + 50_000])
    got = await asyncio.gather(*(s.hexdigest() for s in streams))
    assert got == [hashlib.md5(b).hexdigest() for b in blobs]

