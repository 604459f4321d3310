"""The transfer pool against the in-memory store: scheduling, resumed retries, the keep-partial
rule and cancellation, without moto or a network."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest
from fakestore import FakeStore

from hcpsync.config import KiB, TransferConfig
from hcpsync.engine.events import FileFailed, NoCheck, NoGate, Outcome, PartDone
from hcpsync.engine.pool import TransferPool
from hcpsync.errors import AccessDeniedError, HcpsyncError, ObjectChangedError, ShortReadError, TransientError
from hcpsync.models import PlannedObject
from hcpsync.paths import temp_path_for

BUCKET = "fake-bucket"
PART = 64 * KiB  # the smallest part size allowed; also the multipart threshold here
BIG = "r/100307/big.nii"  # 4 ranges
SMALL = "r/100307/small.nii"  # one GET


def config(**kw: object) -> TransferConfig:
    base: dict[str, object] = {"concurrency": 4, "part_size": PART, "multipart_threshold": PART, "chunk_size": 4 * KiB,
                               "retries": 3, "backoff_base": 0.0001, "backoff_max": 0.001}
    return TransferConfig(**{**base, **kw})  # type: ignore[arg-type]


def data(n: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(n)


TREE = {BIG: data(3 * PART + 123, "big"), SMALL: data(1000, "small"), "r/100307/edge.nii": data(PART, "edge"),
        "r/100307/empty.nii": b""}


def setup(tree: dict[str, bytes] = TREE) -> tuple[FakeStore, list[PlannedObject]]:
    fake = FakeStore(BUCKET)
    objects = [PlannedObject(key, len(body), fake.put(key, body), key[2:]) for key, body in tree.items()]
    return fake, objects


class Recorder(NoGate, NoCheck):
    """The pool's gate, checker and listener at once: keeps partial files or not, rejects every
    complete file with ``reject`` when set, and records what landed and what failed."""

    def __init__(self, keep_partial: bool = False) -> None:
        self.keep_partial = keep_partial
        self.landed: list[tuple[str, int]] = []
        self.failed: dict[str, tuple[HcpsyncError, bool]] = {}
        self.part_landed = asyncio.Event()
        self.reject: HcpsyncError | None = None

    def hooks(self) -> dict[str, Any]:
        return {"gate": self, "checker": self, "listeners": [self]}

    async def check(self, obj: PlannedObject, temp: Path, streamed_md5: str | None, etag_is_md5: bool) -> str | None:
        if self.reject is not None:
            raise self.reject
        return None

    def __call__(self, outcome: Outcome) -> None:
        if isinstance(outcome, PartDone):
            self.landed.append((outcome.part.obj.key, outcome.part.start))
            self.part_landed.set()
        elif isinstance(outcome, FileFailed):
            self.failed[outcome.obj.key] = (outcome.error, outcome.kept_partial)


def on_disk(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def want(tree: dict[str, bytes], *keys: str) -> dict[str, bytes]:
    return {k[2:]: v for k, v in tree.items() if k in (keys or tree)}


async def test_large_files_are_fetched_as_pinned_ranges_and_land_right(tmp_path: Path) -> None:
    fake, objects = setup()
    result = await TransferPool(fake, BUCKET, tmp_path, config()).run(objects)
    assert not result.failures and result.transferred_files == 4
    assert on_disk(tmp_path) == want(TREE)  # no temp file left either
    assert sorted(fake.gets(BIG)) == [(0, PART), (PART, 2 * PART), (2 * PART, 3 * PART), (3 * PART, 3 * PART + 123)]
    assert fake.gets(SMALL) == [(0, None)] and fake.gets("r/100307/edge.nii") == [(0, None)]  # threshold: one GET
    assert fake.gets("r/100307/empty.nii") == []  # nothing to fetch
    assert all(r.etag == fake.objects[r.key].etag for r in fake.log)  # every GET pinned to the planned ETag


async def test_retries_resume_from_the_last_byte_written(tmp_path: Path) -> None:
    fake, objects = setup()
    fake.cut(BIG, after=10_000, start=PART)  # the second range ends short once, after 10,000 bytes
    fake.cut(SMALL, after=300)
    result = await TransferPool(fake, BUCKET, tmp_path, config()).run(objects)
    assert not result.failures and result.retries == 2
    assert on_disk(tmp_path) == want(TREE)
    assert sorted(fake.gets(BIG))[1:3] == [(PART, 2 * PART), (PART + 10_000, 2 * PART)]
    assert fake.gets(SMALL) == [(0, None), (300, 1000)]  # a single GET resumes as a range


async def test_exhausted_retries_fail_that_file_only(tmp_path: Path) -> None:
    fake, objects = setup()
    fake.fail(SMALL, TransientError("server error 500"), times=100)
    rec = Recorder()
    result = await TransferPool(fake, BUCKET, tmp_path, config(retries=2), **rec.hooks()).run(objects)
    assert [(o.key, str(e)) for o, e in result.failures] == [(SMALL, "server error 500")]
    assert len(fake.gets(SMALL)) == 3 and result.retries == 2  # 1 + retries
    assert on_disk(tmp_path) == want(TREE, BIG, "r/100307/edge.nii", "r/100307/empty.nii")


@pytest.mark.parametrize(
    ("key", "how", "error", "keep_partial", "kept"),
    [
        (BIG, "get", TransientError("reset"), True, True),  # ranged, a range landed, retryable: resumable
        (BIG, "get", TransientError("reset"), False, False),  # nobody would resume it
        (BIG, "get", ObjectChangedError("changed"), True, False),  # other bytes now: never resumed
        (BIG, "get", AccessDeniedError("denied"), True, False),  # would fail again: not kept
        (BIG, "first", TransientError("reset"), True, False),  # no range landed: nothing to resume
        (BIG, "check", TransientError("later"), True, True),  # every range landed, then a retryable failure
        (SMALL, "get", ShortReadError("short"), True, False),  # a single GET always starts over ...
        (SMALL, "check", TransientError("later"), True, False),  # ... even once all its bytes are in
    ],
)
async def test_keep_partial_rule(
    tmp_path: Path, key: str, how: str, error: HcpsyncError, keep_partial: bool, kept: bool
) -> None:
    fake, objects = setup()
    rec = Recorder(keep_partial)
    if how == "check":
        rec.reject = error  # the observer's check of the complete temp file fails
    elif key == BIG:  # the first range lands (or never does), the second never does
        fake.fail(BIG, error, times=100, start=0 if how == "first" else PART)
    else:
        fake.cut(SMALL, after=500, times=100)  # bytes in the temp file every time, never all of them
    pool = TransferPool(fake, BUCKET, tmp_path, config(concurrency=1, retries=1), **rec.hooks())
    result = await pool.run([o for o in objects if o.key == key])
    assert [o.key for o, _ in result.failures] == [key]
    assert rec.failed[key][1] is kept
    temp = temp_path_for(tmp_path / key[2:])
    assert temp.exists() is kept and not (tmp_path / key[2:]).exists()
    if kept:
        assert (BIG, 0) in rec.landed and temp.read_bytes()[:PART] == TREE[BIG][:PART]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("keep_partial", [False, True])
async def test_cancelling_run_closes_every_temp_file(tmp_path: Path, keep_partial: bool) -> None:
    tree = {BIG: TREE[BIG], **{f"r/100307/s{i}.nii": data(20 * KiB, str(i)) for i in range(4)}}
    fake, objects = setup(tree)
    for start in (PART, 2 * PART, 3 * PART):  # the first range of BIG lands, the others hang
        fake.stall(BIG, after=5000, start=start)
    for key in tree:
        if key != BIG:
            fake.stall(key, after=5000)
    rec = Recorder(keep_partial)
    before = open_fds()
    task = asyncio.ensure_future(TransferPool(fake, BUCKET, tmp_path, config(concurrency=8), **rec.hooks()).run(objects))

    async def hanging() -> None:
        while fake.stalled < 7:  # every part but BIG's first is hanging mid-body ...
            fake.stalled_event.clear()
            await fake.stalled_event.wait()
        await rec.part_landed.wait()  # ... and that one is in

    await asyncio.wait_for(hanging(), 10)
    assert open_fds() >= before + 5  # one temp file a file
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_fds() == before
    left = on_disk(tmp_path)
    assert not any(name in left for name in (k[2:] for k in tree))  # no final file
    # only a resumable temp file is kept: the ranged file with a landed range, when partials are kept
    assert sorted(left) == ([temp_path_for(tmp_path / BIG[2:]).relative_to(tmp_path).as_posix()] if keep_partial else [])

