"""Issue 15: ``verify`` checks the files no manifest lists against their S3 ETag: plain MD5,
multipart (usual part sizes, or the one S3 gives), and never calls an SSE-KMS object mismatched.

moto's server behind the counting fault proxy, real files, ``python -m hcpsync verify`` in a
subprocess; the rule's corners on the in-memory FakeStore.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import FAKE_ENV, det_bytes, fast_put
from fakestore import FakeStore
from faultproxy import FaultProxy
from test_wrong_bytes import put_multipart

from hcpsync import Selection
from hcpsync.config import MiB
from hcpsync.store.s3 import StorageOptions
from hcpsync.verify import MemoryVerifiedCache, verify_tree
from hcpsync.verify.etagcheck import SSE_REASON, EtagVerdict, etag_verdict

REL = "HCP_1200"
SUBJECT = "100307"
LISTED = f"{SUBJECT}/T1w/listed.txt"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def verify(url: str, bucket: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "hcpsync", "verify", "--endpoint-url", url, "--bucket", bucket,
            "--subject", SUBJECT, "--dest", str(dest), "--no-progress", *extra]
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **FAKE_ENV}, timeout=120)


def seed_subject(bucket: str, dest: Path) -> None:
    """The subject's manifest lists one other file (on S3 and on disk): the others are unlisted by it."""
    data = b"listed in the manifest"
    manifest = {"DownloadManifest": {"Includes": [{"URI": LISTED, "Checksum": md5(data)}]}}
    fast_put(bucket, {f"{REL}/{LISTED}": data,
                      f"{REL}/{SUBJECT}/.xdlm/{SUBJECT}_3T_Structural_preproc.json": json.dumps(manifest).encode()})
    write(dest, LISTED, data)


def write(dest: Path, rel: str, data: bytes) -> None:
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    (dest / rel).write_bytes(data)


def flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(bytes([old[0] ^ 0xFF]))


def by_path(doc: dict[str, Any], status: str) -> dict[str, dict[str, Any]]:
    return {c["path"]: c for c in doc[status]}


def test_multipart_etags_of_5_and_8_mib_parts(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    seed_subject(bucket, dest)
    five, eight = f"{SUBJECT}/MNINonLinear/five.nii.gz", f"{SUBJECT}/MNINonLinear/eight.dtseries.nii"
    data5, data8 = det_bytes(11 * MiB, "five"), det_bytes(17 * MiB, "eight")
    etag5 = put_multipart(s3, bucket, f"{REL}/{five}", data5, 5 * MiB)
    etag8 = put_multipart(s3, bucket, f"{REL}/{eight}", data8, 8 * MiB)
    write(dest, five, data5)
    write(dest, eight, data8)

    with FaultProxy(moto_url) as proxy:
        r = verify(proxy.url, bucket, dest, "--json")
        heads = proxy.counts.get("head", 0)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["counts"]["ok"] == 3 and doc["counts"]["unlisted"] == 0 and doc["counts"]["unverifiable"] == 0
    assert heads == 0  # every ETag matched: nothing to ask S3
    assert {p: (c["detail"], c["actual"]) for p, c in by_path(doc, "ok_by_s3_etag").items()} == {
        five: ("S3 multipart ETag, 3 parts of 5 MiB", etag5), eight: ("S3 multipart ETag, 3 parts of 8 MiB", etag8)}
    assert doc["hashed"]["files"] == 3 and doc["hashed"]["bytes"] == 28 * MiB + len(b"listed in the manifest")

    # the library: the same verdicts, in detail; the multipart results are not MD5s, so not cached
    cache = MemoryVerifiedCache()
    rep = await_verify(dest, bucket, moto_url, cache)
    ok = {c.relpath: c for c in rep.by_status("ok")}
    assert (ok[five].detail, ok[five].expected, ok[five].actual) == ("S3 multipart ETag, 3 parts of 5 MiB", etag5, etag5)
    assert (ok[eight].detail, ok[eight].actual) == ("S3 multipart ETag, 3 parts of 8 MiB", etag8)
    assert set(cache.entries) == {LISTED}

    flip_byte(dest / eight, 9 * MiB)
    with FaultProxy(moto_url) as proxy:
        r = verify(proxy.url, bucket, dest, "--json")
        heads = proxy.counts.get("head", 0)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    bad = by_path(doc, "mismatched")[eight]
    assert bad["expected"] == etag8 and bad["actual"] != etag8 and bad["actual"].endswith("-3")
    assert bad["detail"].startswith(f"S3 multipart ETag, 3 parts of 8 MiB: expected {etag8}, got ")
    assert list(by_path(doc, "mismatched")) == [eight] and doc["counts"]["ok"] == 2
    assert heads == 2  # the object's HEAD (not SSE), and its part 1's (the part size S3 says: 8 MiB, tried already)
    text = verify(moto_url, bucket, dest)
    assert text.returncode == 1 and f"  MISMATCHED {eight}: S3 multipart ETag, 3 parts of 8 MiB: expected {etag8}" in text.stdout


def await_verify(dest: Path, bucket: str, url: str, cache: MemoryVerifiedCache | None = None) -> Any:
    from hcpsync.api import run_sync

    return run_sync(verify_tree(dest, Selection(subjects=[SUBJECT], bucket=bucket), cache=cache,
                                storage=StorageOptions(endpoint_url=url)))


def test_sse_kms_object_is_unverifiable_never_mismatched(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    seed_subject(bucket, dest)
    kms, plain = f"{SUBJECT}/T1w/kms.nii.gz", f"{SUBJECT}/T1w/plain.nii.gz"
    served = det_bytes(300_000, "served")
    s3.put_object(Bucket=bucket, Key=f"{REL}/{kms}", Body=served, ServerSideEncryption="aws:kms")
    s3.put_object(Bucket=bucket, Key=f"{REL}/{plain}", Body=served)
    local = det_bytes(300_000, "other bytes, same size")
    write(dest, kms, local)
    write(dest, plain, local)

    with FaultProxy(moto_url) as proxy:
        r = verify(proxy.url, bucket, dest, "--json")
        heads = proxy.counts.get("head", 0)
    doc = json.loads(r.stdout)
    # moto's ETag of the SSE-KMS object is still the MD5 of its bytes: only the HEAD tells them apart
    assert r.returncode == 1 and list(by_path(doc, "mismatched")) == [plain]
    assert by_path(doc, "mismatched")[plain]["expected"] == md5(served)
    assert by_path(doc, "mismatched")[plain]["actual"] == md5(local)
    assert by_path(doc, "unverifiable") == {kms: {"path": kms, "size": 300_000, "detail": SSE_REASON}}
    assert heads == 2  # one HEAD each, before calling either mismatched

    (dest / plain).unlink()  # now nothing else is wrong: the unverifiable file does not fail the run
    r = verify(moto_url, bucket, dest)
    assert r.returncode == 0, r.stdout
    assert f"  UNVERIFIABLE {kms}: {SSE_REASON}" in r.stdout


def test_unusual_part_size_is_asked_of_s3(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    seed_subject(bucket, dest)
    odd = f"{SUBJECT}/MNINonLinear/odd.nii.gz"
    data = det_bytes(13 * MiB, "odd")
    etag = put_multipart(s3, bucket, f"{REL}/{odd}", data, 13 * MiB // 2)  # 6.5 MiB: no usual part size gives it
    write(dest, odd, data)
    with FaultProxy(moto_url) as proxy:
        r = verify(proxy.url, bucket, dest, "--json")
        heads = proxy.counts.get("head", 0)
    assert r.returncode == 0, r.stderr
    got = by_path(json.loads(r.stdout), "ok_by_s3_etag")[odd]
    assert got == {"path": odd, "expected": etag, "actual": etag, "size": 13 * MiB,
                   "detail": "S3 multipart ETag, 2 parts of 6.5 MiB"}
    assert heads == 2  # HEAD (not SSE), then HEAD ?partNumber=1


# --- the rule, on the fake store -------------------------------------------------------------------


async def test_etag_verdict_corners(tmp_path: Path) -> None:
    store = FakeStore()
    data = det_bytes(13 * MiB, "corners")
    path = tmp_path / "f"
    path.write_bytes(data)
    odd = 13 * MiB // 2

    # the server does not say its part size: unverifiable, not mismatched
    etag = store.put("quiet", data, part_size=odd)
    store.objects["quiet"].part_size = None
    v = await etag_verdict(store, store.bucket, "quiet", path, len(data), etag)
    assert v.status == "unverifiable" and "does not say the object's part size" in v.detail
    assert [r.op for r in store.log] == ["head", "head"]  # HEAD, then HEAD ?partNumber=1

    # it does: recomputed with it
    etag = store.put("says", data, part_size=odd)
    assert (await etag_verdict(store, store.bucket, "says", path, len(data), etag)).status == "ok"

    # an SSE-KMS multipart object: the HEAD decides, no part size asked
    store.log.clear()
    etag = store.put("kms", det_bytes(13 * MiB, "served"), part_size=odd, encrypted=True)
    v = await etag_verdict(store, store.bucket, "kms", path, len(data), etag)
    assert (v.status, v.detail) == ("unverifiable", SSE_REASON) and [r.op for r in store.log] == ["head"]

    # a real mismatch at the part size S3 gives
    etag = store.put("other", det_bytes(13 * MiB, "other"), part_size=odd)
    v = await etag_verdict(store, store.bucket, "other", path, len(data), etag)
    assert v.status == "mismatched" and v.got != etag
    assert v.detail.startswith(f"S3 multipart ETag, 2 parts of 6.5 MiB: expected {etag}")

    # a plain MD5 ETag: ok with no request; an nginx-style one says nothing checkable
    store.log.clear()
    etag = store.put("plain", data)
    assert await etag_verdict(store, store.bucket, "plain", path, len(data), etag) == EtagVerdict("ok", md5(data), "S3 ETag")
    v = await etag_verdict(store, store.bucket, "plain", path, len(data), "5e0b8f00-1a2b")
    assert v.status == "unchecked" and v.got is None and not store.log
