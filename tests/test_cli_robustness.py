"""Issue 9, items 9, 12 and 14, as users meet them: ``python -m hcpsync`` in real subprocesses,
real SIGKILL/SIGINT, against moto.

* 9: a journal the user cannot write, a lock that is a FIFO, ``--reset-journal`` on a folder,
  ``plan --json | head -c 100``: one clear line (or, for the pipe, a quiet exit), never a traceback.
* 12: keys holding control and bidi characters cannot rewrite the terminal.
* 14: ``status`` counts what is on disk after ``kill -9``, reads a journal whose WAL was lost;
  Ctrl-C leaves no temp file of a small (single-GET) object.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, plan_doc, tree_files
from faultproxy import FaultProxy, Rule

SUBJECT = "100307"
REL = f"HCP_1200/{SUBJECT}/"

#: what a terminal obeys: C0 (but the newline ending each line), DEL, C1, bidi controls
RAW_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def hcpsync(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV}
    env.pop("HCPSYNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **FAKE_ENV}
    env.pop("HCPSYNC_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "hcpsync", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def pull_args(url: str, bucket: str, dest: Path, *extra: str) -> list[str]:
    return ["pull", "--endpoint-url", url, "--bucket", bucket, "--subject", SUBJECT, "--dest", str(dest),
            "--no-progress", *extra]


def wait_until(cond: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def one_error_line(r: subprocess.CompletedProcess[str], needle: str, code: int = 2) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("hcpsync: error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def local(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k[len("HCP_1200/"):]: v for k, v in tree.items()}


# -- item 12: terminal injection -------------------------------------------------------------

FAKE = "\r\x1b[2K" + "transferred     9999 files\n  note: all good"
HOSTILE = {
    f"{REL}T1w/x{FAKE}": b"refused: control characters",
    f"{REL}T1w/\u202eclash": b"refused: file and folder",
}
CLASHING = {f"{REL}T1w/\u202eclash/y": b"lands: the folder wins the clash"}
C1_KEY = f"{REL}T1w/c1\x9b2J\u2067name.nii"  # C1 CSI and a bidi isolate: a legal file name, it lands


def assert_inert(text: str) -> None:
    """No raw control or bidi character, and no line the hostile keys forged."""
    assert RAW_UNSAFE.search(text) is None, text
    for line in text.splitlines():
        if "9999" in line or "all good" in line:
            assert line.lstrip().startswith(("FAILED", "refused")), line


def hostile_manifest() -> dict[str, bytes]:
    data = b"landed"
    doc = {"DownloadManifest": {"ID": "x", "Subject": SUBJECT, "Package": "3T_\u2066pkg\u2069", "Includes": [
        {"URI": C1_KEY[len("HCP_1200/"):], "Checksum": hashlib.md5(data).hexdigest(), "Size": len(data)},
        {"URI": f"{SUBJECT}/T1w/\u202emissing\x85.nii", "Checksum": "0" * 32, "Size": 3},
    ]}}
    return {C1_KEY: data, f"{REL}.xdlm/{SUBJECT}_3T_\u2066pkg\u2069.json": json.dumps(doc).encode()}


def test_hostile_keys_cannot_forge_output_lines(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {**HOSTILE, **CLASHING, **hostile_manifest(), f"{REL}T1w/fine.nii": b"fine"})
    dest = tmp_path / "dest\x1b[2K\u202e"
    sel = ["--endpoint-url", moto_url, "--bucket", bucket, "--subject", SUBJECT]
    plan = hcpsync("plan", *sel)
    assert plan.returncode == 0 and plan.stdout.count("  refused ") == 2, plan.stdout
    pull = hcpsync(*pull_args(moto_url, bucket, dest))
    assert pull.returncode == 1 and pull.stdout.count("  FAILED ") == 2, pull.stdout + pull.stderr
    assert (dest / C1_KEY[len("HCP_1200/"):]).read_bytes() == b"landed"
    verify = hcpsync("verify", "--dest", str(dest), "--offline", "--no-progress")
    assert verify.returncode == 1 and "MISSING" in verify.stdout, verify.stdout + verify.stderr
    status = hcpsync("status", "--dest", str(dest))
    packages = hcpsync("packages", *sel)
    assert status.returncode == 0 and packages.returncode == 0, status.stderr + packages.stderr
    (tmp_path / "file\x1b[2K\u202e").write_text("a file, not a folder")
    error = hcpsync(*pull_args(moto_url, bucket, tmp_path / "file\x1b[2K\u202e"))
    one_error_line(error, "is not a folder")
    for r in (plan, pull, verify, status, packages, error):
        assert_inert(r.stdout + r.stderr)
    # JSON stays JSON: ASCII only, and the keys come back intact
    plan_json = hcpsync("plan", *sel, "--json")
    pull_json = hcpsync(*pull_args(moto_url, bucket, dest, "--json"))
    for r in (plan_json, pull_json):
        assert r.stdout.isascii() and RAW_UNSAFE.search(r.stdout + r.stderr) is None
    assert {x["key"] for x in plan_doc(plan_json.stdout)["rejected"]} == set(HOSTILE)
    assert {x["key"] for x in json.loads(pull_json.stdout)["failed"]} == set(HOSTILE)


# -- item 9: one line, not "internal error" ---------------------------------------------------

SMALL = {f"{REL}T1w/f{i:02d}.nii": det_bytes(1000 + i, f"small{i}") for i in range(6)}


@pytest.fixture
def pulled(moto_url: str, bucket: str, tmp_path: Path) -> Path:
    """A destination with a finished pull of SMALL (and its journal)."""
    fast_put(bucket, SMALL)
    dest = tmp_path / "dest"
    r = hcpsync(*pull_args(moto_url, bucket, dest))
    assert r.returncode == 0, r.stderr
    return dest


@pytest.fixture
def unwritable_journal(pulled: Path) -> Iterator[Path]:
    """``pulled``, its journal made unwritable: read-only for a user, immutable for root."""
    journal = pulled / ".hcpsync/journal.sqlite"
    journal.chmod(0o444)
    immutable = os.access(journal, os.W_OK)  # root writes whatever the mode bits say
    if immutable and subprocess.run(["chattr", "+i", str(journal)], capture_output=True, check=False).returncode:
        pytest.skip("cannot make the journal unwritable here (chattr +i failed)")
    try:
        yield pulled
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(journal)], capture_output=True, check=False)


def test_unwritable_journal_is_one_clear_line(moto_url: str, bucket: str, unwritable_journal: Path) -> None:
    (unwritable_journal / f"{SUBJECT}/T1w/f00.nii").unlink()
    r = hcpsync(*pull_args(moto_url, bucket, unwritable_journal))
    one_error_line(r, "is not writable")
    assert tree_files(unwritable_journal) == {k: v for k, v in local(SMALL).items() if not k.endswith("f00.nii")}


def test_lock_that_is_a_fifo_is_one_clear_line(moto_url: str, bucket: str, pulled: Path) -> None:
    lock = pulled / ".hcpsync/lock"
    lock.unlink()
    os.mkfifo(lock)
    one_error_line(hcpsync(*pull_args(moto_url, bucket, pulled)), "is not a regular file")
    status = hcpsync("status", "--dest", str(pulled), "--json", timeout=30)  # opening a FIFO must not hang
    assert status.returncode == 0 and json.loads(status.stdout)["files"]["complete"] == len(SMALL), status.stderr
    assert tree_files(pulled) == local(SMALL)


@pytest.mark.parametrize("reset", [True, False])
def test_journal_path_that_is_a_folder_is_one_clear_line(
    moto_url: str, bucket: str, tmp_path: Path, reset: bool
) -> None:
    fast_put(bucket, SMALL)
    dest = tmp_path / "dest"
    (dest / ".hcpsync/journal.sqlite").mkdir(parents=True)
    r = hcpsync(*pull_args(moto_url, bucket, dest, *(["--reset-journal"] if reset else [])))
    one_error_line(r, "journal.sqlite")
    assert (dest / ".hcpsync/journal.sqlite").is_dir() and tree_files(dest) == {}


def test_plan_json_into_a_closed_pipe_exits_quietly(moto_url: str, bucket: str) -> None:
    # more JSON than a pipe holds (64 KiB), so the writer meets the closed pipe
    fast_put(bucket, {f"{REL}T1w/many/file{i:04d}.nii.gz": b"x" for i in range(1500)})
    proc = spawn("plan", "--endpoint-url", moto_url, "--bucket", bucket, "--subject", SUBJECT, "--json")
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0 and head.startswith("{")  # a reader that has enough is no error
    assert err == "", err


# -- item 14: status after kill -9, after WAL loss; Ctrl-C and small objects ------------------

STALLED = f"{REL}T1w/zz-stalled.nii"
MANY = {f"{REL}T1w/g{i:02d}.nii": det_bytes(2000 + i, f"many{i}") for i in range(20)}


def killed_mid_pull(proxy: FaultProxy, bucket: str, dest: Path) -> None:
    """A pull of MANY and STALLED, killed (-9) once MANY is on disk, STALLED still in flight:
    the completed-file records of the last moments are still in the journal's batch."""
    fast_put(bucket, {**MANY, STALLED: det_bytes(5000, "stalled")})
    proxy.add_rule(Rule("stall", key_contains="zz-stalled", stall_seconds=60))
    proc = spawn(*pull_args(proxy.url, bucket, dest, "--concurrency", "4"))
    try:
        wait_until(lambda: all((dest / k).is_file() for k in local(MANY)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    proxy.clear_rules()


def on_disk(dest: Path) -> tuple[int, int]:
    files = [p for p in dest.rglob("*") if p.is_file() and ".hcpsync" not in p.name and ".hcpsync" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def test_status_after_kill9_counts_the_files_on_disk(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    dest = tmp_path / "dest"
    killed_mid_pull(proxy, bucket, dest)
    r = hcpsync("status", "--dest", str(dest), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["files"]["complete"], doc["bytes"]["complete"]) == on_disk(dest) == (len(MANY), sum(map(len, MANY.values())))
    assert doc["files"]["total"] == len(MANY) + 1 and doc["files"]["pending"] == 1 and doc["active"] is False
    text = hcpsync("status", "--dest", str(dest))
    assert re.search(rf"^complete\s+{len(MANY)} files", text.stdout, re.M), text.stdout


def test_status_after_wal_loss_reads_the_journal(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    dest = tmp_path / "dest"
    killed_mid_pull(proxy, bucket, dest)
    journal = dest / ".hcpsync/journal.sqlite"
    Path(f"{journal}-wal").unlink()  # the write-ahead log is lost, its index (-shm) remains
    assert Path(f"{journal}-shm").exists()
    r = hcpsync("status", "--dest", str(dest))
    assert r.returncode == 0 and "damaged" not in r.stdout + r.stderr and "Traceback" not in r.stderr, r.stderr
    # as a plain re-run, which works: it completes the tree
    pull = hcpsync(*pull_args(proxy.url, bucket, dest))
    assert pull.returncode == 0, pull.stderr
    assert tree_files(dest) == local({**MANY, STALLED: det_bytes(5000, "stalled")})
    doc = json.loads(hcpsync("status", "--dest", str(dest), "--json").stdout)
    assert doc["files"]["complete"] == doc["files"]["total"] == len(MANY) + 1


def test_sigint_leaves_no_temp_file_of_small_objects(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    small = {f"{REL}T1w/s{i}.nii": det_bytes(1 << 20, f"s{i}") for i in range(3)}  # single GETs
    fast_put(bucket, small)
    proxy.add_rule(Rule("stall", after_bytes=256 << 10, stall_seconds=60))  # each body stops at 256 KiB
    dest = tmp_path / "dest"
    proc = spawn(*pull_args(proxy.url, bucket, dest))
    temps = [dest / f"{k}.hcpsync-part" for k in local(small)]
    wait_until(lambda: all(p.exists() and p.stat().st_size >= 256 << 10 for p in temps))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not list(dest.rglob("*.hcpsync-part")) and tree_files(dest) == {}
