"""Wrong answers from the server (issue 9, items 5-8): never silent wrong bytes, never a misleading reason.

Each test reproduces one misbehaviour through the CLI against moto's server, with the fault-injecting
proxy in front of it: listings whose continuation token loops or is missing, ETags that are not MD5s
(SSE-KMS, SSE-C), chunked / compressed / weak-ETag bodies, redirected listings, a dripping server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule

from hcpsync import Selection, TransferConfig, pull
from hcpsync.cli import main
from hcpsync.config import KiB

REL = "HCP_1200/"
SUBJ = "HCP_1200/100307/"
SMALL, BIG = f"{SUBJ}T1w/small.nii.gz", f"{SUBJ}T1w/big.nii.gz"
#: BIG is fetched as 4 ranges of 64 KiB, SMALL in one GET
RANGED = ["--part-size", "64KiB", "--multipart-threshold", "64KiB"]


def two_files(bucket: str) -> dict[str, bytes]:
    tree = {SMALL: det_bytes(20 * KiB + 7, "small"), BIG: det_bytes(256 * KiB, "big")}
    fast_put(bucket, tree)
    return tree


def want_tree(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k[len(REL):]: v for k, v in objects.items()}


def run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    """``hcpsync ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def gets(proxy: FaultProxy, key: str) -> int:
    return sum(1 for e in proxy.requests_log if e[1] == "get" and e[2] == key)


def pull_args(bucket: str, dest: Path, url: str, *extra: str) -> list[str]:
    return ["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(dest), "--endpoint-url", url,
            "--no-progress", "--json", *extra]


# --------------------------------------------------------------------------- item 5: listings


def test_looping_continuation_token_is_an_error_not_an_endless_plan(proxy: FaultProxy, bucket: str) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/f{i}": b"x" for i in range(3)})
    proxy.add_rule(Rule("list_loop"))
    env = {**os.environ, **FAKE_ENV}
    env.pop("HCPSYNC_DEBUG", None)
    cmd = [sys.executable, "-m", "hcpsync", "plan", "--bucket", bucket, "--subject", "100307",
           "--endpoint-url", proxy.url]
    try:  # in a subprocess: before the fix, plan never ends
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"plan did not end: {proxy.counts.get('list', 0)} list requests in 30 s")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    one_line(r.stderr, "loops", "continuation token", "faultproxy-loop", f"s3://{bucket}/{SUBJ}")
    assert r.stdout == ""
    assert proxy.counts["list"] <= 3  # the second answer with the same token ends it


def test_truncated_listing_without_token_is_an_error_not_a_partial_plan(
    proxy: FaultProxy, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tree = {f"{SUBJ}T1w/f{i:04d}": b"x" for i in range(1200)}  # two pages of 1,000 keys
    fast_put(bucket, tree)
    proxy.add_rule(Rule("list_no_token"))
    code, out, err = run(capsys, ["plan", "--bucket", bucket, "--subject", "100307", "--endpoint-url", proxy.url])
    assert code == 1 and out == "", (code, out)
    one_line(err, "truncated (IsTruncated) but has no continuation token", f"s3://{bucket}/")
    # a pull stops the same way, before downloading anything
    dest = tmp_path / "dest"
    code, out, err = run(capsys, pull_args(bucket, dest, proxy.url))
    assert code == 1 and out == ""
    one_line(err, "no continuation token")
    assert tree_files(dest) == {}
    assert proxy.counts.get("get", 0) == 0


# --------------------------------------------------------------------------- item 6: ETags that are not MD5s


@pytest.mark.parametrize(
    "header",
    [
        {"x-amz-server-side-encryption": "aws:kms"},
        {"x-amz-server-side-encryption": "aws:kms:dsse"},
        {"x-amz-server-side-encryption-customer-algorithm": "AES256"},
    ],
    ids=["sse-kms", "dsse-kms", "sse-c"],
)
def test_encrypted_objects_etag_is_not_taken_as_md5(
    proxy: FaultProxy, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, header: dict[str, str]
) -> None:
    tree = two_files(bucket)
    proxy.add_rule(Rule("fake_etag", add_headers=header))  # listing, GET and HEAD: 32 hex, not the MD5
    code, out, err = run(capsys, pull_args(bucket, tmp_path, proxy.url, *RANGED))
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["ok"] and doc["failed"] == []
    assert doc["unverified"] == 2 and doc["verified"] == 0
    assert any("2 file(s) encrypted with SSE-KMS or SSE-C" in n and "size-checked only" in n for n in doc["notes"])
    assert tree_files(tmp_path) == want_tree(tree)
    assert gets(proxy, SMALL) == 1 and gets(proxy, BIG) == 4  # each part once: no refetch round


def test_etag_mismatch_on_unencrypted_object_is_fetched_again_once(
    proxy: FaultProxy, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    two_files(bucket)
    proxy.add_rule(Rule("fake_etag"))  # no encryption header: the ETag looks like an MD5 and is wrong
    code, out, err = run(capsys, pull_args(bucket, tmp_path, proxy.url, *RANGED))
    assert code == 1, (out, err)
    doc = json.loads(out)
    assert sorted(f["key"] for f in doc["failed"]) == [BIG, SMALL]
    for f in doc["failed"]:
        assert "MD5 mismatch with the S3 ETag" in f["reason"] and "came from the S3 ETag" in f["reason"], f
    assert gets(proxy, SMALL) == 2 and gets(proxy, BIG) == 2 * 4  # one more round, not two
    assert tree_files(tmp_path) == {}  # nothing at a final path, no temp file left


# --------------------------------------------------------------------------- item 7: misleading "changed"


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("chunked", "the server sent no Content-Length (chunked transfer); hcpsync needs the object's length"),
        ("gzip", "the body is compressed in transit (Content-Encoding: gzip"),
        ("weak_etag", 'weak ETag W/"'),
    ],
)
def test_unusable_body_is_refused_with_the_true_reason(
    proxy: FaultProxy, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, fault: str, needle: str
) -> None:
    tree = {SMALL: b"compressible " * 2000, BIG: det_bytes(256 * KiB, "big")}
    fast_put(bucket, tree)
    proxy.add_rule(Rule(fault, key_contains="small"))
    code, out, err = run(capsys, pull_args(bucket, tmp_path, proxy.url, *RANGED))
    assert code == 1, (out, err)
    doc = json.loads(out)
    assert [f["key"] for f in doc["failed"]] == [SMALL]
    reason = doc["failed"][0]["reason"]
    assert needle in reason and SMALL in reason, reason
    assert "changed" not in reason and "-1 bytes" not in reason
    assert not any("changed on the server" in n for n in doc["notes"]), doc["notes"]
    assert gets(proxy, SMALL) == 1  # not retried, not fetched again: it would get the same answer
    assert tree_files(tmp_path) == want_tree({BIG: tree[BIG]})


def test_body_stored_with_content_encoding_is_not_refused(
    proxy: FaultProxy, s3: object, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = det_bytes(9000, "stored-gzip")
    s3.put_object(Bucket=bucket, Key=SMALL, Body=data, ContentEncoding="gzip")  # type: ignore[attr-defined]
    code, out, err = run(capsys, pull_args(bucket, tmp_path, proxy.url))
    assert code == 0, (out, err)
    assert tree_files(tmp_path) == want_tree({SMALL: data})


@pytest.mark.parametrize("status", [301, 307])
def test_redirected_listing_is_reported_as_a_redirect(
    proxy: FaultProxy, moto_url: str, bucket: str, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/f": b"x"})
    # followed, the redirect would reach a host that has no such bucket
    where = f"{moto_url}/elsewhere-{bucket}/"
    proxy.add_rule(Rule("redirect", redirect_status=status, location=where + "?list-type=2&secret=1"))
    code, out, err = run(capsys, ["plan", "--bucket", bucket, "--subject", "100307", "--endpoint-url", proxy.url])
    assert code == 2 and out == "", (code, out, err)
    line = one_line(err, f"answered {status} redirect", f"to {where}", "--endpoint-url", "--region")
    assert "does not exist" not in line and "secret" not in line
    assert FAKE_ENV["AWS_SECRET_ACCESS_KEY"] not in err and FAKE_ENV["AWS_ACCESS_KEY_ID"] not in err


# --------------------------------------------------------------------------- item 8: a dripping server


def test_dripping_server_trips_the_low_speed_limit_and_resumes(
    proxy: FaultProxy, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tree = {SMALL: det_bytes(48 * KiB, "drip")}
    fast_put(bucket, tree)
    proxy.add_rule(Rule("drip", drip_rate=200, times=1))  # 200 B/s: a byte now and then, never a 30 s silence
    t0 = time.monotonic()
    code, out, err = run(capsys, pull_args(bucket, tmp_path, proxy.url, "--low-speed-limit", "4KiB/s",
                                           "--low-speed-time", "1"))
    elapsed = time.monotonic() - t0
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["ok"] and doc["retries"] == 1
    assert tree_files(tmp_path) == want_tree(tree)
    log = [e for e in proxy.requests_log if e[1] == "get"]
    assert len(log) == 2 and log[0][3] is None
    resumed_from = int((log[1][3] or "bytes=0-").split("=")[1].split("-")[0])
    assert 0 < resumed_from < 48 * KiB  # the retry resumed from the last byte written
    assert elapsed < 10, elapsed


async def test_bandwidth_cap_never_trips_the_low_speed_limit(proxy: FaultProxy, bucket: str, tmp_path: Path) -> None:
    tree = {SMALL: det_bytes(40 * KiB, "capped")}
    fast_put(bucket, tree)
    # 16 KiB/s cap, far under the 64 KiB/s floor: only the network's (fast) share is measured
    cfg = TransferConfig(chunk_size=1024, max_bandwidth=16 * KiB, low_speed_limit=64 * KiB, low_speed_time=0.5,
                         retries=0)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=proxy.url, config=cfg)
    assert report.ok and report.retries == 0, report.failed
    assert report.elapsed > 1.5  # the cap really held the body back
    assert tree_files(tmp_path) == want_tree(tree)


def test_low_speed_options_are_validated(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, ["pull", "--subject", "1", "--dest", str(tmp_path), "--low-speed-time", "0"])
    assert code == 2
    one_line(err, "low-speed")
    assert TransferConfig(low_speed_limit=0).low_speed_limit == 0  # 0: off
