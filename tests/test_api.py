"""Library API: blocking twins (also inside a running loop), Mirror, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import det_bytes, fast_put

from hcpsync import Mirror, Selection, TransferConfig, plan_sync, pull, pull_sync
from hcpsync.config import MiB
from hcpsync.errors import SelectionError


def test_sync_api_outside_a_loop(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {"HCP_1200/100307/T1w/a": b"a", "HCP_1200/100307/T1w/b": b"bb"})
    sel = Selection(subjects=["100307"], bucket=bucket)
    p = plan_sync(sel, endpoint_url=moto_url)
    assert [o.relpath for o in p.objects] == ["100307/T1w/a", "100307/T1w/b"]
    report = pull_sync(p, tmp_path, endpoint_url=moto_url)
    assert report.ok and (tmp_path / "100307/T1w/b").read_bytes() == b"bb"


async def test_sync_api_inside_a_running_loop(moto_url: str, bucket: str, tmp_path: Path) -> None:
    # as in a Jupyter cell: an event loop is running in this thread
    fast_put(bucket, {"HCP_1200/100307/x": b"xyz"})
    asyncio.get_running_loop()
    report = pull_sync(Selection(subjects=["100307"], bucket=bucket), tmp_path, endpoint_url=moto_url)
    assert report.ok and (tmp_path / "100307/x").read_bytes() == b"xyz"
    with pytest.raises(SelectionError):
        plan_sync(Selection(subjects=["999999"], bucket=bucket), endpoint_url=moto_url)


def test_mirror_fetches_only_what_is_missing(moto_url: str, bucket: str, tmp_path: Path) -> None:
    motor = "HCP_1200/100307/MNINonLinear/Results/tfMRI_MOTOR_LR"
    fast_put(bucket, {f"{motor}/a.nii.gz": b"A" * 50, f"{motor}/EVs/lf.txt": b"lf",
                      "HCP_1200/100307/T1w/t1.nii.gz": b"T1"})
    mirror = Mirror(tmp_path, bucket=bucket, endpoint_url=moto_url)
    paths = mirror.subject("100307").files("MNINonLinear/Results/tfMRI_MOTOR_LR")
    rel = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert rel == ["100307/MNINonLinear/Results/tfMRI_MOTOR_LR/EVs/lf.txt",
                   "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/a.nii.gz"]
    assert all(p.is_file() for p in paths) and not (tmp_path / "100307/T1w").exists()
    assert mirror.last_report is not None and mirror.last_report.transferred_files == 2
    # again: nothing to fetch
    again = mirror.subject("100307").files("MNINonLinear/Results/tfMRI_MOTOR_LR")
    assert sorted(again) == sorted(paths)
    assert mirror.last_report.transferred_files == 0 and mirror.last_report.skipped_files == 2
    # one file lost locally: only that one is fetched
    paths[0].unlink()
    mirror.subject("100307").files("MNINonLinear/Results/tfMRI_MOTOR_LR")
    assert mirror.last_report.transferred_files == 1 and paths[0].exists()


async def test_cancelling_pull_closes_everything_and_leaves_no_final_file(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    data = det_bytes(24 * MiB, "cancel")
    fast_put(bucket, {"HCP_1200/100307/big": data})
    cfg = TransferConfig(concurrency=4, part_size=1 * MiB, multipart_threshold=1 * MiB, max_bandwidth=4 * MiB)
    started = asyncio.Event()
    task = asyncio.ensure_future(pull(Selection(subjects=["100307"], bucket=bucket), tmp_path,
                                      endpoint_url=moto_url, config=cfg, journal=False,
                                      progress=lambda ev: ev.bytes_done and started.set()))
    await asyncio.wait_for(started.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "100307/big").exists()
    assert not list(tmp_path.rglob("*.hcpsync-part"))  # no journal: partial files are removed
    # every task hcpsync started is finished (no orphan workers)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not others, others
