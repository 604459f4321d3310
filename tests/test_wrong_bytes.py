"""Issue 9, items 1-4, 11 and 13: every path that once landed wrong bytes with exit 0.

Each test reproduces the sequence that did it, through the CLI in real subprocesses (kill -9
included), and asserts the bytes at the final paths, not only the exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from test_journal import finish, spawn, wait_until

from hcpsync.config import MiB
from hcpsync.journal import default_journal_path
from hcpsync.paths import temp_path_for

SUBJECT = "100307"
BIG_KEY = f"HCP_1200/{SUBJECT}/MNINonLinear/Results/rfMRI_REST1_LR/rfMRI_REST1_LR.nii.gz"
BIG_REL = BIG_KEY[len("HCP_1200/"):]
PARTS = ("--concurrency", "2", "--part-size", "1MiB", "--multipart-threshold", "1MiB")
SLOW = (*PARTS, "--max-bandwidth", "3MB/s")


def put_multipart(s3: Any, bucket: str, key: str, data: bytes, part: int = 5 * MiB) -> str:
    """Upload ``data`` in parts, as HCP's large files were: its ETag is ``<md5-of-md5s>-N``, no MD5."""
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for n, start in enumerate(range(0, len(data), part), 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data[start:start + part])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    etag = str(done["ETag"]).strip('"')
    assert etag.endswith(f"-{len(parts)}")
    return etag


def cmd(url: str, bucket: str, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", url, "--bucket", bucket, "--subject", SUBJECT,
            "--dest", str(dest), "--no-progress", "--json", *extra]


def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **FAKE_ENV}, timeout=120, **kw)


def recorded_parts(journal: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM parts").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def kill_after_parts(args: list[str], journal: Path, parts: int = 3) -> None:
    """Start a pull and SIGKILL it once the journal records ``parts`` finished ranges."""
    proc = spawn(args)
    wait_until(lambda: recorded_parts(journal) >= parts or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the pull ended before it could be killed"


def stat_of(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:  # between the unlink and the exclusive create of a new temp file
        return None


def big_object(s3: Any, bucket: str, tag: str) -> bytes:
    data = det_bytes(12 * MiB, tag)
    put_multipart(s3, bucket, BIG_KEY, data)
    return data


def completes_with(args: list[str], dest: Path, data: bytes) -> dict[str, Any]:
    code, report, err = finish(spawn(args))
    assert code == 0, err
    assert (dest / BIG_REL).read_bytes() == data  # the object's bytes, not zeros
    assert not list(dest.rglob("*.hcpsync-part"))
    return report


# --- 1. resume trusts only ranges the temp file holds ---------------------------------------------------


def test_zero_filled_temp_after_kill_is_not_trusted(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = big_object(s3, bucket, "zero")
    dest = tmp_path / "d"
    kill_after_parts(cmd(moto_url, bucket, dest, *SLOW), default_journal_path(dest))
    temp = temp_path_for(dest / BIG_REL)
    with open(temp, "r+b") as f:  # what a power loss can leave: the right size, zeros inside
        f.write(bytes(temp.stat().st_size))
    report = completes_with(cmd(moto_url, bucket, dest, *PARTS), dest, data)
    assert any("were not in their temp files" in n for n in report["notes"])


def test_no_journal_run_in_between_is_not_trusted(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = big_object(s3, bucket, "nojournal")
    dest = tmp_path / "d"
    kill_after_parts(cmd(moto_url, bucket, dest, *SLOW), default_journal_path(dest))
    temp = temp_path_for(dest / BIG_REL)
    before = temp.stat().st_mtime_ns
    proc = spawn(cmd(moto_url, bucket, dest, *SLOW, "--no-journal"))  # re-creates the temp file, then dies too
    wait_until(lambda: (st := stat_of(temp)) is not None and st.st_mtime_ns != before)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    completes_with(cmd(moto_url, bucket, dest, *PARTS), dest, data)


def test_journal_shared_by_two_destinations_is_refused(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = big_object(s3, bucket, "shared")
    journal = tmp_path / "one.sqlite"
    a, b = tmp_path / "a", tmp_path / "b"
    proc = spawn(cmd(moto_url, bucket, a, *SLOW, "--journal", str(journal)))
    wait_until(lambda: recorded_parts(journal) >= 1)
    at_once = run(cmd(moto_url, bucket, b, "--journal", str(journal)))  # while the first runs: its lock
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert at_once.returncode == 2 and "another hcpsync run" in at_once.stderr and "journal" in at_once.stderr
    later = run(cmd(moto_url, bucket, b, "--journal", str(journal)))  # afterwards: it describes another destination
    assert later.returncode == 2 and "Traceback" not in later.stderr
    assert f"records pulls into {os.path.realpath(a)}" in later.stderr
    assert not (b / BIG_REL).exists()
    completes_with(cmd(moto_url, bucket, a, *PARTS, "--journal", str(journal)), a, data)


def test_shortened_temp_then_interrupted_resume(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = big_object(s3, bucket, "short")
    dest = tmp_path / "d"
    journal = default_journal_path(dest)
    kill_after_parts(cmd(moto_url, bucket, dest, *SLOW), journal, parts=5)
    temp = temp_path_for(dest / BIG_REL)
    os.truncate(temp, 2 * MiB)
    # the resumed run re-preallocates the temp file to full size, and is itself killed then
    proc = spawn(cmd(moto_url, bucket, dest, *SLOW))
    wait_until(lambda: (st := stat_of(temp)) is not None and st.st_size == len(data))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    completes_with(cmd(moto_url, bucket, dest, *PARTS), dest, data)


# --- 2. one release per destination -----------------------------------------------------------------------


def test_second_release_into_same_destination_is_refused(moto_url: str, bucket: str, tmp_path: Path) -> None:
    key = f"{SUBJECT}/T1w/T1w_acpc_dc_restore.nii.gz"
    first, second = det_bytes(300_000, "1200"), det_bytes(300_000, "retest")
    fast_put(bucket, {f"HCP_1200/{key}": first, f"HCP_Retest/{key}": second})
    dest = tmp_path / "d"
    assert run(cmd(moto_url, bucket, dest)).returncode == 0
    r = run(cmd(moto_url, bucket, dest, "--release", "HCP_Retest"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"holds s3://{bucket}/HCP_1200/" in r.stderr and "another --dest" in r.stderr
    assert (dest / key).read_bytes() == first
    other = tmp_path / "d-HCP_Retest"
    assert run(cmd(moto_url, bucket, other, "--release", "HCP_Retest")).returncode == 0
    assert (other / key).read_bytes() == second


def test_destination_pulled_before_source_json_is_checked_through_its_journal(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    key = f"{SUBJECT}/a.txt"
    fast_put(bucket, {f"HCP_1200/{key}": b"first", f"HCP_Retest/{key}": b"second"})
    dest = tmp_path / "d"
    assert run(cmd(moto_url, bucket, dest)).returncode == 0
    (dest / ".hcpsync/source.json").unlink()  # as an older hcpsync left it: only the journal knows
    r = run(cmd(moto_url, bucket, dest, "--release", "HCP_Retest"))
    assert r.returncode == 2 and "HCP_1200" in r.stderr
    assert (dest / key).read_bytes() == b"first"


# --- 3. two keys, one local file ------------------------------------------------------------------------


def test_keys_differing_by_case_or_normalisation_are_refused(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {
        f"HCP_1200/{SUBJECT}/T1w/brain.nii.gz": b"A" * 1000,
        f"HCP_1200/{SUBJECT}/T1W/Brain.nii.gz": b"B" * 1000,
        f"HCP_1200/{SUBJECT}/notes/caf\u00e9.txt": b"nfc",
        f"HCP_1200/{SUBJECT}/notes/cafe\u0301.txt": b"nfd",
        f"HCP_1200/{SUBJECT}/fine.txt": b"fine",
    })
    dest = tmp_path / "d"
    r = run(cmd(moto_url, bucket, dest))
    assert r.returncode == 1, r.stderr
    failed = {f["key"]: f["reason"] for f in json.loads(r.stdout)["failed"]}
    assert len(failed) == 4 and all("collides with" in why for why in failed.values())
    assert tree_files(dest) == {f"{SUBJECT}/fine.txt": b"fine"}


def test_folder_symlink_inside_dest_never_merges_two_objects(
    moto_url: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    a, b = det_bytes(12 * MiB, "A"), det_bytes(12 * MiB, "B")
    put_multipart(s3, bucket, f"HCP_1200/{SUBJECT}/T1w/x.bin", a)  # no MD5 in the ETags to catch a mix
    put_multipart(s3, bucket, f"HCP_1200/{SUBJECT}/T1w_alias/x.bin", b)
    dest = tmp_path / "d"
    (dest / SUBJECT / "T1w").mkdir(parents=True)
    (dest / SUBJECT / "T1w_alias").symlink_to("T1w", target_is_directory=True)
    r = run(cmd(moto_url, bucket, dest, *PARTS, "--concurrency", "8"))
    assert r.returncode == 1, r.stderr
    failed = {f["key"]: f["reason"] for f in json.loads(r.stdout)["failed"]}
    assert list(failed) == [f"HCP_1200/{SUBJECT}/T1w_alias/x.bin"] and "symlink" in failed[next(iter(failed))]
    assert (dest / SUBJECT / "T1w/x.bin").read_bytes() == a


# --- 4. what verify finds wrong, pull fetches again ---------------------------------------------------------


def test_pull_refetches_what_verify_reported_mismatched(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = det_bytes(12 * MiB, "verified")
    put_multipart(s3, bucket, BIG_KEY, data)  # no MD5 in its ETag: only the manifest knows
    manifest = {"DownloadManifest": {"Includes": [{"URI": BIG_REL, "Checksum": hashlib.md5(data).hexdigest()}]}}
    fast_put(bucket, {f"HCP_1200/{SUBJECT}/.xdlm/{SUBJECT}_3T_rfMRI_REST1_preproc.json": json.dumps(manifest).encode()})
    dest = tmp_path / "d"
    assert run(cmd(moto_url, bucket, dest, "--path", "MNINonLinear")).returncode == 0
    with open(dest / BIG_REL, "r+b") as f:  # silent damage, same size
        f.seek(5 * MiB)
        f.write(b"\0" * 4096)
    verify = [sys.executable, "-m", "hcpsync", "verify", "--endpoint-url", moto_url, "--bucket", bucket,
              "--subject", SUBJECT, "--dest", str(dest), "--json"]
    r = run(verify)
    assert r.returncode == 1 and [c["path"] for c in json.loads(r.stdout)["mismatched"]] == [BIG_REL]
    r = run(cmd(moto_url, bucket, dest, "--path", "MNINonLinear"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["transferred"]["files"] == 1
    assert (dest / BIG_REL).read_bytes() == data
    assert run(verify).returncode == 0


# --- 11. the open-file limit ----------------------------------------------------------------------------


def test_concurrency_beyond_the_open_file_limit_is_fitted(moto_url: str, bucket: str, tmp_path: Path) -> None:
    tree = {f"HCP_1200/{SUBJECT}/T1w/f{i:03}.txt": det_bytes(2000 + i, str(i)) for i in range(300)}
    fast_put(bucket, tree)
    dest = tmp_path / "d"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    r = run(cmd(moto_url, bucket, dest, "--concurrency", "4096"), preexec_fn=low_limit)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert any("--concurrency 4096 lowered to" in n and "ulimit -n" in n for n in report["notes"])
    assert tree_files(dest) == {k[len("HCP_1200/"):]: v for k, v in tree.items()}


# --- 13. long names -------------------------------------------------------------------------------------


def test_names_of_243_to_255_bytes_download(moto_url: str, bucket: str, tmp_path: Path) -> None:
    names = {n: "n" * (n - len(".nii.gz")) + ".nii.gz" for n in (243, 250, 255)}
    names[254] = "\u00e9" * 120 + "x" * 14  # multi-byte: 254 bytes, 134 characters
    tree = {f"HCP_1200/{SUBJECT}/T1w/{name}": det_bytes(3 * MiB + n, name) for n, name in names.items()}
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    r = run(cmd(moto_url, bucket, dest, "--part-size", "1MiB", "--multipart-threshold", "1MiB"))
    assert r.returncode == 0, r.stderr
    assert tree_files(dest) == {k[len("HCP_1200/"):]: v for k, v in tree.items()}
    assert all(len(os.fsencode(p.name)) <= 255 for p in dest.rglob("*"))
