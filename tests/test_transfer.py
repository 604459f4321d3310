"""Transfer pool: byte-identical downloads, ranges, temp files, bandwidth, memory, progress."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import det_bytes, fast_put, tree_files

from hcpsync import Selection, TransferConfig, pull
from hcpsync.config import KiB, MiB
from hcpsync.engine.progress import ProgressEvent
from hcpsync.models import PlannedObject
from hcpsync.planfile import Plan
from hcpsync.planning.schedule import split_parts

TUTORIAL = "q1/100307/MNINonLinear/Results/tfMRI_MOTOR_LR"


def _tutorial_tree() -> dict[str, bytes]:
    return {
        f"{TUTORIAL}/tfMRI_MOTOR_LR.nii.gz": det_bytes(3 * MiB + 123, "bold"),
        f"{TUTORIAL}/tfMRI_MOTOR_LR_Atlas.dtseries.nii": det_bytes(40 * MiB + 5, "dtseries"),
        f"{TUTORIAL}/EVs/lf.txt": b"0 12 1\n",
        f"{TUTORIAL}/EVs/Sync.txt": b"",
        f"{TUTORIAL}/Movement_Regressors.txt": det_bytes(20 * KiB, "mov"),
        f"{TUTORIAL}_hp200_s4.feat/stats/cope1.nii.gz": b"not selected: other folder",
        "q1/100307/MNINonLinear/Results/tfMRI_MOTOR_RL/tfMRI_MOTOR_RL.nii.gz": b"not selected",
        "q1/100307/T1w/T1w_acpc_dc.nii.gz": b"not selected either",
        "q1/100408/MNINonLinear/Results/tfMRI_MOTOR_LR/x.txt": b"other subject",
    }


async def test_tutorial_example_exact_keys_byte_identical(moto_url: str, bucket: str, tmp_path: Path) -> None:
    tree = _tutorial_tree()
    fast_put(bucket, tree)
    sel = Selection(subjects=["100307"], bucket=bucket, release="q1", paths=["MNINonLinear/Results/tfMRI_MOTOR_LR"])
    cfg = TransferConfig(part_size=4 * MiB, multipart_threshold=4 * MiB, concurrency=8)
    report = await pull(sel, tmp_path, endpoint_url=moto_url, config=cfg, verify=False)
    want = {k[len("q1/"):]: v for k, v in tree.items() if k.startswith(TUTORIAL + "/")}
    assert tree_files(tmp_path) == want
    assert report.ok and report.transferred_files == len(want) == report.planned_files
    assert report.transferred_bytes == sum(len(v) for v in want.values())
    # one listing, 11 ranges of the 40 MiB file, one GET for each of the 3 other non-empty files;
    # the empty file needs no GET
    assert report.requests == 1 + 11 + 3
    assert not list(tmp_path.rglob("*.hcpsync-part"))


async def test_large_object_many_ranges_byte_identical(moto_url: str, bucket: str, tmp_path: Path) -> None:
    data = det_bytes(37 * MiB + 999, "big")
    fast_put(bucket, {"HCP_1200/100307/rfMRI.nii": data})
    cfg = TransferConfig(part_size=1 * MiB, multipart_threshold=1 * MiB, chunk_size=64 * KiB, concurrency=16)
    report = await pull(Selection(subjects=["100307"], bucket=bucket), tmp_path, endpoint_url=moto_url, config=cfg,
                        verify=False)
    assert report.ok
    assert report.requests == 1 + 38  # one listing, 38 ranges
    assert (tmp_path / "100307/rfMRI.nii").read_bytes() == data


def test_split_parts() -> None:
    cfg = TransferConfig(part_size=1 * MiB, multipart_threshold=2 * MiB)
    obj = PlannedObject("k", 5 * MiB + 1, "e", "k")
    parts = split_parts(obj, cfg)
    assert [(p.start, p.end) for p in parts][-2:] == [(4 * MiB, 5 * MiB), (5 * MiB, 5 * MiB + 1)]
    assert sum(p.length for p in parts) == obj.size and all(p.ranged for p in parts)
    small = split_parts(PlannedObject("k", 2 * MiB, "e", "k"), cfg)
    assert len(small) == 1 and not small[0].ranged


MEMORY_CHILD = r"""
import asyncio, json, sys, tracemalloc
import hcpsync
from hcpsync.config import KiB, MiB
url, bucket, dest = sys.argv[1:4]
cfg = hcpsync.TransferConfig(concurrency=4, chunk_size=64 * KiB, part_size=4 * MiB, multipart_threshold=4 * MiB)
sel = hcpsync.Selection(subjects=["100307"], bucket=bucket)
plan = hcpsync.plan_sync(sel, endpoint_url=url)
tracemalloc.start()
reset = []
def on_progress(ev):
    # baseline at the first event: the S3 client is built (botocore's models loaded), no GET yet
    if not reset:
        tracemalloc.reset_peak()
        reset.append(tracemalloc.get_traced_memory()[0])
report = hcpsync.pull_sync(plan, dest, endpoint_url=url, config=cfg, progress=on_progress)
current, peak = tracemalloc.get_traced_memory()
assert reset
print(json.dumps({"peak": peak - reset[0], "ok": report.ok, "bytes": report.transferred_bytes}))
"""


def test_memory_bounded_by_concurrency_times_chunk(moto_url: str, bucket: str, tmp_path: Path) -> None:
    # 64 MiB object = 1000x the chunk size; 4 workers x 64 KiB chunks.  The pull runs in a child
    # process so that moto's server (in this process) does not count.
    size = 64 * MiB
    data = det_bytes(size, "mem")
    fast_put(bucket, {"HCP_1200/100307/big.dtseries.nii": data})
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, moto_url, bucket, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["bytes"] == size
    assert (tmp_path / "100307/big.dtseries.nii").read_bytes() == data
    # While bytes flow, Python allocations grow by about concurrency x chunk (256 KiB) plus
    # per-connection buffers: far below one part (4 MiB), let alone the object (64 MiB).
    assert result["peak"] < 2 * MiB, result


async def test_failed_file_leaves_nothing_at_final_path(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {"HCP_1200/100307/a.txt": b"a" * 100, "HCP_1200/100307/b.txt": b"b" * 100})
    sel = Selection(subjects=["100307"], bucket=bucket)
    from hcpsync import plan

    p = await plan(sel, endpoint_url=moto_url)
    # b.txt's planned ETag is stale: the pinned GET gets 412, the object is re-fetched
    # with its current ETag (a note), never a mix
    objs = list(p.objects)
    stale = Plan.build(p.selection, (objs[0], PlannedObject(objs[1].key, 100, "0" * 32, objs[1].relpath)))
    report = await pull(stale, tmp_path, endpoint_url=moto_url)
    assert report.ok and any("changed on the server" in n for n in report.notes)
    assert (tmp_path / "100307/b.txt").read_bytes() == b"b" * 100
    # a key deleted since planning: reported, nothing at its final path, the rest lands
    gone = Plan.build(p.selection, (*objs, PlannedObject("HCP_1200/100307/gone.txt", 10, "1" * 32, "100307/gone.txt")))
    report = await pull(gone, tmp_path / "second", endpoint_url=moto_url)
    assert not report.ok and [f.key for f in report.failed] == ["HCP_1200/100307/gone.txt"]
    assert not (tmp_path / "second/100307/gone.txt").exists()
    assert not list((tmp_path / "second").rglob("*.hcpsync-part"))
    assert (tmp_path / "second/100307/a.txt").read_bytes() == b"a" * 100


async def test_bandwidth_cap_is_honoured_across_workers(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"HCP_1200/100307/f{i}": det_bytes(512 * KiB, str(i)) for i in range(8)})
    cfg = TransferConfig(concurrency=8, max_bandwidth=2 * MiB, chunk_size=64 * KiB)
    t0 = time.monotonic()
    report = await pull(Selection(subjects=["100307"], bucket=bucket), tmp_path, endpoint_url=moto_url, config=cfg)
    elapsed = time.monotonic() - t0
    assert report.ok and report.transferred_bytes == 4 * MiB
    assert elapsed >= 1.7, elapsed  # 4 MiB at 2 MiB/s, less the initial burst allowance


async def test_progress_callback_sees_files_and_bytes(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"HCP_1200/100307/f{i}": det_bytes(100 * KiB, str(i)) for i in range(5)})
    events: list[ProgressEvent] = []
    report = await pull(Selection(subjects=["100307"], bucket=bucket), tmp_path, endpoint_url=moto_url,
                        progress=events.append)
    assert report.ok
    last = events[-1]
    assert (last.files_done, last.files_total, last.bytes_done, last.bytes_total) == (5, 5, 500 * KiB, 500 * KiB)
    files_seen = [e.files_done for e in events]
    assert files_seen == sorted(files_seen) and set(range(6)) <= set(files_seen)


async def test_existing_complete_files_are_skipped_and_wrong_size_refetched(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    fast_put(bucket, {"HCP_1200/100307/a": b"A" * 10, "HCP_1200/100307/b": b"B" * 10})
    sel = Selection(subjects=["100307"], bucket=bucket)
    await pull(sel, tmp_path, endpoint_url=moto_url)
    (tmp_path / "100307/b").write_bytes(b"short")
    report = await pull(sel, tmp_path, endpoint_url=moto_url)
    assert (report.skipped_files, report.transferred_files) == (1, 1)
    assert (tmp_path / "100307/b").read_bytes() == b"B" * 10


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"part_size": 10}, {"retries": -1}, {"max_bandwidth": 5}])
def test_config_rejects_bad_values(bad: dict[str, int]) -> None:
    from hcpsync.errors import UsageError

    with pytest.raises(UsageError):
        TransferConfig(**bad)


def test_rerun_of_finished_pull_makes_zero_gets(moto_url: str, bucket: str, tmp_path: Path) -> None:
    from faultproxy import FaultProxy

    from hcpsync import pull_sync

    tree = {f"HCP_1200/100307/T1w/f{i}.nii.gz": det_bytes(10 * KiB + i, str(i)) for i in range(20)}
    tree["HCP_1200/100307/T1w/big.nii.gz"] = det_bytes(5 * MiB, "big")
    fast_put(bucket, tree)
    sel = Selection(subjects=["100307"], bucket=bucket, paths=["T1w"])
    cfg = TransferConfig(part_size=1 * MiB, multipart_threshold=1 * MiB)
    with FaultProxy(moto_url) as proxy:
        first = pull_sync(sel, tmp_path, endpoint_url=proxy.url, config=cfg)
        # one listing of the selected prefix, one of the subject's .xdlm/ (verification)
        assert first.ok and proxy.counts["get"] == 20 + 5 and proxy.counts["list"] == 2
        proxy.reset_counts()
        again = pull_sync(sel, tmp_path, endpoint_url=proxy.url, config=cfg)
        # counted at the server: one listing of the selected prefix, no GET at all
        assert proxy.counts.get("get", 0) == 0 and proxy.counts["list"] == 1 and proxy.bytes_sent == 0
    assert again.ok and again.skipped_files == 21 and again.transferred_files == 0
