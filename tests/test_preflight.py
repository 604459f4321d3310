"""Preflight (issue 15): a pull compares what it still has to write with the space and inodes
free at DEST before the first byte, and refuses in one line (exit 2) with nothing written.

The free space is shrunk for real subprocesses by a ``sitecustomize`` that wraps ``os.statvfs``
for paths under the destination (``HCPSYNC_TEST_STATVFS``); one test uses a real 1 MiB tmpfs
when this machine lets it mount one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy
from test_journal import want_local as local

from hcpsync.models import PlannedObject
from hcpsync.paths import temp_path_for
from hcpsync.preflight import Free, InsufficientSpaceError, SpaceCheck

SUBJECT = "100307"

HOOK = '''
import json, os
_spec = json.loads(os.environ["HCPSYNC_TEST_STATVFS"])
_real = os.statvfs

def statvfs(path):
    st = _real(path)
    if os.path.realpath(path).startswith(_spec["under"]):
        files = st.f_files or 10**6
        return os.statvfs_result((4096, 4096, st.f_blocks, _spec["bytes"] // 4096, _spec["bytes"] // 4096,
                                  files, _spec["inodes"], _spec["inodes"], st.f_flag, st.f_namemax))
    return st

os.statvfs = statvfs
'''


def tree(n: int = 6, size: int = 20_000, mni: bool = True) -> dict[str, bytes]:
    out = {f"HCP_1200/{SUBJECT}/T1w/t{i}.nii": det_bytes(size + i, f"t{i}") for i in range(n)}
    if mni:  # a second folder: listed (and space-checked) as a unit of its own, before T1w
        out[f"HCP_1200/{SUBJECT}/MNINonLinear/m.nii"] = det_bytes(size, "m")
    return out


def pull(tmp_path: Path, url: str, bucket: str, *args: str, free: int, inodes: int = 10**6,
         under: Path | None = None) -> subprocess.CompletedProcess[str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    spec = {"under": str((under or tmp_path).resolve()), "bytes": free, "inodes": inodes}
    env = {**os.environ, **FAKE_ENV, "PYTHONPATH": str(hook), "HCPSYNC_TEST_STATVFS": json.dumps(spec)}
    cmd = [sys.executable, "-m", "hcpsync", "pull", *args, "--no-progress", "--endpoint-url", url]
    if "--plan" not in args:  # a saved plan names its bucket
        cmd += ["--bucket", bucket]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_too_little_space_is_one_line_exit_2_and_nothing_written(bucket: str, tmp_path: Path,
                                                                 proxy: FaultProxy) -> None:
    objects = tree(mni=False)
    fast_put(bucket, objects)
    dest = tmp_path / "d"
    done = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), free=50_000)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "not enough space" in line and "--no-space-check" in line and "48.0 KiB is free" in line
    assert not dest.exists()  # the pull created it, and took it back
    assert proxy.counts.get("get", 0) == 0


def test_a_listing_stops_at_the_first_unit_that_does_not_fit(bucket: str, tmp_path: Path,
                                                              proxy: FaultProxy) -> None:
    """A plan still being listed is checked unit by unit: MNINonLinear fits and is fetched, T1w
    does not: exit 2 before any byte of T1w, and a re-run with room fetches only T1w."""
    objects = tree()
    fast_put(bucket, objects)
    dest = tmp_path / "d"
    done = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), "--workers", "1",
                free=50_000)
    assert done.returncode == 2, done.stderr
    assert "the plan listed so far needs" in one_line(done.stderr)
    assert not (dest / SUBJECT / "T1w").exists()
    assert not any("/T1w/" in key for _, kind, key, _ in proxy.requests_log if kind == "get")
    mni = f"HCP_1200/{SUBJECT}/MNINonLinear/m.nii"
    assert (dest / mni[len("HCP_1200/"):]).read_bytes() == objects[mni]  # the unit that fit is complete
    proxy.reset_counts()
    again = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), free=10**9)
    assert again.returncode == 0, again.stderr
    assert tree_files(dest) == local(objects)
    fetched = sorted(key for _, kind, key, _ in proxy.requests_log if kind == "get")
    assert fetched == sorted(k for k in objects if "/T1w/" in k)


def test_too_few_inodes_is_refused_too(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    objects = tree(mni=False)
    fast_put(bucket, objects)
    dest = tmp_path / "d"
    dest.mkdir()
    done = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), free=10**9, inodes=3)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "not enough inodes" in line and "3 inodes are free" in line
    assert [p.name for p in dest.iterdir()] in ([], [".hcpsync"])
    assert not (dest / SUBJECT).exists()
    assert proxy.counts.get("get", 0) == 0


def test_no_space_check_pulls_anyway(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    objects = tree()
    fast_put(bucket, objects)
    dest = tmp_path / "d"
    done = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), "--no-space-check",
                free=50_000, inodes=1)
    assert done.returncode == 0, done.stderr
    assert tree_files(dest) == local(objects)


def test_what_is_complete_needs_no_space(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    """A re-run of a complete pull needs nothing more: it passes with no space free at all (the
    journal says complete: no file is looked at); without a journal, one missing file needs its
    own size only."""
    objects = tree()
    fast_put(bucket, objects)
    dest = tmp_path / "d"
    first = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), free=10**9)
    assert first.returncode == 0, first.stderr
    assert pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), free=0).returncode == 0
    gone = f"{SUBJECT}/T1w/t0.nii"
    (dest / gone).unlink()  # behind the journal's back: only a look at the disk sees it
    short = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), "--no-journal", free=16_384)
    assert short.returncode == 2 and "needs 20.0 KiB more (1 new files)" in one_line(short.stderr)
    proxy.reset_counts()
    enough = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(dest), "--no-journal", free=24_576)
    assert enough.returncode == 0, enough.stderr
    assert proxy.counts.get("get", 0) == 1
    assert tree_files(dest) == local(objects)


def test_saved_plan_is_checked_whole_before_the_first_byte(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    objects = tree()
    fast_put(bucket, objects)
    saved = tmp_path / "plan.sqlite"
    made = subprocess.run([sys.executable, "-m", "hcpsync", "plan", "--subject", SUBJECT, "--save", str(saved),
                           "--endpoint-url", proxy.url, "--bucket", bucket], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **FAKE_ENV})
    assert made.returncode == 0, made.stderr
    proxy.reset_counts()
    dest = tmp_path / "d"
    total = sum(len(v) for v in objects.values())
    done = pull(tmp_path, proxy.url, bucket, "--plan", str(saved), "--dest", str(dest), free=total - 20_000)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "not enough space" in line and "so far" not in line
    assert not dest.exists()
    assert proxy.counts.get("get", 0) == 0 and proxy.counts.get("list", 0) == 0


def test_a_real_small_tmpfs(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the statvfs tests cover the rule")
    try:
        fast_put(bucket, tree(n=8, size=200_000, mni=False))  # 1.6 MB
        done = pull(tmp_path, proxy.url, bucket, "--subject", SUBJECT, "--dest", str(mnt / "d"), free=0,
                    under=tmp_path / "elsewhere")  # the hook does not apply: the real statvfs of the tmpfs
        assert done.returncode == 2, done.stderr
        assert "not enough space" in one_line(done.stderr)
        assert list(mnt.iterdir()) == []  # not even the journal
        assert proxy.counts.get("get", 0) == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- the rule itself (no network) -------------------------------------------------------------


def obj(rel: str, size: int) -> PlannedObject:
    return PlannedObject(f"HCP_1200/{rel}", size, "e", rel)


def test_space_check_counts_blocks_and_what_temp_files_hold(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "done.nii").write_bytes(b"x" * 100)
    (tmp_path / "a" / "short.nii").write_bytes(b"x" * 10)
    part = temp_path_for(tmp_path / "a" / "big.nii")
    with open(part, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 8192)
    check = SpaceCheck(tmp_path, Free(bytes=10**9, inodes=100, block=4096))
    check.add([obj("a/done.nii", 100), obj("a/short.nii", 100), obj("a/new.nii", 1), obj("a/big.nii", 16384)])
    held = os.lstat(part).st_blocks * 512
    assert check.files == 2  # new.nii and big.nii; short.nii is replaced
    assert check.bytes == 4096 + 4096 + (16384 - held)


def test_space_check_message_of_a_listing_says_so_far(tmp_path: Path) -> None:
    check = SpaceCheck(tmp_path, Free(bytes=4096, inodes=None, block=4096), live=True)
    check.add([obj("a/x.nii", 4096)])
    with pytest.raises(InsufficientSpaceError, match=r"listed so far needs 8\.0 KiB more"):
        check.add([obj("a/y.nii", 1)])
    assert InsufficientSpaceError.exit_code == 2


def test_a_file_checksum_found_different_needs_room_for_its_new_copy(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "stale.nii").write_bytes(b"x" * 5000)
    check = SpaceCheck(tmp_path, Free(bytes=8192, inodes=10, block=4096))
    check.add([obj("a/stale.nii", 5000)])  # complete in size: nothing more
    assert (check.bytes, check.files) == (0, 0)
    check.add([], replaced=[obj("a/stale.nii", 5000)])  # written beside the old one, then renamed over it
    assert (check.bytes, check.files) == (8192, 0)
    with pytest.raises(InsufficientSpaceError):
        check.add([], replaced=[obj("a/other.nii", 1)])
