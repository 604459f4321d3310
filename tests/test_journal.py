"""Journal: crash-safe, part-level resume (real subprocesses, SIGKILL/SIGINT, server-side byte counts)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy

from hcpsync import Selection, TransferConfig, pull_sync
from hcpsync.config import MiB
from hcpsync.journal import Journal, Lock, default_journal_path, status_of

SUBJECT = "100307"
CONCURRENCY = 4
PART = 2 * MiB


def big_tree(tag: str, n: int = 4, size: int = 40 * MiB) -> dict[str, bytes]:
    return {f"HCP_1200/{SUBJECT}/MNINonLinear/Results/rfMRI_REST{i}/run{i}.dtseries.nii": det_bytes(size + i, f"{tag}{i}")
            for i in range(n)}


def want_local(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k[len("HCP_1200/"):]: v for k, v in tree.items()}


def pull_cmd(url: str, bucket: str, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", url, "--bucket", bucket,
            "--subject", SUBJECT, "--dest", str(dest), "--concurrency", str(CONCURRENCY),
            "--part-size", str(PART), "--multipart-threshold", str(PART), "--no-progress", "--json", *extra]


def spawn(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **FAKE_ENV})


def wait_until(cond: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, dict[str, object], str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (json.loads(out) if out.strip() else {}), err


@pytest.mark.parametrize("point", ["early", "middle", "late", "rename"])
def test_sigkill_at_any_point_resumes_losing_only_inflight_parts(
    moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy, point: str
) -> None:
    tree = big_tree(point)
    fast_put(bucket, tree)
    total = sum(len(v) for v in tree.values())
    dest = tmp_path / "dest"
    proc = spawn(pull_cmd(proxy.url, bucket, dest, "--max-bandwidth", "60MB/s"))
    finals = [dest / k for k in want_local(tree)]
    if point == "rename":
        # the moment a file reaches its final path, before the journal's batched record of it
        wait_until(lambda: any(p.exists() for p in finals))
    else:
        share = {"early": 0.1, "middle": 0.5, "late": 0.9}[point]
        wait_until(lambda: proxy.bytes_sent >= share * total)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    sent_before_kill = proxy.bytes_sent
    # nothing incomplete is ever at a final path
    for p, data in zip(finals, tree.values(), strict=True):
        if p.exists():
            assert p.read_bytes() == data
    proxy.reset_counts()
    code, _report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest)))
    assert code == 0, err
    assert tree_files(dest) == want_local(tree)
    assert not list(dest.rglob("*.hcpsync-part"))
    missing = total - sent_before_kill
    assert proxy.bytes_sent <= missing + CONCURRENCY * PART, (proxy.bytes_sent, missing, point)


def test_sigint_exits_130_promptly_and_resume_completes(
    moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    tree = big_tree("int", n=2)
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    proc = spawn(pull_cmd(proxy.url, bucket, dest, "--max-bandwidth", "20MB/s"))
    wait_until(lambda: proxy.bytes_sent >= 10 * MiB)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=30)
    assert code == 130 and time.monotonic() - t0 < 5
    assert "run the same command again to resume" in err and "Traceback" not in err
    # the journal is consistent and says what is partial
    st = status_of(dest)
    assert st.active_pid is None and st.files_partial >= 1 and st.bytes_partial_done >= PART
    assert st.last_run is not None and st.last_run["outcome"] == "interrupted"
    code, _report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest)))
    assert code == 0, err
    assert {k: v for k, v in tree_files(dest).items()} == want_local(tree)


def test_etag_change_discards_only_that_files_partial_state(
    moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    from faultproxy import Rule

    tree = big_tree("etag", n=2, size=8 * MiB)  # 4 and 5 ranges (8 MiB, 8 MiB + 1 byte)
    fast_put(bucket, tree)
    keys = list(tree)
    dest = tmp_path / "d"
    # first run: of each file, the first two ranges land, the third fails for good
    for key in keys:
        proxy.add_rule(Rule("internal", key_contains=key.rsplit("/", 1)[1], after_requests=2))
    code, report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, "--concurrency", "1", "--retries", "0")))
    assert code == 1 and len(report["failed"]) == 2, err  # type: ignore[arg-type]
    jnl = sqlite3.connect(default_journal_path(dest))
    done = dict(jnl.execute("SELECT key, sum(end - start) FROM parts GROUP BY key").fetchall())
    jnl.close()
    assert done == {keys[0]: 2 * PART, keys[1]: 2 * PART}
    changed = det_bytes(len(tree[keys[0]]), "etag-v2")  # same size, new bytes and ETag
    fast_put(bucket, {keys[0]: changed})
    proxy.clear_rules()
    proxy.reset_counts()
    code, report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest)))
    assert code == 0, err
    assert any(keys[0] in n and "changed on the server since the last run" in n for n in report["notes"])  # type: ignore[attr-defined]
    got = tree_files(dest)
    assert got[keys[0][len("HCP_1200/"):]] == changed and got[keys[1][len("HCP_1200/"):]] == tree[keys[1]]
    gets = [e for e in proxy.requests_log if e[1] == "get"]
    assert sum(1 for e in gets if e[2] == keys[0]) == 4  # the changed file: every range again
    assert sum(1 for e in gets if e[2] == keys[1]) == 5 - 2  # the other keeps its two finished ranges


def test_finished_pull_rerun_is_one_listing_and_no_get(
    moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    fast_put(bucket, {**big_tree("fin", n=1, size=6 * MiB), f"HCP_1200/{SUBJECT}/T1w/a.txt": b"a",
                      f"HCP_1200/{SUBJECT}/T2w/b.txt": b"b"})
    dest = tmp_path / "d"
    sel = ("--path", "T1w", "--path", "MNINonLinear", "--no-verify")
    code, _, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, *sel)))
    assert code == 0, err
    proxy.reset_counts()
    code, report, err = finish(spawn(pull_cmd(proxy.url, bucket, dest, *sel)))
    assert code == 0 and report["skipped"] == {"files": 2, "bytes": 6 * MiB + 1}
    assert proxy.counts.get("get", 0) == 0 and proxy.counts["list"] == 2  # one per selected prefix


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_journal_is_a_clear_error_with_a_way_out(
    moto_url: str, bucket: str, tmp_path: Path, damage: str
) -> None:
    tree = {f"HCP_1200/{SUBJECT}/T1w/f{i}": det_bytes(1000, str(i)) for i in range(50)}
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    assert pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url).ok
    jpath = default_journal_path(dest)
    for extra in ("-wal", "-shm"):
        Path(f"{jpath}{extra}").unlink(missing_ok=True)
    raw = jpath.read_bytes()
    jpath.write_bytes(b"this is not a database" * 100 if damage == "garbage" else raw[: len(raw) // 2])
    (dest / f"{SUBJECT}/T1w/f3").unlink()
    r = subprocess.run(pull_cmd(moto_url, bucket, dest), capture_output=True, text=True, env={**os.environ, **FAKE_ENV})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--reset-journal" in r.stderr
    r = subprocess.run(pull_cmd(moto_url, bucket, dest, "--reset-journal"), capture_output=True, text=True,
                       env={**os.environ, **FAKE_ENV})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["transferred"]["files"] == 1
    assert tree_files(dest) == want_local(tree)


def test_second_pull_on_same_destination_refuses_and_stale_lock_does_not_block(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    fast_put(bucket, {f"HCP_1200/{SUBJECT}/a": b"a"})
    dest = tmp_path / "d"
    (dest / ".hcpsync").mkdir(parents=True)
    lock = Lock(dest / ".hcpsync/lock")
    lock.acquire("test")
    try:
        r = subprocess.run(pull_cmd(moto_url, bucket, dest), capture_output=True, text=True, env={**os.environ, **FAKE_ENV})
        assert r.returncode == 2 and f"(pid {os.getpid()})" in r.stderr and "Traceback" not in r.stderr
        assert status_of(dest) if default_journal_path(dest).exists() else True
    finally:
        lock.release()
    # a stale lock file from a killed process (its PID inside, no flock held) does not block
    (dest / ".hcpsync/lock").write_text("999999")
    r = subprocess.run(pull_cmd(moto_url, bucket, dest), capture_output=True, text=True, env={**os.environ, **FAKE_ENV})
    assert r.returncode == 0, r.stderr


def test_selection_change_adds_new_and_leaves_dropped(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"HCP_1200/{SUBJECT}/T1w/a": b"a", f"HCP_1200/{SUBJECT}/T2w/b": b"b"})
    dest = tmp_path / "d"
    r1 = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket, paths=["T1w"]), dest, endpoint_url=moto_url)
    r2 = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket, paths=["T1w", "T2w"]), dest, endpoint_url=moto_url)
    assert (r1.transferred_files, r2.transferred_files, r2.skipped_files) == (1, 1, 1)
    r3 = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket, paths=["T2w"]), dest, endpoint_url=moto_url)
    assert r3.ok and any("no longer selected" in n for n in r3.notes)
    assert (dest / f"{SUBJECT}/T1w/a").read_bytes() == b"a"  # nothing silently deleted
    st = status_of(dest)
    assert (st.files_total, st.files_complete) == (1, 1)


def test_status_json_via_cli(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"HCP_1200/{SUBJECT}/a": b"abc"})
    dest = tmp_path / "d"
    assert pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url).ok
    r = subprocess.run([sys.executable, "-m", "hcpsync", "status", "--dest", str(dest), "--json"],
                       capture_output=True, text=True)
    doc = json.loads(r.stdout)
    assert doc["files"]["complete"] == 1 and doc["bytes"]["complete"] == 3 and doc["active"] is False
    assert doc["last_run"]["outcome"] == "complete"


def test_power_loss_trusts_only_synced_records(moto_url: str, bucket: str, tmp_path: Path) -> None:
    """A different boot ID means the page cache was lost: unsynced ranges and files are redone."""
    tree = big_tree("pl", n=1, size=8 * MiB)
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    cfg = TransferConfig(part_size=PART, multipart_threshold=PART)
    assert pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url, config=cfg,
                     sync_interval=0).ok
    db = sqlite3.connect(default_journal_path(dest))
    db.execute("UPDATE meta SET value='another-boot' WHERE name='boot_id'")
    db.commit()
    db.close()
    jnl = Journal.open(default_journal_path(dest))
    assert any("machine restarted" in n for n in jnl.notes)
    jnl.close()
    again = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url, config=cfg)
    assert again.transferred_files == 1 and again.skipped_files == 0
    # after a sync point, the same records survive a "reboot"
    db = sqlite3.connect(default_journal_path(dest))
    db.execute("UPDATE objects SET synced=1")
    db.execute("UPDATE meta SET value='a-third-boot' WHERE name='boot_id'")
    db.commit()
    db.close()
    third = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url, config=cfg)
    assert third.skipped_files == 1 and third.transferred_files == 0


def test_journal_caches_verified_checksums_for_verify(moto_url: str, bucket: str, tmp_path: Path) -> None:
    from hcpsync.demo.synth import synth_subject

    files = synth_subject(SUBJECT, scale=0.1, large_size=256 * 1024)
    fast_put(bucket, {f.key: f.data() for f in files})
    dest = tmp_path / "d"
    report = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url)
    assert report.ok and report.verified_files == len(files)

    def verify(*extra: str) -> dict[str, object]:
        r = subprocess.run([sys.executable, "-m", "hcpsync", "verify", "--dest", str(dest), "--offline", "--json",
                            *extra], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    # every checksum the pull verified is reused: nothing is hashed again
    manifest_listed = verify()["counts"]["ok"]  # type: ignore[index]
    assert verify()["cached"] == manifest_listed > 0
    # a file touched since (new mtime) is hashed again; --full hashes everything
    some = next(p for p in (dest / SUBJECT / "T1w").rglob("*") if p.is_file())
    os.utime(some, ns=(time.time_ns(), time.time_ns()))
    assert verify()["cached"] == manifest_listed - 1
    assert verify("--full")["cached"] == 0
