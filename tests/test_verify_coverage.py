"""Issue 15: online ``verify`` lists S3: the files a manifest lists that S3 lacks are their own
category (``absent_from_s3``, per subject and package, not a failure); offline, nothing is asked.

moto's server (behind the counting proxy where requests are counted), real files, and
``python -m hcpsync verify`` in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAKE_ENV, fast_put
from faultproxy import FaultProxy

REL = "HCP_1200"
A, B = "100307", "100408"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def verify(url: str, bucket: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "hcpsync", "verify", "--endpoint-url", url, "--bucket", bucket,
            "--subject", A, "--subject", B, "--dest", str(dest), "--no-progress", *extra]
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **FAKE_ENV}, timeout=120)


def manifest(subject: str, package: str, files: dict[str, bytes]) -> dict[str, bytes]:
    doc = {"DownloadManifest": {"Includes": [{"URI": u, "Checksum": md5(d)} for u, d in files.items()]}}
    return {f"{REL}/{subject}/.xdlm/{subject}_{package}.json": json.dumps(doc).encode()}


#: what the manifests list: path -> bytes
FILES = {
    f"{A}/T1w/here.nii.gz": b"on S3 and on disk",
    f"{A}/T1w/fetchable.nii.gz": b"on S3, not on disk",
    f"{A}/T1w/gone.nii.gz": b"on neither",
    f"{A}/T1w/kept.nii.gz": b"on disk only (S3 lost it since)",
    f"{A}/MNINonLinear/gone.dtseries.nii": b"on neither, another package",
    f"{A}/MNINonLinear/gone2.dtseries.nii": b"on neither either",
    f"{B}/T1w/gone.nii.gz": b"on neither, another subject",
}
ON_S3 = (f"{A}/T1w/here.nii.gz", f"{A}/T1w/fetchable.nii.gz")
ON_DISK = (f"{A}/T1w/here.nii.gz", f"{A}/T1w/fetchable.nii.gz", f"{A}/T1w/kept.nii.gz")
ABSENT = sorted(set(FILES) - set(ON_S3))


def seed(bucket: str, dest: Path) -> dict[str, bytes]:
    """The bucket (manifests, the files on S3) and DEST (the files on disk); returns the manifests."""
    struct = {p: d for p, d in FILES.items() if p.startswith(f"{A}/T1w/")}
    manifests = {
        **manifest(A, "3T_Structural_preproc", struct),
        **manifest(A, "3T_rfMRI_REST1_preproc", {p: d for p, d in FILES.items() if p.startswith(f"{A}/MNI")}),
        **manifest(B, "3T_Structural_preproc", {f"{B}/T1w/gone.nii.gz": FILES[f"{B}/T1w/gone.nii.gz"]}),
    }
    fast_put(bucket, {**{f"{REL}/{p}": FILES[p] for p in ON_S3}, **manifests})
    for p in ON_DISK:
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        (dest / p).write_bytes(FILES[p])
    (dest / B).mkdir()
    return manifests


def test_files_absent_from_s3_are_reported_per_subject_and_package(moto_url: str, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    seed(bucket, dest)
    with FaultProxy(moto_url) as proxy:
        r = verify(proxy.url, bucket, dest, "--json")
        lists = proxy.counts.get("list", 0)
    assert r.returncode == 0, r.stdout + r.stderr  # nothing anyone could fetch is missing
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["counts"]["ok"] == 3 and doc["counts"]["missing"] == 0
    # on disk (kept.nii.gz) it is still checked, and counted in the coverage; not on disk, its own status
    assert doc["counts"]["absent_from_s3"] == len(ABSENT) - 1
    assert [c["path"] for c in doc["absent_from_s3"]] == ABSENT
    assert {c["path"]: (c["subject"], c["package"]) for c in doc["absent_from_s3"]} == {
        f"{A}/MNINonLinear/gone.dtseries.nii": (A, "3T_rfMRI_REST1_preproc"),
        f"{A}/MNINonLinear/gone2.dtseries.nii": (A, "3T_rfMRI_REST1_preproc"),
        f"{A}/T1w/gone.nii.gz": (A, "3T_Structural_preproc"),
        f"{A}/T1w/kept.nii.gz": (A, "3T_Structural_preproc"),
        f"{B}/T1w/gone.nii.gz": (B, "3T_Structural_preproc"),
    }
    assert doc["coverage"] == {A: {"3T_Structural_preproc": 2, "3T_rfMRI_REST1_preproc": 2},
                               B: {"3T_Structural_preproc": 1}}
    assert lists == 2 + 2  # each subject's .xdlm/ folder (its manifests), then the subject's folder, once

    text = verify(moto_url, bucket, dest)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    at = lines.index(f"listed in a manifest, absent from S3: {len(ABSENT)} file(s) "
                     "(1 of them on disk, checked against the manifest)")
    assert lines[at + 1:at + 4] == [f"  {A}  3T_Structural_preproc: 2 file(s)", f"  {A}  3T_rfMRI_REST1_preproc: 2 file(s)",
                                    f"  {B}  3T_Structural_preproc: 1 file(s)"]
    assert f"  ABSENT_FROM_S3 {A}/T1w/gone.nii.gz" in lines
    assert any(line.startswith("absent_from_s3 ") and line.split()[1] == str(len(ABSENT) - 1) for line in lines)

    # a file S3 holds but the disk does not: missing, a failure
    (dest / f"{A}/T1w/fetchable.nii.gz").unlink()
    r = verify(moto_url, bucket, dest, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and [c["path"] for c in doc["missing"]] == [f"{A}/T1w/fetchable.nii.gz"]
    assert doc["counts"]["absent_from_s3"] == len(ABSENT) - 1


def test_offline_asks_nothing_and_says_what_it_cannot_tell(moto_url: str, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    for key, data in seed(bucket, dest).items():  # the manifests, kept as a pull keeps them
        local = dest / key[len(REL) + 1:]
        local.parent.mkdir(exist_ok=True)
        local.write_bytes(data)
    with FaultProxy(moto_url) as proxy:
        r = verify(proxy.url, bucket, dest, "--offline", "--json")
        assert proxy.counts == {}
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["absent_from_s3"] == [] and doc["coverage"] == {}
    assert [c["path"] for c in doc["missing"]] == [p for p in ABSENT if p != f"{A}/T1w/kept.nii.gz"]
    assert any(n.startswith("offline: S3 was not listed") for n in doc["notes"])


def test_a_file_no_manifest_lists_with_another_size_on_s3_is_mismatched_unhashed(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "d"
    seed(bucket, dest)
    extra = f"{A}/release-notes/notes.txt"
    fast_put(bucket, {f"{REL}/{extra}": b"the release notes"})
    (dest / extra).parent.mkdir(parents=True)
    (dest / extra).write_bytes(b"the release notes, edited")
    (dest / f"{A}/T1w/mine.txt").write_text("not on S3")
    r = verify(moto_url, bucket, dest, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1
    assert doc["mismatched"] == [{"path": extra, "expected": md5(b"the release notes"), "actual": None, "size": 25,
                                  "detail": "size 25 bytes, S3 says 17"}]
    assert [c["path"] for c in doc["unlisted"]] == [f"{A}/T1w/mine.txt"]
    assert doc["hashed"]["files"] == 3  # the manifest files on disk only
