"""Verification against .xdlm manifests: during pull, ``hcpsync verify``, ``--package``, ``packages``.

Everything runs against moto's S3 server with real files; the data is synth.py's release.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_ENV, cancel_mid_hash, det_bytes, fast_put, hashing_threads_end, plan_doc, tree_files
from faultproxy import FaultProxy

from hcpsync import Selection, TransferConfig
from hcpsync.api import plan, plan_sync, pull, pull_sync, run_sync
from hcpsync.cli import main
from hcpsync.demo.synth import (
    PACKAGES,
    PKG_MOTOR_PREPROC,
    PKG_MOTOR_UNPROC,
    PKG_STRUCT_UNPROC,
    SynthFile,
    package_relpaths,
    synth_release,
)
from hcpsync.engine.events import FileDone, FileSkipped
from hcpsync.errors import SelectionError, UsageError, VerificationError
from hcpsync.models import Absent, PlannedObject
from hcpsync.store.s3 import StorageOptions
from hcpsync.verify import MemoryVerifiedCache, PullVerifier, list_packages, verify_tree
from hcpsync.verify.hashing import HashStopped, etag_md5, md5_file

KiB = 1024
REL = "HCP_1200"
CLOSED = "http://127.0.0.1:9"  # nothing listens there: any network use fails


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def small_release(subjects: Iterable[str]) -> list[SynthFile]:
    # 136 objects a subject, ~5.6 MB; the time series (~260 KiB) are above the tests' threshold
    return synth_release(subjects, REL, scale=0.1, large_size=256 * KiB)


RANGED = TransferConfig(concurrency=16, part_size=64 * KiB, multipart_threshold=128 * KiB)


@pytest.fixture(scope="module")
def release(s3: Any) -> tuple[str, list[SynthFile]]:
    """A read-only bucket holding two synthetic subjects, manifests included."""
    name = f"hcp-verify-{os.getpid()}"
    s3.create_bucket(Bucket=name)
    files = small_release(["100307", "100408"])
    fast_put(name, {f.key: f.data() for f in files})
    return name, files


def write_tree(root: Path, files: Iterable[SynthFile]) -> None:
    """Lay files out as another download tool would: DEST/<key minus release>."""
    for f in files:
        p = root / f.relpath(REL)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f.data())


def cli(args: list[str], url: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV}
    env.pop("AWS_ENDPOINT_URL", None)
    if url:
        env["AWS_ENDPOINT_URL"] = url
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=env, timeout=120)


def one_line_error(code: int, err: str, needle: str, want: int = 2) -> None:
    assert code == want, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


# --- pull --------------------------------------------------------------------------------------


def test_pull_verifies_every_file_then_verify_finds_local_damage(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, files = release
    mine = [f for f in files if f.key.startswith(f"{REL}/100307/")]
    assert any(f.size > RANGED.multipart_threshold for f in mine)  # both hashing paths are used
    dest = tmp_path / "d"
    report = pull_sync(Selection(subjects=["100307"], bucket=bucket), dest, endpoint_url=moto_url, config=RANGED)
    assert report.ok, report.failed
    # 125 files against their manifest MD5, 5 release notes + 6 manifests against the S3 ETag (an MD5 in moto)
    assert report.verified_files == len(mine) == 136 and report.unverified_files == 0
    assert tree_files(dest) == {f.relpath(REL): f.data() for f in mine}

    # damage the tree after the pull: one byte changed, one file lost, one stray file, hcpsync's leftovers
    t1 = "100307/T1w/T1w_acpc_dc.nii.gz"
    data = bytearray((dest / t1).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dest / t1).write_bytes(bytes(data))
    lost = "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/EVs/lf.txt"
    (dest / lost).unlink()
    (dest / "100307/T1w/notes.txt").write_text("mine")
    (dest / "100307/T1w/x.nii.gz.hcpsync-part").write_bytes(b"partial")
    (dest / ".hcpsync").mkdir(exist_ok=True)
    (dest / ".hcpsync/other").write_text("state")

    expected_t1 = next(f.md5() for f in mine if f.relpath(REL) == t1)
    rep = run_sync(verify_tree(dest, Selection(subjects=["100307"], bucket=bucket),
                               storage=StorageOptions(endpoint_url=moto_url)))
    assert not rep.ok
    [bad] = rep.by_status("mismatched")
    assert (bad.relpath, bad.expected, bad.actual) == (t1, expected_t1, md5(bytes(data)))
    assert [c.relpath for c in rep.by_status("missing")] == [lost]
    # online, the files no manifest lists but S3 holds (the release notes) are checked by their S3 ETag
    assert [c.relpath for c in rep.by_status("unlisted")] == ["100307/T1w/notes.txt"]
    notes = {f.relpath(REL) for f in mine if "/release-notes/" in f.key}
    assert {c.relpath: c.detail for c in rep.by_status("ok") if c.relpath in notes} == dict.fromkeys(notes, "S3 ETag")
    assert rep.counts["ok"] == 125 - 2 + 5 and rep.counts["unverifiable"] == 0
    assert rep.hashed_files == 124 + 5 and rep.source == f"s3://{bucket}/{REL}/"

    # offline, with the endpoint down: the manifests the pull downloaded are used; subjects found in DEST
    monkeypatch.setenv("AWS_ENDPOINT_URL", CLOSED)
    assert main(["verify", "--dest", str(dest), "--offline", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["subjects"] == ["100307"]
    assert doc["mismatched"] == [{"path": t1, "expected": expected_t1, "actual": md5(bytes(data)), "size": len(data)}]
    assert [m["path"] for m in doc["missing"]] == [lost]
    assert doc["counts"]["ok"] == 123 and doc["problems"] == []
    # the CLI reuses the checksums the pull's journal cached: only the altered file is hashed again
    assert doc["hashed"]["files"] == 1 and doc["cached"] == 123


async def test_checksum_mismatch_is_fetched_again_then_failed_and_never_final(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    a, b, notes = det_bytes(3000, "a"), det_bytes(5000, "b"), b"release notes"
    big_listed, big_served = det_bytes(600 * KiB, "big"), det_bytes(600 * KiB, "big, rewritten")
    base = f"{REL}/100307"
    bogus = "0123456789abcdef0123456789abcdef"
    manifest = {"DownloadManifest": {"Includes": [
        {"URI": "100307/T1w/a.nii.gz", "Checksum": md5(a)},
        {"URI": "100307/T1w/b.nii.gz", "Checksum": bogus},  # the manifest is wrong
        {"URI": "100307/MNINonLinear/big.dtseries.nii", "Checksum": md5(big_listed)},  # the object is
    ]}}
    fast_put(bucket, {
        f"{base}/T1w/a.nii.gz": a, f"{base}/T1w/b.nii.gz": b, f"{base}/MNINonLinear/big.dtseries.nii": big_served,
        f"{base}/release-notes/notes.txt": notes,
        f"{base}/.xdlm/100307_3T_Test_preproc.json": json.dumps(manifest).encode(),
    })
    cfg = TransferConfig(concurrency=8, part_size=128 * KiB, multipart_threshold=256 * KiB)
    dest = tmp_path / "d"
    with FaultProxy(moto_url) as proxy:
        report = await pull(Selection(subjects=["100307"], bucket=bucket), dest, endpoint_url=proxy.url, config=cfg)
        gets = [k for _, kind, k, _ in proxy.requests_log if kind == "get"]
    assert not report.ok
    reasons = {f.key: f.reason for f in report.failed}
    assert set(reasons) == {f"{base}/T1w/b.nii.gz", f"{base}/MNINonLinear/big.dtseries.nii"}
    assert f"expected {bogus}, got {md5(b)}" in reasons[f"{base}/T1w/b.nii.gz"]
    assert "100307_3T_Test_preproc.json" in reasons[f"{base}/T1w/b.nii.gz"]
    assert f"expected {md5(big_listed)}, got {md5(big_served)}" in reasons[f"{base}/MNINonLinear/big.dtseries.nii"]
    # fetched three times in all (two more rounds), every range of the big one each time
    assert gets.count(f"{base}/T1w/b.nii.gz") == 3
    assert gets.count(f"{base}/MNINonLinear/big.dtseries.nii") == 3 * 5
    assert sum("failed verification" in n for n in report.notes) == 4
    # a file that failed its check is never at its final path, and no temp file is left
    assert tree_files(dest) == {
        "100307/T1w/a.nii.gz": a, "100307/release-notes/notes.txt": notes,
        "100307/.xdlm/100307_3T_Test_preproc.json": json.dumps(manifest).encode(),
    }
    assert not list(dest.rglob("*.hcpsync-part"))
    assert report.verified_files == 3 and report.unverified_files == 0 and report.transferred_files == 3

    # the CLI: exit 1, key and both MD5s in the report; --retries 1 means one more round only
    r = cli(["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(tmp_path / "cli"), "--json",
             "--retries", "1", "--part-size", "128KiB", "--multipart-threshold", "256KiB", "--no-journal"], moto_url)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    failed = {f["key"]: f["reason"] for f in doc["failed"]}
    assert f"expected {bogus}, got {md5(b)}" in failed[f"{base}/T1w/b.nii.gz"]
    assert f"got {md5(big_served)}" in failed[f"{base}/MNINonLinear/big.dtseries.nii"]
    assert doc["verified"] == 3 and sum("failed verification" in n for n in doc["notes"]) == 2
    assert not (tmp_path / "cli/100307/T1w/b.nii.gz").exists()

    # --no-verify: sizes only, everything lands as served
    plain = await pull(Selection(subjects=["100307"], bucket=bucket), tmp_path / "plain", endpoint_url=moto_url,
                       config=cfg, verify=False)
    assert plain.ok and plain.verified_files == 0 and plain.unverified_files == 0
    assert (tmp_path / "plain/100307/T1w/b.nii.gz").read_bytes() == b


def test_pull_verifier_trusts_only_matching_cached_checksums(tmp_path: Path) -> None:
    from hcpsync.verify.manifest import ManifestIndex, parse_manifest

    data = b"0123456789"
    doc = {"DownloadManifest": {"Includes": [{"URI": "100307/f", "Checksum": md5(data)}]}}
    index = ManifestIndex([parse_manifest("100307_3T_X.json", json.dumps(doc).encode())])
    cache = MemoryVerifiedCache()
    path = tmp_path / "f"
    path.write_bytes(data)
    st = path.stat()
    obj = PlannedObject(f"{REL}/100307/f", len(data), "etag-1", "100307/f")
    v = PullVerifier(index, cache)
    assert v.skip_verdict(obj, st.st_size, st.st_mtime_ns) == "unverified"  # nothing says its MD5: not counted
    cache.put("100307/f", st.st_size, st.st_mtime_ns, md5(data))
    assert v.skip_verdict(obj, st.st_size, st.st_mtime_ns) == "verified"
    assert v.skip_verdict(obj, st.st_size, st.st_mtime_ns + 1) == "unverified"  # touched since: unknown
    v(FileSkipped(obj, path, st.st_mtime_ns, True))
    v(FileSkipped(obj, path, st.st_mtime_ns, False))
    assert v.verified_files == 1
    cache.put("100307/f", st.st_size, st.st_mtime_ns, md5(b"something else"))
    assert v.skip_verdict(obj, st.st_size, st.st_mtime_ns) == "bad"  # known bad: fetched again
    assert v.wants_md5(obj) and not v.wants_md5(PlannedObject("k", 1, "abc-2", "100307/other"))


async def test_pull_verifier_check_file_raises_with_both_md5s(tmp_path: Path) -> None:
    temp = tmp_path / "t"
    temp.write_bytes(b"served")
    obj = PlannedObject("k", 6, md5(b"listed"), "100307/k")
    cache = MemoryVerifiedCache()
    v = PullVerifier(None, cache)
    with pytest.raises(VerificationError, match=f"S3 ETag: expected {md5(b'listed')}, got {md5(b'served')}"):
        await v.check(obj, temp, None, True)  # hashed from the file (a ranged download)
    k2, k3 = PlannedObject("k2", 6, md5(b"served"), "100307/k2"), PlannedObject("k3", 6, "mtime-size", "100307/k3")
    assert await v.check(k2, temp, md5(b"served"), True) == md5(b"served")
    assert await v.check(PlannedObject("k4", 6, md5(b"x"), "100307/k4"), temp, None, False) is None  # SSE: no MD5
    assert await v.check(k3, temp, None, True) is None
    v(FileDone(k2, temp, 77, md5(b"served")))
    v(FileDone(k3, temp, 77, None))
    assert (v.verified_files, v.unverified_files) == (1, 1)
    assert cache.get("100307/k2", 6, 77) == md5(b"served") and cache.get("100307/k3", 6, 77) is None


async def test_pull_verifier_loads_manifests_once_when_first_needed(tmp_path: Path) -> None:
    from hcpsync.errors import EndpointError
    from hcpsync.verify import ManifestSet
    from hcpsync.verify.manifest import parse_manifest

    doc = {"DownloadManifest": {"Includes": [{"URI": "100307/f", "Checksum": md5(b"listed")}]}}
    calls = []

    async def load() -> ManifestSet:
        calls.append(1)
        await asyncio.sleep(0.01)
        return ManifestSet({"100307": [parse_manifest("100307_3T_X.json", json.dumps(doc).encode())]})

    temp = tmp_path / "t"
    temp.write_bytes(b"served")
    v = PullVerifier(None, loader=load)
    obj = PlannedObject("k", 6, "not-an-md5", "100307/f")
    assert v.wants_md5(obj) and not calls  # not loaded yet: hash every stream, in case
    results = await asyncio.gather(v.check(obj, temp, md5(b"served"), True), v.check(obj, temp, md5(b"listed"), True),
                                   return_exceptions=True)
    assert len(calls) == 1  # one load for all
    assert isinstance(results[0], VerificationError) and results[1] == md5(b"listed")
    assert not v.wants_md5(PlannedObject("k2", 1, "not-an-md5", "100307/other"))

    async def down() -> ManifestSet:
        raise EndpointError("cannot connect")

    v = PullVerifier(None, loader=down)
    await v.check(PlannedObject("k", 6, md5(b"served"), "100307/f"), temp, None, True)  # the ETag still checks
    assert v.notes and "could not fetch the .xdlm manifests" in v.notes[0]


# --- packages ----------------------------------------------------------------------------------


def test_package_selects_exactly_its_files(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, files = release
    pkgs = package_relpaths(files)
    motor = pkgs[PKG_MOTOR_PREPROC]
    assert {u.split("/")[1] for u in motor} == {"T1w", "MNINonLinear"}  # spans top-level folders
    sel = Selection(subjects=["100307", "100408"], bucket=bucket, packages=[PKG_MOTOR_PREPROC])
    p = plan_sync(sel, endpoint_url=moto_url)
    assert {o.relpath for o in p.objects} == motor and not p.rejected and not p.notes
    two = plan_sync(Selection(subjects=["100307", "100408"], bucket=bucket,
                              packages=[PKG_MOTOR_PREPROC, PKG_STRUCT_UNPROC]), endpoint_url=moto_url)
    assert {o.relpath for o in two.objects} == motor | pkgs[PKG_STRUCT_UNPROC]

    # the CLI: plan --package with --path, and pull --package (exactly the package, verified)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    assert main(["plan", "--bucket", bucket, "--subject", "100307", "--package", PKG_MOTOR_PREPROC,
                 "--path", "T1w", "--json"]) == 0
    doc = plan_doc(capsys.readouterr().out)
    assert {o["path"] for o in doc["objects"]} == {u for u in motor if u.startswith("100307/T1w/")}
    unproc = {u for u in pkgs[PKG_MOTOR_UNPROC] if u.startswith("100408/")}
    assert main(["pull", "--bucket", bucket, "--subject", "100408", "--package", PKG_MOTOR_UNPROC,
                 "--dest", str(tmp_path / "d"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # exactly the package, and the manifests it was checked against (kept for verify --offline)
    assert {p for p in tree_files(tmp_path / "d") if "/.xdlm/" not in p} == unproc
    assert doc["verified"] == len(unproc) and doc["planned"]["files"] == len(unproc)


async def test_package_file_missing_from_s3_is_in_the_plan_coverage(moto_url: str, bucket: str) -> None:
    files = small_release(["100307"])
    gone = "100307/MNINonLinear/Results/tfMRI_MOTOR_RL/Movement_Regressors.txt"
    fast_put(bucket, {f.key: f.data() for f in files if f.relpath(REL) != gone})
    p = await plan(Selection(subjects=["100307"], bucket=bucket, packages=[PKG_MOTOR_PREPROC]), endpoint_url=moto_url)
    assert {o.relpath for o in p.objects} == package_relpaths(files)[PKG_MOTOR_PREPROC] - {gone}
    assert p.absent == (Absent(gone, "100307", PKG_MOTOR_PREPROC),) and not p.notes  # its own category, not a note
    assert p.to_json(with_objects=False)["coverage"] == {"100307": {PKG_MOTOR_PREPROC: 1}}


def test_cli_unknown_package_is_one_line(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    avail = f"available: {', '.join(sorted(PACKAGES))}"
    code = main(["pull", "--bucket", release[0], "--subject", "100307", "--package", "3T_Nope", "--package",
                 PKG_MOTOR_PREPROC, "--dest", str(tmp_path / "d")])
    one_line_error(code, capsys.readouterr().err, f"unknown package '3T_Nope'; {avail}")
    assert not list((tmp_path / "d").glob("1*"))  # nothing fetched
    code = main(["plan", "--bucket", release[0], "--subject", "100307", "--package", "3T_Nope"])
    one_line_error(code, capsys.readouterr().err, f"unknown package '3T_Nope'; {avail}")


# --- malformed manifests -----------------------------------------------------------------------


async def test_malformed_manifests_are_reported_and_the_rest_goes_on(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    a, b = b"a" * 10, b"bb" * 7
    good = {"DownloadManifest": {"Includes": [{"URI": "100307/T1w/a.txt", "Checksum": md5(a)},
                                              {"URI": "100307/T1w/b.txt", "Checksum": md5(b)}]}}
    evil = {"DownloadManifest": {"Includes": [
        {"URI": "../../etc/passwd", "Checksum": md5(a)},
        {"URI": "/etc/shadow", "Checksum": md5(a)},
        {"URI": "100307/T1w/a.txt", "Checksum": md5(a)},
    ]}}
    x = f"{REL}/100307/.xdlm/100307_3T_"
    fast_put(bucket, {
        f"{REL}/100307/T1w/a.txt": a, f"{REL}/100307/T1w/b.txt": b,
        f"{x}Good_preproc.json": json.dumps(good).encode(),
        f"{x}Trunc_preproc.json": json.dumps(good).encode()[:40],
        f"{x}Types_preproc.json": b'{"DownloadManifest": {"Includes": "everything"}}',
        f"{x}Evil_preproc.json": json.dumps(evil).encode(),
    })
    dest = tmp_path / "d"
    report = await pull(Selection(subjects=["100307"], bucket=bucket), dest, endpoint_url=moto_url)
    assert report.ok and report.verified_files == 6  # 2 files by manifest, 4 manifest files by ETag
    joined = "\n".join(report.notes)
    assert "100307_3T_Trunc_preproc.json: invalid JSON" in joined
    assert "100307_3T_Types_preproc.json: Includes is str" in joined
    assert sum("100307_3T_Evil_preproc.json" in n and "unsafe URI" in n for n in report.notes) == 2
    assert not (tmp_path / "etc").exists()
    # a re-run of the finished pull: listings, no GET, not even of the manifests
    with FaultProxy(moto_url) as proxy:
        again = await pull(Selection(subjects=["100307"], bucket=bucket), dest, endpoint_url=proxy.url)
        # (the subject's delimited listing and one per folder: listings only)
        assert set(proxy.counts) == {"list"} and again.skipped_files == 6 and again.ok

    rep = await verify_tree(dest, offline=True)
    assert rep.ok and rep.counts["ok"] == 2 and rep.counts["unlisted"] == 0
    assert [p.split(":")[0] for p in rep.problems] == [
        "manifest 100307_3T_Trunc_preproc.json", "manifest 100307_3T_Types_preproc.json",
        "manifest 100307_3T_Evil_preproc.json", "manifest 100307_3T_Evil_preproc.json",
    ]

    pk = await list_packages(["100307"], bucket=bucket, storage=StorageOptions(endpoint_url=moto_url))
    assert [(p.name, p.files, p.bytes) for p in pk.packages] == [("3T_Evil_preproc", 1, 10), ("3T_Good_preproc", 2, 24)]
    assert len(pk.problems) == 4
    evil_plan = await plan(Selection(subjects=["100307"], bucket=bucket, packages=["3T_Evil_preproc"]), endpoint_url=moto_url)
    assert [o.relpath for o in evil_plan.objects] == ["100307/T1w/a.txt"]


# --- verify ------------------------------------------------------------------------------------


async def test_verify_uses_the_cache_unless_full(tmp_path: Path) -> None:
    files = small_release(["100408"])
    write_tree(tmp_path, files)
    cache = MemoryVerifiedCache()
    r1 = await verify_tree(tmp_path, offline=True, cache=cache)
    assert r1.ok and r1.counts["ok"] == 125 and r1.counts["unlisted"] == 5
    assert r1.hashed_files == 125 and r1.cached_files == 0 and r1.jobs == (os.cpu_count() or 1)
    assert r1.hashed_bytes == sum(f.size for f in files if not f.is_manifest and "release-notes" not in f.key)
    r2 = await verify_tree(tmp_path, offline=True, cache=cache)
    assert r2.ok and r2.hashed_files == 0 and r2.cached_files == 125

    # same size, same mtime, other bytes: the cache cannot tell; --full can
    victim = tmp_path / "100408/T1w/aparc+aseg.nii.gz"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (await verify_tree(tmp_path, offline=True, cache=cache)).ok
    r4 = await verify_tree(tmp_path, offline=True, cache=cache, full=True, jobs=1)
    assert [c.relpath for c in r4.by_status("mismatched")] == ["100408/T1w/aparc+aseg.nii.gz"] and r4.jobs == 1
    # the re-hash updated the cache
    r5 = await verify_tree(tmp_path, offline=True, cache=cache)
    assert not r5.ok and r5.hashed_files == 0 and r5.by_status("mismatched")[0].actual == md5(b"\0" * st.st_size)


async def test_verify_honours_the_selection(tmp_path: Path) -> None:
    files = small_release(["100307"])
    unproc = package_relpaths(files)[PKG_MOTOR_UNPROC]
    write_tree(tmp_path, [f for f in files if f.is_manifest or f.relpath(REL) in unproc])
    whole = await verify_tree(tmp_path, offline=True)
    assert not whole.ok and whole.counts["missing"] == 125 - len(unproc)
    pkg = await verify_tree(tmp_path, Selection(subjects=["100307"], packages=[PKG_MOTOR_UNPROC]), offline=True)
    assert pkg.ok and pkg.counts == {"ok": len(unproc), "mismatched": 0, "missing": 0, "refused": 0,
                                  "absent_from_s3": 0, "unlisted": 0, "unverifiable": 0}
    path = await verify_tree(tmp_path, Selection(subjects=["100307"], paths=["unprocessed/3T/tfMRI_MOTOR_LR"]),
                             offline=True)
    assert path.ok and path.counts["ok"] == len([u for u in unproc if "/tfMRI_MOTOR_LR/" in u])
    with pytest.raises(SelectionError, match="unknown package '3T_Nope'; available: "):
        await verify_tree(tmp_path, Selection(subjects=["100307"], packages=["3T_Nope"]), offline=True)


async def test_verify_unverifiable_and_size_mismatch(tmp_path: Path) -> None:
    doc = {"DownloadManifest": {"Includes": [
        {"URI": "100307/a", "Size": 3},             # no checksum
        {"URI": "100307/b", "Checksum": md5(b"bbb"), "Size": 3},
        {"URI": "100307/c", "Checksum": md5(b"ccc")},
    ]}}
    (tmp_path / "100307/.xdlm").mkdir(parents=True)
    (tmp_path / "100307/.xdlm/100307_3T_X.json").write_text(json.dumps(doc))
    (tmp_path / "100307/a").write_bytes(b"aaa")
    (tmp_path / "100307/b").write_bytes(b"bbbb")  # wrong size: not even hashed
    (tmp_path / "100307/c").mkdir()  # a folder where a file should be
    rep = await verify_tree(tmp_path, offline=True)
    assert [(c.relpath, c.status) for c in rep.checks] == [
        ("100307/a", "unverifiable"), ("100307/b", "mismatched"), ("100307/c", "missing")]
    assert "size 4 bytes, the manifest says 3" in rep.checks[1].detail and rep.hashed_files == 0


def test_verify_and_packages_bad_input(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = tmp_path / "bare"
    (bare / "100307").mkdir(parents=True)
    cases = [
        (["verify", "--dest", str(tmp_path / "nope")], "does not exist"),
        (["verify", "--dest", str(a_file)], "not a folder"),
        (["verify", "--dest", str(empty)], "no subject folders"),
        (["verify", "--dest", str(bare), "--jobs", "0"], "--jobs must be at least 1"),
        (["verify", "--dest", str(bare), "--offline"], "no usable .xdlm manifests"),
        (["verify", "--dest", str(bare), "--subject", "10/03"], "malformed subject"),
        (["verify", "--dest", str(bare), "--bucket", release[0], "--subject", "999999"], "no usable .xdlm manifests"),
        (["packages", "--bucket", release[0], "--subject", "999999"], "no usable .xdlm manifests"),
        (["packages", "--bucket", release[0], "--subject", "100307", "--release", "../x"], "invalid release"),
    ]
    for args, needle in cases:
        code = main(args)
        one_line_error(code, capsys.readouterr().err, needle)
    with pytest.raises(SystemExit) as exc:
        main(["packages", "--bucket", release[0]])
    one_line_error(int(str(exc.value.code)), capsys.readouterr().err, "--subject")
    # a real process, the endpoint down
    r = cli(["verify", "--dest", str(bare), "--bucket", release[0]], CLOSED)
    one_line_error(r.returncode, r.stderr, "cannot connect")


def test_cli_packages_lists_counts_and_sizes(
    moto_url: str, release: tuple[str, list[SynthFile]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, files = release
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    assert main(["packages", "--bucket", bucket, "--subject", "100307", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mine = {f.relpath(REL): f for f in files if f.key.startswith(f"{REL}/100307/")}
    want = {
        name: {"files": len(uris), "bytes": sum(mine[u].size for u in uris), "manifest": f"100307_{name}.json"}
        for name, uris in package_relpaths(mine.values()).items()
    }
    assert doc["subjects"] == {"100307": want} and doc["problems"] == []
    assert main(["packages", "--bucket", bucket, "--subject", "100307"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(PACKAGES) and all(line.startswith("100307  3T_") for line in out)


async def test_cancelling_verify_stops_the_hashing_threads(tmp_path: Path) -> None:
    size = 4 * 1024**3  # sparse: costs no disk, hashing it would take seconds
    doc = {"DownloadManifest": {"Includes": [{"URI": "100307/huge", "Checksum": md5(b"x"), "Size": size}]}}
    (tmp_path / "100307/.xdlm").mkdir(parents=True)
    (tmp_path / "100307/.xdlm/100307_3T_X.json").write_text(json.dumps(doc))
    (tmp_path / "100307/huge").touch()
    os.truncate(tmp_path / "100307/huge", size)
    await hashing_threads_end(await cancel_mid_hash(verify_tree(tmp_path, offline=True)))


# --- hashing -----------------------------------------------------------------------------------


def test_md5_file_and_etags(tmp_path: Path) -> None:
    data = det_bytes(3 * 1024 * 1024 + 17, "md5")
    (tmp_path / "f").write_bytes(data)
    assert md5_file(tmp_path / "f") == md5(data) == md5_file(tmp_path / "f", block=4096)
    (tmp_path / "e").write_bytes(b"")
    assert md5_file(tmp_path / "e") == md5(b"")
    assert etag_md5('"0123456789ABCDEF0123456789abcdef"') == "0123456789abcdef0123456789abcdef"
    assert etag_md5("0123456789abcdef0123456789abcdef-3") is None  # multipart upload
    assert etag_md5("5e0b8f00-1a2b") is None and etag_md5("") is None and etag_md5(None) is None
    stop = threading.Event()
    stop.set()
    with pytest.raises(HashStopped):
        md5_file(tmp_path / "f", stop=stop)


def test_usage_error_is_exit_2() -> None:
    assert UsageError("x").exit_code == 2 and SelectionError("x").exit_code == 2
