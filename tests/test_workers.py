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
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy
from test_journal import finish, spawn, wait_until

from hcpsync.config import KiB, MiB
from hcpsync.journal import status_of

SUBJECT = "100307"
PARTS = ["--part-size", "256KiB", "--multipart-threshold", "256KiB"]


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as p:
        yield p


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
