"""Worker processes (issue 12): byte-identical pulls whatever the worker count, a worker or the
coordinator killed mid-pull, Ctrl-C, a notebook's running loop, a library caller's cancel.

Real parts only: the CLI in a subprocess, moto's threaded server (behind the fault proxy where
bytes are counted), real signals, the process table read from ``/proc``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy
from test_journal import finish, spawn, wait_until

from hcpsync.config import KiB, MiB
from hcpsync.journal import status_of

SUBJECT = "100307"
PARTS = ["--part-size", "256KiB", "--multipart-threshold", "256KiB"]


def mixed_tree(tag: str, big: int = 3 * MiB) -> dict[str, bytes]:
    """30 small files (whole GETs) and 3 files split into many 256 KiB ranges."""
    tree = {f"HCP_1200/{SUBJECT}/T1w/small{i:02}.txt": det_bytes(1 + 997 * i, f"{tag}s{i}") for i in range(30)}
    tree |= {f"HCP_1200/{SUBJECT}/MNINonLinear/big{i}.nii.gz": det_bytes(big + 4099 * i, f"{tag}b{i}") for i in range(3)}
    return tree


def local(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k[len("HCP_1200/"):]: v for k, v in tree.items()}


def pull_cmd(url: str, bucket: str, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hcpsync", "pull", "--subject", SUBJECT, "--dest", str(dest), "--bucket", bucket,
            "--endpoint-url", url, "--json", "--quiet", *extra]


def children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (read from /proc; workers start in their own session)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p}
        out |= kids
        todo += list(kids)
    return out


def workers_of(pid: int) -> set[int]:
    """The worker processes of the pull ``pid``."""
    found = set()
    for c in children(pid):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"hcpsync.engine.procs.worker" in cmd:
            found.add(c)
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(p)
    return out


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_pulls_are_byte_identical_whatever_the_worker_count(moto_url: str, bucket: str, tmp_path: Path,
                                                             proxy: FaultProxy, workers: int) -> None:
    tree = mixed_tree("wc")
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    code, report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, "--workers", str(workers), *PARTS)))
    assert code == 0, err
    assert tree_files(dest) == local(tree)
    # every worker count: the same report, the same GETs at the server, the same journal
    ranges = sum(-(-len(v) // (256 * KiB)) if len(v) > 256 * KiB else 1 for v in tree.values())
    assert report["transferred"] == {"files": len(tree), "bytes": sum(len(v) for v in tree.values())}
    assert report["failed"] == [] and report["requests"] >= ranges
    assert proxy.counts["get"] == ranges  # each part fetched once, by one process
    assert report["workers"] == (0 if workers == 1 else workers)
    st = status_of(dest)
    assert (st.files_complete, st.files_partial, st.files_pending) == (len(tree), 0, 0)
    assert st.bytes_complete == sum(len(v) for v in tree.values())


SLOW = ["--concurrency", "4", "--max-bandwidth", "3MB/s"]


def slow_pull_underway(bucket: str, proxy: FaultProxy, dest: Path, tag: str,
                       sent: int) -> tuple[subprocess.Popen[str], dict[str, bytes], int]:
    """A capped pull with two workers, once both run and ``sent`` bytes came: the process, the
    tree it pulls, and the tree's size."""
    tree = mixed_tree(tag)
    fast_put(bucket, tree)
    proc = spawn(pull_cmd(proxy.url, bucket, dest, "--workers", "2", *SLOW, *PARTS))
    wait_until(lambda: len(workers_of(proc.pid)) == 2 and proxy.bytes_sent > sent)
    return proc, tree, sum(len(v) for v in tree.values())


def test_a_worker_killed_mid_pull_loses_nothing(moto_url: str, bucket: str, tmp_path: Path,
                                                proxy: FaultProxy) -> None:
    dest = tmp_path / "d"
    proc, tree, total = slow_pull_underway(bucket, proxy, dest, "k1", 2 * MiB)
    victim = min(workers_of(proc.pid))
    os.kill(victim, signal.SIGKILL)
    code, report, err = finish(proc)
    assert code == 0, err
    assert tree_files(dest) == local(tree)
    assert report["transferred"]["files"] == len(tree)
    assert any(f"worker process {victim} died" in n for n in report["notes"])
    # only the parts the dead worker had in flight came again: at most 2 of 4 concurrent, 256 KiB each
    assert proxy.bytes_sent <= total + 2 * 256 * KiB


def test_coordinator_killed_leaves_no_worker_and_the_rerun_fetches_at_most_the_parts_in_flight(
    moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    dest = tmp_path / "d"
    proc, tree, total = slow_pull_underway(bucket, proxy, dest, "k2", 3 * MiB)
    workers = workers_of(proc.pid)
    proc.kill()
    proc.communicate()
    sent = proxy.bytes_sent
    wait_until(lambda: not alive(workers), timeout=5)  # their socket closed: they stop at once
    time.sleep(0.5)
    assert proxy.bytes_sent - sent < 256 * KiB  # nothing kept downloading
    proxy.reset_counts()
    code, _, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, "--workers", "2", *PARTS)))
    assert code == 0, err
    assert tree_files(dest) == local(tree)
    # the re-run fetches what was not done, at most the 4 parts in flight (256 KiB each) more
    assert proxy.bytes_sent <= total - sent + 4 * 256 * KiB


def test_ctrl_c_stops_every_process_keeps_the_journal_and_resumes(moto_url: str, bucket: str, tmp_path: Path,
                                                                  proxy: FaultProxy) -> None:
    dest = tmp_path / "d"
    proc, tree, total = slow_pull_underway(bucket, proxy, dest, "cc", 3 * MiB)
    workers = workers_of(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=10)
    assert code == 130, err
    assert time.monotonic() - t0 < 5
    assert not alive(workers)
    assert "Traceback" not in err
    st = status_of(dest)
    assert st.active_pid is None and st.files_complete + st.files_partial + st.files_pending == len(tree)
    sent = proxy.bytes_sent
    done = st.bytes_complete + st.bytes_partial_done
    assert sent - 2 * MiB <= done <= sent  # what arrived is journaled (bar bytes in socket buffers)
    proxy.reset_counts()
    code, _, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, "--workers", "2", *PARTS)))
    assert code == 0, err
    assert tree_files(dest) == local(tree)
    assert proxy.bytes_sent == total - done  # the re-run fetches exactly what was not journaled


# A library caller: a notebook-style running loop calling pull_sync with two workers, then a
# task running pull() cancelled mid-pull.  After each, the script lists its own descendants and
# open descriptors (sockets, the destination's files), and prints them as JSON.
LIBRARY = '''
import asyncio, json, os, sys
import hcpsync
from hcpsync import Selection, TransferConfig
url, bucket, dest1, dest2 = sys.argv[1:5]
sel = Selection(subjects=["100307"], bucket=bucket)
cfg = TransferConfig(workers=2, concurrency=4, part_size=256 * 1024, multipart_threshold=256 * 1024)

def fds():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out

def kids():
    me, found = str(os.getpid()), []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[1] == me and stat[0] != "Z":
                found.append(int(p))
    return found

async def cell():
    return hcpsync.pull_sync(sel, dest1, endpoint_url=url, config=cfg)

loop = asyncio.new_event_loop()
before = len([f for f in fds() if f.startswith("socket:")])  # the loop's own wake-up socket pair
report = loop.run_until_complete(cell())
after_sync = {"ok": report.ok, "workers": report.workers, "kids": kids()}

async def cancel_mid_pull():
    got = asyncio.Event()
    def progress(ev):
        if ev.bytes_done > 2 * 2**20:
            got.set()
    task = asyncio.ensure_future(hcpsync.pull(sel, dest2, endpoint_url=url, progress=progress,
                                              config=TransferConfig(**{**cfg.__dict__, "max_bandwidth": 2 * 2**20})))
    await got.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "finished"

how = loop.run_until_complete(cancel_mid_pull())
open_files = [f for f in fds() if f.startswith((dest1, dest2))]
sockets = len([f for f in fds() if f.startswith("socket:")]) - before
print(json.dumps({"sync": after_sync, "cancel": how, "kids": kids(), "files": open_files, "sockets": sockets}))
'''


def test_library_callers_running_loop_and_cancel_close_every_process_connection_and_file(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    tree = mixed_tree("lib")
    fast_put(bucket, tree)
    script = tmp_path / "lib.py"
    script.write_text(LIBRARY)
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    out = subprocess.run([sys.executable, str(script), moto_url, bucket, str(d1), str(d2)], capture_output=True,
                         text=True, env={**os.environ, **FAKE_ENV}, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["sync"] == {"ok": True, "workers": 2, "kids": []}
    assert tree_files(d1) == local(tree)
    assert res["cancel"] == "cancelled"
    assert res["kids"] == [] and res["files"] == [] and res["sockets"] <= 0
    # and the cancelled pull resumes to the same bytes
    code, _, err = finish(spawn(pull_cmd(moto_url, bucket, d2, "--workers", "2", *PARTS)))
    assert code == 0, err
    assert tree_files(d2) == local(tree)


def test_workers_that_cannot_start_leave_the_pull_to_the_coordinator(moto_url: str, bucket: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An interpreter that cannot run the worker (a broken environment, an embedded Python):
    the pull completes in one process, with a note that says why."""
    import asyncio

    import hcpsync
    from hcpsync.engine.procs import workerset

    def broken(fd: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], pass_fds=(fd,))

    monkeypatch.setattr(workerset, "_spawn", broken)
    tree = mixed_tree("nostart")
    fast_put(bucket, tree)
    cfg = hcpsync.TransferConfig(workers=2, part_size=256 * KiB, multipart_threshold=256 * KiB)
    report = asyncio.run(hcpsync.pull(hcpsync.Selection(subjects=[SUBJECT], bucket=bucket), tmp_path / "d",
                                      endpoint_url=moto_url, config=cfg))
    assert report.ok and report.workers == 0
    assert tree_files(tmp_path / "d") == local(tree)
    assert any("could not start" in n and "continuing in one process" in n for n in report.notes), report.notes


def test_a_small_file_failing_in_a_worker_leaves_no_temp_file(moto_url: str, bucket: str, tmp_path: Path,
                                                              proxy: FaultProxy) -> None:
    """A worker creates the temp file of a small object itself; a body cut short (and not
    retried) fails that file alone, and the worker's temp file is gone, not left behind."""
    from faultproxy import Rule

    tree = mixed_tree("fail")
    fast_put(bucket, tree)
    proxy.add_rule(Rule("short", key_contains="small07", after_bytes=3000))
    dest = tmp_path / "d"
    code, report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, "--workers", "2", "--retries", "0", *PARTS)))
    assert code == 1, err
    assert [f["key"] for f in report["failed"]] == [f"HCP_1200/{SUBJECT}/T1w/small07.txt"]
    want = {k: v for k, v in local(tree).items() if "small07" not in k}
    assert tree_files(dest) == want  # tree_files sees every regular file but hcpsync's state: no temp file
    assert not list(dest.rglob("*.hcpsync-part"))
    assert report["workers"] == 2
