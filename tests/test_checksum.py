"""Issue 15: ``pull --checksum`` (files already present checked by checksum, not size alone),
multipart ETags checked in pulls, and the one rule for an ETag-only check (``etag_verdict``).

Real moto server behind the counting fault proxy, real files, real ``python -m hcpsync``
subprocesses for the CLI; the fake store for the rule's edges.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_ENV, cancel_mid_hash, det_bytes, fast_put, hashing_threads_end, tree_files
from fakestore import FakeStore
from faultproxy import FaultProxy, Rule
from test_wrong_bytes import put_multipart

from hcpsync import Selection, TransferConfig
from hcpsync.api import pull
from hcpsync.config import MiB
from hcpsync.errors import CredentialsError, ThrottledError
from hcpsync.models import PlannedObject
from hcpsync.verify import MemoryVerifiedCache, PullVerifier
from hcpsync.verify.etagcheck import EtagVerdict, etag_verdict
from hcpsync.verify.localcheck import ChecksumPass
from hcpsync.verify.manifest import ManifestIndex, parse_manifest

SUBJECT = "100307"
BASE = f"HCP_1200/{SUBJECT}"
STALE, SHORT, GONE = "T1w/stale.nii.gz", "T1w/short.nii.gz", "T1w/gone.nii.gz"
KEEP = ("T1w/keep1.nii.gz", "T1w/keep2.nii.gz", "MNINonLinear/keep3.nii.gz", "release-notes/notes.txt")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def seed_tree(bucket: str) -> dict[str, bytes]:
    """Six files (release-relative path -> bytes), all but the release notes in a manifest."""
    files = {f"{SUBJECT}/{p}": det_bytes(20_000 + 1000 * i, p) for i, p in enumerate((STALE, SHORT, GONE, *KEEP))}
    listed = [{"URI": p, "Checksum": md5(d)} for p, d in files.items() if "release-notes" not in p]
    manifest = json.dumps({"DownloadManifest": {"Includes": listed}}).encode()
    fast_put(bucket, {f"HCP_1200/{p}": d for p, d in files.items()}
             | {f"{BASE}/.xdlm/{SUBJECT}_3T_Structural_preproc.json": manifest})
    return files


def cli_pull(url: str, bucket: str, dest: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    r = subprocess.run([sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", url, "--bucket", bucket,
                        "--subject", SUBJECT, "--dest", str(dest), "--no-progress", *extra],
                       capture_output=True, text=True, env={**os.environ, **FAKE_ENV}, timeout=120)
    doc = json.loads(r.stdout) if "--json" in extra and r.stdout.strip() else {}
    return r.returncode, doc, r.stdout + r.stderr


def data_gets(proxy: FaultProxy) -> Counter[str]:
    """GETs per key at the server, manifests left out."""
    return Counter(k for _, kind, k, _ in proxy.requests_log if kind == "get" and "/.xdlm/" not in k)


def damage(dest: Path, files: dict[str, bytes]) -> bytes:
    """Stale (same size, other bytes, newer mtime), truncated, deleted; the stale bytes."""
    stale = det_bytes(len(files[f"{SUBJECT}/{STALE}"]), "stale")
    path = dest / SUBJECT / STALE
    st = path.stat()
    path.write_bytes(stale)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    os.truncate(dest / SUBJECT / SHORT, 1000)
    (dest / SUBJECT / GONE).unlink()
    return stale


def test_checksum_fetches_exactly_what_differs_and_a_plain_pull_keeps_the_stale_file(
    moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    files = seed_tree(bucket)
    dest, plain = tmp_path / "d", tmp_path / "plain"
    assert cli_pull(moto_url, bucket, dest)[0] == 0
    stale = damage(dest, files)
    shutil.copytree(dest, plain)  # the same modified tree (journal included), for a pull without --checksum

    code, doc, out = cli_pull(proxy.url, bucket, dest, "--checksum", "--json")
    assert code == 0, out
    want = {f"HCP_1200/{SUBJECT}/{p}": 1 for p in (STALE, SHORT, GONE)}
    assert data_gets(proxy) == want  # not one GET of the good files
    assert {p: d for p, d in tree_files(dest).items() if "/.xdlm/" not in p} == files
    # the stale file alone was hashed (the others' MD5s are cached in the journal); it differed
    assert doc["checksum"] == {"hashed": 1, "bytes": len(stale), "differed": 1, "unverifiable": 0}
    assert doc["transferred"]["files"] == 3 and doc["verified"] == 8  # 7 data files + the manifest object
    checked = subprocess.run([sys.executable, "-m", "hcpsync", "verify", "--dest", str(dest), "--subject", SUBJECT,
                              "--bucket", bucket, "--endpoint-url", moto_url, "--json", "--no-progress"],
                             capture_output=True, text=True, env={**os.environ, **FAKE_ENV}, timeout=120)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], checked.stdout + checked.stderr  # verify: all ok
    assert report["counts"]["mismatched"] == report["counts"]["missing"] == 0 and report["counts"]["ok"] == len(files)

    # right after: every file is known by its cached MD5; nothing hashed, nothing fetched
    before = sum(proxy.counts.values())
    code, doc, out = cli_pull(proxy.url, bucket, dest, "--checksum", "--json")
    assert code == 0 and doc["checksum"]["hashed"] == 0 and doc["checksum"]["differed"] == 0, out
    assert data_gets(proxy) == want and sum(proxy.counts.values()) > before

    # without --checksum: size decides; the truncated and the missing are fetched, the stale one is kept
    code, doc, out = cli_pull(moto_url, bucket, plain, "--json")
    assert code == 0 and doc["transferred"]["files"] == 2 and doc["checksum"] is None, out
    assert (plain / SUBJECT / STALE).read_bytes() == stale
    assert (plain / SUBJECT / SHORT).read_bytes() == files[f"{SUBJECT}/{SHORT}"]
    assert (plain / SUBJECT / GONE).read_bytes() == files[f"{SUBJECT}/{GONE}"]


def test_checksum_on_a_tree_another_tool_made(moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    files = seed_tree(bucket)
    dest = tmp_path / "d"
    for rel, data in files.items():  # as aws s3 sync left it: no journal, no manifests
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(det_bytes(len(data), "stale") if rel.endswith(STALE) else data)
    code, doc, out = cli_pull(proxy.url, bucket, dest, "--checksum", "--json")
    assert code == 0, out
    assert data_gets(proxy) == {f"{BASE}/{STALE}": 1}
    assert {p: d for p, d in tree_files(dest).items() if "/.xdlm/" not in p} == files
    hashed = sum(len(d) for d in files.values())  # every file, once: no journal had their MD5s
    assert doc["checksum"] == {"hashed": 7, "bytes": hashed, "differed": 1, "unverifiable": 0}
    code, doc, out = cli_pull(moto_url, bucket, dest, "--checksum")  # the text report
    assert code == 0 and "hashed; 0 differed (fetched again), 0 unverifiable (kept)" in out, out


async def test_multipart_etags_are_checked_in_pulls(s3: Any, moto_url: str, bucket: str, tmp_path: Path,
                                                    proxy: FaultProxy) -> None:
    five, eight = det_bytes(13 * MiB, "five"), det_bytes(17 * MiB, "eight")
    k5, k8 = f"{BASE}/MNINonLinear/five.nii.gz", f"{BASE}/MNINonLinear/eight.nii.gz"
    put_multipart(s3, bucket, k5, five, 5 * MiB)
    put_multipart(s3, bucket, k8, eight, 8 * MiB)  # no manifest lists either
    sel, dest = Selection(subjects=[SUBJECT], bucket=bucket), tmp_path / "d"
    proxy.add_rule(Rule("corrupt", key_contains="five", times=1))  # one byte flipped in transit
    report = await pull(sel, dest, endpoint_url=proxy.url, config=TransferConfig(workers=1))
    assert report.ok and report.verified_files == 2 and report.unverified_files == 0, report
    assert proxy.faults["corrupt"] == 1 and data_gets(proxy)[k5] == 2  # caught, fetched again once
    assert any("five.nii.gz failed verification (multipart ETag mismatch" in n for n in report.notes)
    assert (dest / SUBJECT / "MNINonLinear/five.nii.gz").read_bytes() == five
    assert (dest / SUBJECT / "MNINonLinear/eight.nii.gz").read_bytes() == eight

    # --checksum: a same-size change in one is found through its multipart ETag, and fetched again
    path = dest / SUBJECT / "MNINonLinear/eight.nii.gz"
    os.truncate(path, 9 * MiB)  # a same-size change: zeros from there on
    os.truncate(path, len(eight))
    gets = data_gets(proxy)
    report = await pull(sel, dest, endpoint_url=proxy.url, checksum=True)
    assert report.ok and report.checksum is not None
    assert (report.checksum.hashed, report.checksum.differed) == (2, 1)
    assert data_gets(proxy) - gets == Counter({k8: 3})  # its three ranges; nothing of the other
    assert path.read_bytes() == eight


async def test_sse_kms_object_is_kept_unverified_never_called_a_mismatch(
    s3: Any, moto_url: str, bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    key, data = f"{BASE}/T1w/secret.nii.gz", det_bytes(50_000, "kms")
    s3.put_object(Bucket=bucket, Key=key, Body=data, ServerSideEncryption="aws:kms")
    sel, dest = Selection(subjects=[SUBJECT], bucket=bucket), tmp_path / "d"
    first = await pull(sel, dest, endpoint_url=moto_url)
    assert first.ok and first.unverified_files == 1 and any("SSE-KMS" in n for n in first.notes)
    path = dest / SUBJECT / "T1w/secret.nii.gz"
    stale = det_bytes(len(data), "stale")
    path.write_bytes(stale)  # its MD5 now differs from the ETag, as an SSE-KMS ETag always may
    report = await pull(sel, dest, endpoint_url=proxy.url, checksum=True)
    assert report.ok and proxy.counts["head"] >= 1 and data_gets(proxy)[key] == 0  # asked, not refetched
    assert report.checksum is not None and (report.checksum.differed, report.checksum.unverifiable) == (0, 1)
    assert report.unverified_files == 1 and path.read_bytes() == stale
    assert any("secret.nii.gz: the S3 ETag of an SSE-KMS/SSE-C object is not an MD5" in n for n in report.notes)
    assert not any("mismatch" in n for n in report.notes)


def test_checksum_bad_combinations_are_one_line(tmp_path: Path) -> None:
    for extra in (["--no-verify"],):
        r = subprocess.run([sys.executable, "-m", "hcpsync", "pull", "--subject", SUBJECT, "--dest", str(tmp_path),
                            "--checksum", *extra], capture_output=True, text=True, env={**os.environ, **FAKE_ENV})
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"--checksum does not go with {extra[0]}" in r.stderr


# --- the rule: etag_verdict on the fake store ------------------------------------------------------


async def _verdict(store: FakeStore, key: str, path: Path) -> EtagVerdict:
    obj = store.objects[key]
    return await etag_verdict(store, store.bucket, key, path, len(obj.data), obj.etag)


@pytest.mark.parametrize("part_size", [8 * MiB, MiB + 12345])  # a common part size; one none of them is
async def test_etag_verdict_multipart(tmp_path: Path, part_size: int) -> None:
    store, data = FakeStore(), det_bytes(9 * MiB + 7, "mp")
    store.put("k", data, part_size=part_size)
    path = tmp_path / "f"
    path.write_bytes(data)
    found = await _verdict(store, "k", path)
    assert found.status == "ok" and found.got == store.objects["k"].etag
    assert store.counts["head"] == (0 if part_size == 8 * MiB else 2)  # HEAD (SSE?), then HEAD ?partNumber=1
    path.write_bytes(data[:-1] + b"!")
    found = await _verdict(store, "k", path)
    assert found.status == "mismatched" and f"{part_size / (1 << 20):g} MiB" in found.detail
    store.objects["k"].part_size = None  # the server does not say
    found = await _verdict(store, "k", path)
    assert found.status == "unverifiable" and "does not say the object's part size" in found.detail
    store.objects["k"].encrypted = True
    assert (await _verdict(store, "k", path)).status == "unverifiable"


async def test_etag_verdict_plain_and_unchecked(tmp_path: Path) -> None:
    store = FakeStore()
    store.put("plain", b"served")
    store.put("kms", b"served", etag=md5(b"other"), encrypted=True)
    store.put("odd", b"served", etag="1700000000-6")
    path = tmp_path / "f"
    path.write_bytes(b"served")
    assert await _verdict(store, "plain", path) == EtagVerdict("ok", md5(b"served"), "S3 ETag")
    assert store.counts["head"] == 0  # a match needs no HEAD
    found = await _verdict(store, "kms", path)
    assert found.status == "unverifiable" and "SSE-KMS" in found.detail and store.counts["head"] == 1
    assert (await _verdict(store, "odd", path)).status == "unchecked"
    path.write_bytes(b"stale!")
    found = await _verdict(store, "plain", path)
    assert found == EtagVerdict("mismatched", md5(b"stale!"), f"S3 ETag: expected {md5(b'served')}, got {md5(b'stale!')}")
    assert store.counts["head"] == 2 and "get" not in store.counts


# --- the pass itself ---------------------------------------------------------------------------------


def _index(entries: dict[str, str]) -> ManifestIndex:
    doc = {"DownloadManifest": {"Includes": [{"URI": u, "Checksum": c} for u, c in entries.items()]}}
    return ManifestIndex([parse_manifest(f"{SUBJECT}_3T_X.json", json.dumps(doc).encode())])


async def test_checksum_pass_uses_the_cache_and_remembers_bad_files_for_the_run(tmp_path: Path) -> None:
    good, bad = f"{SUBJECT}/good", f"{SUBJECT}/bad"
    (tmp_path / SUBJECT).mkdir()
    (tmp_path / good).write_bytes(b"good")
    (tmp_path / bad).write_bytes(b"BAD!")
    cache = MemoryVerifiedCache()
    verifier = PullVerifier(_index({good: md5(b"good"), bad: md5(b"bad!")}), cache)
    objs = [PlannedObject(f"HCP_1200/{r}", 4, "x", r) for r in (good, bad)]
    with ChecksumPass(verifier, tmp_path) as checks:
        verifier.local = checks.verdict
        await checks.batch(objs)
        st = {r: (tmp_path / r).stat() for r in (good, bad)}
        assert [verifier.skip_verdict(o, 4, st[o.relpath].st_mtime_ns) for o in objs] == ["verified", "bad"]
        assert checks.counts.hashed == 2 and checks.counts.differed == 1
        assert cache.get(bad, 4, st[bad].st_mtime_ns) == md5(b"BAD!")  # each MD5 computed is cached
        await checks.batch([])  # the next batch: verdicts of the last one dropped, but the bad file's
        assert checks.verdict(good, 4, st[good].st_mtime_ns) is None
        assert checks.verdict(bad, 4, st[bad].st_mtime_ns) == "bad"
        await checks.batch(objs)  # the cache answers: nothing hashed again
        assert checks.counts.hashed == 2 and checks.counts.differed == 2


async def test_cancelling_the_checksum_pass_stops_its_hashing_threads(tmp_path: Path) -> None:
    size = 4 * 1024**3  # sparse: costs no disk, hashing it would take seconds
    rel = f"{SUBJECT}/huge"
    (tmp_path / SUBJECT).mkdir()
    (tmp_path / rel).touch()
    os.truncate(tmp_path / rel, size)
    verifier = PullVerifier(_index({rel: md5(b"x")}), MemoryVerifiedCache())
    with ChecksumPass(verifier, tmp_path) as checks:
        t0 = await cancel_mid_hash(checks.batch([PlannedObject(f"HCP_1200/{rel}", size, "x", rel)]))
    await hashing_threads_end(t0)


async def test_etag_verdict_when_s3_cannot_be_asked(tmp_path: Path) -> None:
    """A HEAD that fails (throttled past the retries, denied) leaves the file unverifiable, not
    mismatched; bad credentials or an unreachable endpoint stop the run instead."""
    store = FakeStore()
    store.put("plain", b"served")
    path = tmp_path / "f"
    path.write_bytes(b"stale!")
    store.fail("plain", ThrottledError("s3://b/plain: SlowDown"))
    found = await _verdict(store, "plain", path)
    assert found.status == "unverifiable" and "could not ask S3" in found.detail and found.got == md5(b"stale!")
    store.fail("plain", CredentialsError("no AWS credentials found"))
    with pytest.raises(CredentialsError):
        await _verdict(store, "plain", path)


async def test_an_sse_object_s_file_counts_as_hashed(tmp_path: Path) -> None:
    store = FakeStore()
    store.put("kms", b"served", etag=md5(b"other"), encrypted=True)
    path = tmp_path / "f"
    path.write_bytes(b"served")
    found = await _verdict(store, "kms", path)
    assert found.status == "unverifiable" and found.got == md5(b"served")  # it was hashed: the ETag cannot tell
