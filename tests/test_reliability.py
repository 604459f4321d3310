"""Faults lose nothing: retries, persistent failures, objects changed mid-pull, stalls, full disks.

Everything runs against moto's real S3 API, mostly through the fault-injecting proxy, with real
files; CLI checks run ``python -m hcpsync`` in a subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule

from hcpsync import Selection, TransferConfig, pull
from hcpsync.config import KiB
from hcpsync.errors import DiskFullError
from hcpsync.models import PlannedObject
from hcpsync.planning.schedule import split_parts

REL = "HCP_1200/"
SUBJ = "HCP_1200/100307/"
PART = "*.hcpsync-part"


def want_tree(objects: dict[str, bytes], release: str = REL) -> dict[str, bytes]:
    """What DEST must hold after a complete pull of ``objects``."""
    return {k[len(release):]: v for k, v in objects.items()}


def temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(PART))


def cli(args: list[str], url: str | None, *, prefix: list[str] | None = None, timeout: float = 120,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m hcpsync ARGS`` (or ``python PREFIX... ARGS``) with fake credentials."""
    env = {**os.environ, **FAKE_ENV, **(extra_env or {})}
    env.pop("HCPSYNC_DEBUG", None)
    if url:
        env["AWS_ENDPOINT_URL"] = url
    cmd = [sys.executable, *(prefix or ["-m", "hcpsync"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def one_line_error(r: subprocess.CompletedProcess[str], code: int, needle: str) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]


# --------------------------------------------------------------------------- mixed faults


def mixed_tree() -> dict[str, bytes]:
    """300 objects: 288 small ones (1-40 KiB, single GETs) and 12 of 0.3-1.3 MiB (2-6 ranges each)."""
    tree: dict[str, bytes] = {}
    for i in range(288):
        folder = ("T1w", "MNINonLinear", "MNINonLinear/Results/rfMRI_REST1_LR", "unprocessed/3T")[i % 4]
        tree[f"{SUBJ}{folder}/f{i:03d}.nii.gz"] = det_bytes(1 * KiB + (i * 137) % (39 * KiB), f"s{i}")
    for i in range(12):
        tree[f"{SUBJ}T1w/big{i:02d}.nii.gz"] = det_bytes(300 * KiB + i * 90 * KiB + i, f"b{i}")
    return tree


def parts_needed(tree: dict[str, bytes], cfg: TransferConfig) -> int:
    """GETs a fault-free pull of ``tree`` makes: one per part (empty objects need none)."""
    return sum(len(split_parts(PlannedObject(k, len(v), "", k), cfg)) for k, v in tree.items() if v)


def mixed_rules() -> list[Rule]:
    """~10% of GETs faulted, every kind; seeded, so each run injects the same faults."""
    return [
        Rule("list_fail", times=1, seed=1),
        Rule("slowdown", probability=0.03, seed=2),
        Rule("internal", probability=0.02, seed=3),
        Rule("reset", probability=0.02, after_bytes=700, seed=4),  # mid-body: every object is > 1 KiB
        Rule("short", probability=0.02, seed=5),
        Rule("wrong_range", probability=0.06, seed=6),  # only ranged GETs (~1/6 of GETs) qualify
        Rule("stall", probability=0.01, times=2, after_bytes=300, stall_seconds=30, seed=7),
    ]


async def test_mixed_faults_lose_nothing_and_retries_are_counted(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    tree = mixed_tree()
    fast_put(bucket, tree)
    for rule in mixed_rules():
        proxy.add_rule(rule)
    cfg = TransferConfig(concurrency=16, part_size=256 * KiB, multipart_threshold=256 * KiB, chunk_size=64 * KiB,
                         backoff_base=0.01, backoff_max=0.2, retries=8, read_timeout=1.0)
    t0 = time.monotonic()
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=proxy.url, config=cfg)
    elapsed = time.monotonic() - t0
    faults = proxy.faults
    counts = proxy.counts
    print(f"\nmixed faults: {len(tree)} objects, {counts} requests, faults {dict(faults)}, "
          f"retries {report.retries}, elapsed {elapsed:.2f} s")

    # nothing lost, nothing mixed up
    assert report.ok, report.failed
    assert tree_files(tmp_path) == want_tree(tree)
    assert not temp_files(tmp_path)
    assert report.transferred_files == len(tree) and report.transferred_bytes == sum(map(len, tree.values()))
    # the faults really happened, of every kind, on ~10% of the GETs
    assert set(faults) == {"list_fail", "slowdown", "internal", "reset", "short", "wrong_range", "stall"}, faults
    gets = counts["get"]
    assert 0.05 * gets <= sum(faults.values()) <= 0.2 * gets, (faults, counts)
    # every fault cost exactly one retry, and the report counts them all
    assert report.retries == sum(faults.values()), (report.retries, faults)
    # ... and one more request: a fault-free pull needs one GET per part and one listing
    get_faults = sum(faults.values()) - faults["list_fail"]
    assert gets == parts_needed(tree, cfg) + get_faults and counts["list"] >= 1 + faults["list_fail"], counts
    # each stall was abandoned after read_timeout (1 s), not waited out (30 s)
    assert elapsed < 20, elapsed


# --------------------------------------------------------------------------- persistent failure


async def test_persistent_failure_is_reported_and_the_rest_completes(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    tree = {f"{SUBJ}T1w/f{i}.nii.gz": det_bytes(5 * KiB + i, f"p{i}") for i in range(20)}
    tree[f"{SUBJ}T1w/big.nii.gz"] = det_bytes(700 * KiB, "big")
    bad_small, bad_big = f"{SUBJ}T1w/bad.nii.gz", f"{SUBJ}T1w/badbig.nii.gz"
    tree[bad_small] = det_bytes(3 * KiB, "bad")
    tree[bad_big] = det_bytes(600 * KiB, "badbig")  # three ranges, every one failing
    fast_put(bucket, tree)
    proxy.add_rule(Rule("internal", key_contains="/bad"))  # probability 1, no limit: never recovers
    cfg = TransferConfig(concurrency=8, part_size=256 * KiB, multipart_threshold=256 * KiB, retries=3,
                         backoff_base=0.01, backoff_max=0.05)
    # no journal: nothing is kept for a later run (with one, a ranged file's partial may be kept)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=proxy.url, config=cfg,
                        journal=False)

    assert not report.ok
    assert sorted(f.key for f in report.failed) == [bad_small, bad_big]
    for f in report.failed:  # the last error, one line, naming the object
        assert "InternalError" in f.reason and f.key in f.reason and "\n" not in f.reason, f.reason
    good = {k: v for k, v in tree.items() if "/bad" not in k}
    assert tree_files(tmp_path) == want_tree(good)
    assert report.transferred_files == len(good)
    # bad.nii.gz: 1 + retries attempts.  badbig's 3 ranges run side by side; once one has given up,
    # the file has failed and the others stop retrying
    bad_gets = [e for e in proxy.requests_log if e[1] == "get" and "/bad" in e[2]]
    assert proxy.faults["internal"] == len(bad_gets)
    assert 2 * (1 + cfg.retries) <= len(bad_gets) <= 4 * (1 + cfg.retries), len(bad_gets)
    # every request but the first of each part (2 to 4 parts) was a retry, and each is counted
    assert len(bad_gets) - 4 <= report.retries <= len(bad_gets) - 2, (report.retries, len(bad_gets))
    assert not (tmp_path / "100307/T1w/bad.nii.gz").exists() and not (tmp_path / "100307/T1w/badbig.nii.gz").exists()
    assert not temp_files(tmp_path)


def test_persistent_failure_via_cli_exit_1(proxy: FaultProxy, bucket: str, tmp_path: Path) -> None:
    tree = {f"{SUBJ}T1w/f{i}.nii.gz": det_bytes(2 * KiB + i, f"c{i}") for i in range(10)}
    bad = f"{SUBJ}T1w/broken.nii.gz"
    tree[bad] = det_bytes(10 * KiB, "broken")
    fast_put(bucket, tree)
    proxy.add_rule(Rule("internal", key_contains="broken"))
    dest = tmp_path / "dest"
    r = cli(["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(dest), "--retries", "2", "--json"],
            proxy.url)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and [f["key"] for f in doc["failed"]] == [bad]
    assert "InternalError" in doc["failed"][0]["reason"]
    assert doc["transferred"]["files"] == 10 and doc["retries"] == 2
    assert proxy.faults["internal"] == 3  # 1 + --retries 2
    assert tree_files(dest) == want_tree({k: v for k, v in tree.items() if k != bad})
    assert not (dest / "100307/T1w/broken.nii.gz").exists()
    assert not temp_files(dest)
    # text report: the failure with its reason
    r = cli(["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(dest), "--retries", "0"], proxy.url)
    assert r.returncode == 1 and f"FAILED {bad}: server error InternalError" in r.stdout, r.stdout


async def test_range_cut_short_by_a_failed_sibling_is_not_taken_as_done(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    # A's two ranges start together; the first goes through (slowly), every later request fails.
    # Once the second range has given up, the first stops mid-body: that range is NOT complete, and
    # a later run (resuming from the journal) must fetch it again rather than keep its hole.
    key = f"{SUBJ}T1w/A.nii.gz"
    data = det_bytes(512 * KiB, "cut")
    fast_put(bucket, {key: data})
    proxy.add_rule(Rule("internal", key_contains="A.nii", after_requests=1))
    cfg = TransferConfig(concurrency=2, part_size=256 * KiB, multipart_threshold=256 * KiB, chunk_size=16 * KiB,
                         max_bandwidth=256 * KiB, retries=1, backoff_base=0.01)
    sel = Selection(subjects=("100307",), bucket=bucket)
    # verify=False: the pool and the journal alone must get this right (no MD5 to catch a hole)
    first = await pull(sel, tmp_path, endpoint_url=proxy.url, config=cfg, verify=False)
    assert [f.key for f in first.failed] == [key] and "InternalError" in first.failed[0].reason
    assert first.transferred_bytes < 256 * KiB  # the surviving range was cut short
    assert not (tmp_path / "100307/T1w/A.nii.gz").exists()
    proxy.clear_rules()
    again = await pull(sel, tmp_path, endpoint_url=proxy.url, config=replace(cfg, max_bandwidth=None), verify=False)
    assert again.ok and (tmp_path / "100307/T1w/A.nii.gz").read_bytes() == data
    assert not temp_files(tmp_path)


# --------------------------------------------------------------------------- changed mid-pull


@pytest.mark.parametrize("new_size", [1000 * KiB, 300 * KiB + 7, 100 * KiB], ids=["same-size", "shorter", "small"])
async def test_object_overwritten_mid_pull_is_never_mixed(
    proxy: FaultProxy, bucket: str, tmp_path: Path, new_size: int
) -> None:
    key = f"{SUBJ}T1w/changing.nii.gz"
    old = det_bytes(1000 * KiB, "old")
    new = det_bytes(new_size, "new")
    fast_put(bucket, {key: old, f"{SUBJ}T1w/steady.nii.gz": b"steady"})
    # the second ranged GET of the object overwrites it upstream first: old and new bytes would meet
    proxy.add_rule(Rule("mutate", key_contains="changing", new_body=new, after_requests=1, times=1))
    cfg = TransferConfig(concurrency=4, part_size=256 * KiB, multipart_threshold=256 * KiB, backoff_base=0.01)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=proxy.url, config=cfg)
    assert proxy.faults["mutate"] == 1
    final = tmp_path / "100307/T1w/changing.nii.gz"
    # the ETag pin caught it: the whole new object, fetched again, with a note
    assert report.ok, report.failed
    assert final.read_bytes() == new
    assert any("changing.nii.gz changed on the server" in n for n in report.notes), report.notes
    assert (tmp_path / "100307/T1w/steady.nii.gz").read_bytes() == b"steady"
    assert not temp_files(tmp_path)
    # the re-fetch asked for the new version: one HEAD, then pinned GETs of it
    assert proxy.counts["head"] == 1


async def test_object_changing_every_round_fails_and_leaves_nothing(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    key = f"{SUBJ}T1w/flapping.nii.gz"
    versions = [det_bytes(600 * KiB, f"v{i}") for i in range(4)]
    fast_put(bucket, {key: versions[0], f"{SUBJ}T1w/ok.txt": b"ok"})
    # one worker: round 1 fetches a range of v0, then v1 appears; every re-fetch round meets a new version
    for v in versions[1:]:
        proxy.add_rule(Rule("mutate", key_contains="flapping", new_body=v, after_requests=1, times=1))
    cfg = TransferConfig(concurrency=1, part_size=256 * KiB, multipart_threshold=256 * KiB, backoff_base=0.01)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=proxy.url, config=cfg)
    assert proxy.faults["mutate"] == 3
    assert [f.key for f in report.failed] == [key]
    assert "changed on the server" in report.failed[0].reason
    assert not (tmp_path / "100307/T1w/flapping.nii.gz").exists()
    assert not temp_files(tmp_path)
    assert (tmp_path / "100307/T1w/ok.txt").read_bytes() == b"ok"


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("after_bytes", [0, 100 * KiB], ids=["before-body", "mid-body"])
async def test_stalled_connection_is_abandoned_after_read_timeout(
    proxy: FaultProxy, bucket: str, tmp_path: Path, after_bytes: int
) -> None:
    tree = {f"{SUBJ}T1w/stalls.nii.gz": det_bytes(600 * KiB, "stall"), f"{SUBJ}T1w/small": b"s" * 5000}
    fast_put(bucket, tree)
    proxy.add_rule(Rule("stall", key_contains="stalls", after_bytes=after_bytes, stall_seconds=30, times=2))
    cfg = TransferConfig(concurrency=4, part_size=256 * KiB, multipart_threshold=256 * KiB, read_timeout=1.0,
                         backoff_base=0.01)
    t0 = time.monotonic()
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=proxy.url, config=cfg)
    elapsed = time.monotonic() - t0
    assert report.ok and tree_files(tmp_path) == want_tree(tree)
    assert proxy.faults["stall"] == 2 and report.retries == 2
    # two stalls of 30 s, each abandoned after ~1 s (they may overlap): far below one stall
    assert elapsed < 6, elapsed


# --------------------------------------------------------------------------- disk full


class FillingDisk:
    """Stands in for ``os.pwrite``: accepts ``budget`` bytes in all, then fails with ENOSPC."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.refused = 0
        self._real: Callable[[int, bytes, int], int] = os.pwrite

    def __call__(self, fd: int, data: bytes, offset: int) -> int:
        if len(data) > self.budget:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self._real(fd, data, offset)


def assert_only_complete_files(dest: Path, tree: dict[str, bytes]) -> dict[str, bytes]:
    """Every file at a final path is byte-identical to its object; returns them."""
    want = want_tree(tree)
    at_final = {k: v for k, v in tree_files(dest).items() if not k.endswith(".hcpsync-part")}
    assert set(at_final) <= set(want), set(at_final) - set(want)
    for rel, data in at_final.items():
        assert data == want[rel], f"{rel} is at its final path but incomplete or wrong"
    return at_final


def disk_tree() -> dict[str, bytes]:
    tree = {f"{SUBJ}T1w/A.nii.gz": det_bytes(512 * KiB, "A"), f"{SUBJ}T1w/B.nii.gz": det_bytes(768 * KiB + 3, "B")}
    tree.update({f"{SUBJ}T1w/s{i:02d}.txt": det_bytes(10 * KiB + i, f"s{i}") for i in range(20)})
    return tree


async def test_disk_full_stops_cleanly_and_a_later_run_completes(
    proxy: FaultProxy, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = disk_tree()
    fast_put(bucket, tree)
    # A's second range is slow to start: the disk fills (on the small files) while it is in flight, so
    # it is cut short, and a complete-looking (preallocated) A must still not reach its final path
    proxy.add_rule(Rule("delay", key_contains="A.nii", after_requests=1, times=1, delay_seconds=1.0))
    disk = FillingDisk(budget=256 * KiB + 768 * KiB + 3 + 50 * KiB)
    monkeypatch.setattr(os, "pwrite", disk)  # the os module hcpsync.engine.pool writes through
    cfg = TransferConfig(concurrency=4, part_size=256 * KiB, multipart_threshold=256 * KiB, backoff_base=0.01)
    sel = Selection(subjects=("100307",), bucket=bucket)
    with pytest.raises(DiskFullError, match="no space left") as exc:
        # no MD5 check: the pool alone must keep incomplete files from their final paths (big HCP
        # files are multipart uploads, whose ETags are no MD5s, so often nothing else would)
        await pull(sel, tmp_path, endpoint_url=proxy.url, config=cfg, verify=False)
    assert "\n" not in str(exc.value) and disk.refused >= 1
    landed = assert_only_complete_files(tmp_path, tree)
    assert "100307/T1w/A.nii.gz" not in landed and len(landed) < len(tree)

    monkeypatch.undo()  # space again
    proxy.clear_rules()
    report = await pull(sel, tmp_path, endpoint_url=proxy.url, config=cfg)
    assert report.ok and tree_files(tmp_path) == want_tree(tree)
    assert not temp_files(tmp_path)


PATCHED_CLI = """
import errno, os, runpy, sys
budget = [int(os.environ["FAKE_DISK_BYTES"])]
real = os.pwrite
def pwrite(fd, data, offset):
    if len(data) > budget[0]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    budget[0] -= len(data)
    return real(fd, data, offset)
os.pwrite = pwrite
runpy.run_module("hcpsync", run_name="__main__", alter_sys=True)
"""


def test_disk_full_via_cli_one_line_exit_1_then_resumes(moto_url: str, bucket: str, tmp_path: Path) -> None:
    tree = disk_tree()
    fast_put(bucket, tree)
    dest = tmp_path / "dest"
    args = ["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(dest), "--part-size", "256KiB",
            "--multipart-threshold", "256KiB", "--concurrency", "4"]
    r = cli(args, moto_url, prefix=["-c", PATCHED_CLI], extra_env={"FAKE_DISK_BYTES": str(900 * KiB)})
    line = one_line_error(r, 1, "no space left on the destination's file system")
    assert line.startswith("hcpsync: error: ")
    assert r.stdout == ""  # no report for a run that stopped
    landed = assert_only_complete_files(dest, tree)
    assert len(landed) < len(tree)
    r = cli(args, moto_url)
    assert r.returncode == 0, r.stderr
    assert tree_files(dest) == want_tree(tree) and not temp_files(dest)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs), when this process may mount one (root with CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small-fs"
    if not _mount_tmpfs(mnt, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10, check=False)


def test_disk_full_on_a_real_small_file_system(moto_url: str, bucket: str, small_fs: Path) -> None:
    tree = {f"{SUBJ}T1w/big{i}.nii.gz": det_bytes(700 * KiB + i, f"fs{i}") for i in range(3)}
    tree.update({f"{SUBJ}T1w/s{i:02d}.txt": det_bytes(40 * KiB + i, f"fss{i}") for i in range(20)})  # ~2.9 MiB in all
    fast_put(bucket, tree)
    dest = small_fs / "hcp"
    args = ["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(dest), "--part-size", "256KiB",
            "--multipart-threshold", "256KiB", "--concurrency", "4"]
    r = cli(args, moto_url)  # the preflight sees it first: nothing written
    one_line_error(r, 2, "not enough space")
    assert not dest.exists()
    r = cli([*args, "--no-space-check"], moto_url)  # past it, the disk fills mid-pull: only complete files stay
    one_line_error(r, 1, "no space left")
    assert_only_complete_files(dest, tree)
    # more space, same command: it completes, byte-identical
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True, capture_output=True, timeout=10)
    r = cli(args, moto_url)
    assert r.returncode == 0, r.stderr
    assert tree_files(dest) == want_tree(tree) and not temp_files(dest)


# --------------------------------------------------------------------------- cancellation

CANCEL_CHILD = r"""
import asyncio, gc, json, os, sys, time, warnings
warnings.simplefilter("always")
caught = []
sys.unraisablehook = lambda u: caught.append(f"unraisable {u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
import hcpsync
from hcpsync.config import KiB

url, bucket, dest, mode, proxy_port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
cfg = {
    "listing": hcpsync.TransferConfig(),
    "headers": hcpsync.TransferConfig(concurrency=4),
    "body": hcpsync.TransferConfig(concurrency=4, part_size=256 * KiB, multipart_threshold=256 * KiB,
                                   max_bandwidth=512 * KiB, chunk_size=16 * KiB),
    "stall": hcpsync.TransferConfig(concurrency=4, part_size=256 * KiB, multipart_threshold=256 * KiB, read_timeout=20),
    "backoff": hcpsync.TransferConfig(concurrency=4, backoff_base=1.0),
}[mode]


def fds():
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the fd listdir itself used
    return out


def connected_to_proxy():
    inodes = {t[8:-1] for t in fds().values() if t.startswith("socket:[")}
    n = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) == proxy_port and f[3] == "01":
                n += 1
    return n


async def main():
    loop = asyncio.get_running_loop()
    loop_errors = []
    loop.set_exception_handler(lambda lp, ctx: loop_errors.append(str(ctx.get("message"))))
    before = fds()
    events = []
    sel = hcpsync.Selection(subjects=("100307",), bucket=bucket)
    task = asyncio.ensure_future(hcpsync.pull(sel, dest, endpoint_url=url, config=cfg, progress=events.append))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not task.done():
        if mode == "listing" and connected_to_proxy():
            await asyncio.sleep(0.3)  # the listing request is out; its answer is 10 s away
            break
        if mode in ("headers", "backoff") and events:
            await asyncio.sleep(0.5)  # transfer started: GETs wait for their headers / retries back off
            break
        if mode in ("body", "stall") and events and events[-1].bytes_done > 0:
            await asyncio.sleep(0.2)
            break
        await asyncio.sleep(0.01)
    was_running = not task.done()
    task.cancel()
    try:
        await task
        outcome = "finished"
    except asyncio.CancelledError:
        outcome = "cancelled"
    except BaseException as exc:
        outcome = f"raised {type(exc).__name__}: {exc}"
    others = [repr(t) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for _ in range(3):  # let closed transports finish closing (one loop turn each)
        await asyncio.sleep(0.05)
    gc.collect()
    after = fds()
    leaked = {fd: t for fd, t in after.items() if fd not in before or before[fd] != t}
    last = events[-1] if events else None
    return {"outcome": outcome, "was_running": was_running, "tasks": others, "leaked_fds": leaked,
            "loop_errors": loop_errors, "events": len(events),
            "bytes_done": last.bytes_done if last else None, "bytes_total": last.bytes_total if last else None}


with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    result = asyncio.run(main(), debug=True)  # (not -X dev: its strict HTTP parser rejects moto's answers)
    gc.collect()
result["warnings"] = [f"{x.category.__name__}: {x.message}" for x in w] + caught
print(json.dumps(result))
"""


def cancel_rules(mode: str) -> list[Rule]:
    return {
        "listing": [Rule("delay", kinds=("list",), delay_seconds=10)],
        "headers": [Rule("delay", delay_seconds=10)],
        "body": [],
        "stall": [Rule("stall", key_contains="big", after_bytes=64 * KiB, stall_seconds=30)],
        "backoff": [Rule("slowdown")],
    }[mode]


CANCEL_MODES = ["listing", "headers", "body", "stall", "backoff"]


def test_cancelling_pull_at_any_point_closes_everything(moto_url: str, bucket: str, tmp_path: Path) -> None:
    tree = {f"{SUBJ}T1w/big.nii.gz": det_bytes(1024 * KiB + 5, "cbig")}
    tree.update({f"{SUBJ}T1w/s{i}.txt": det_bytes(20 * KiB + i, f"cs{i}") for i in range(8)})
    fast_put(bucket, tree)
    proxies = {mode: FaultProxy(moto_url) for mode in CANCEL_MODES}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for mode, proxy in proxies.items():  # one child per cancellation point, side by side
            proxy.start()
            for rule in cancel_rules(mode):
                proxy.add_rule(rule)
            port = proxy.url.rsplit(":", 1)[1]
            env = {**os.environ, **FAKE_ENV}
            procs[mode] = subprocess.Popen(
                [sys.executable, "-c", CANCEL_CHILD, proxy.url, bucket, str(tmp_path / mode), mode, port],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        results = {}
        for mode, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (mode, err)
            results[mode] = json.loads(out.strip().splitlines()[-1])
            results[mode]["stderr"] = err
        counts = {mode: (proxy.counts, proxy.bytes_sent) for mode, proxy in proxies.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for proxy in proxies.values():
            proxy.stop()

    want = want_tree(tree)
    for mode, res in results.items():
        print(f"\ncancel during {mode}: {res}, proxy saw {counts[mode]}")
        assert res["was_running"] and res["outcome"] == "cancelled", (mode, res)
        assert res["tasks"] == [], (mode, res["tasks"])
        assert res["leaked_fds"] == {}, (mode, res["leaked_fds"])
        assert res["warnings"] == [], (mode, res["warnings"])
        assert res["loop_errors"] == [], (mode, res["loop_errors"])
        assert "Traceback" not in res["stderr"] and "never awaited" not in res["stderr"], (mode, res["stderr"])
        # whatever reached a final path is complete
        dest = tmp_path / mode
        at_final = {k: v for k, v in tree_files(dest).items() if not k.endswith(".hcpsync-part")} if dest.exists() else {}
        assert all(want[k] == v for k, v in at_final.items()), mode
    # each child was cancelled where intended
    assert counts["listing"][0].get("get", 0) == 0 and results["listing"]["events"] == 0
    assert counts["headers"][0]["get"] >= 1 and counts["headers"][1] == 0 and results["headers"]["bytes_done"] == 0
    assert 0 < results["body"]["bytes_done"] < results["body"]["bytes_total"]
    assert counts["stall"][1] < sum(map(len, tree.values()))
    assert not (tmp_path / "stall" / "100307/T1w/big.nii.gz").exists()
    assert counts["backoff"][0]["get"] >= 1 and results["backoff"]["bytes_done"] == 0
