"""Issue 15: ``verify`` on a DataLad-shaped tree: files are relative symlinks into a read-only
git-annex inside the tree.  Links are followed inside the tree only, read only; a link leading
outside is ``refused`` (its target never read), a dangling one (content not fetched) ``missing``.

Real files and symlinks, moto's server for the online check, ``python -m hcpsync verify``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put

REL = "HCP_1200"
SUBJECT = "100307"
#: what the manifest lists: path -> bytes
LISTED = {
    f"{SUBJECT}/T1w/T1w_acpc_dc.nii.gz": det_bytes(70_000, "t1"),
    f"{SUBJECT}/T1w/aparc+aseg.nii.gz": det_bytes(30_000, "aparc"),
    f"{SUBJECT}/MNINonLinear/Results/rfMRI_REST1_LR/Movement_Regressors.txt": b"0.1 0.2 0.3\n" * 50,
    f"{SUBJECT}/MNINonLinear/T1w.nii.gz": det_bytes(20_000, "mni t1"),
}
NOTES = f"{SUBJECT}/release-notes/ReleaseNotes.txt"  # on S3, in no manifest: checked by its S3 ETag
MANIFEST = f"{SUBJECT}/.xdlm/{SUBJECT}_3T_Structural_preproc.json"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def manifest_bytes() -> bytes:
    doc = {"DownloadManifest": {"Includes": [{"URI": u, "Checksum": md5(d)} for u, d in LISTED.items()]}}
    return json.dumps(doc).encode()


def annex(repo: Path, data: bytes) -> Path:
    """Put ``data`` in the annex of the git repository at ``repo`` (as git-annex lays it out)."""
    key = f"MD5E-s{len(data)}--{md5(data)}"
    obj = repo / ".git/annex/objects" / key[7:9] / key[9:11] / key / key
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    return obj


def link(dest: Path, rel: str, target: Path | str, relative: bool = True) -> None:
    at = dest / rel
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(os.path.relpath(target, at.parent) if relative else target)


def lock(root: Path) -> None:
    """chmod the annex read-only, as git-annex does: objects 0444, their folders 0555."""
    for folder, _, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(folder, f), 0o444)
        os.chmod(folder, 0o555)


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Path]:
    """DEST laid out as a DataLad dataset: the top-level annex holds most files, the subject's
    own (a subdataset) one of them; the manifest too is annexed.  Restores write permissions."""
    root = tmp_path / "ds"
    items = list(LISTED.items())
    for rel, data in items[:-1]:
        link(root, rel, annex(root, data))
    rel, data = items[-1]
    link(root, rel, annex(root / SUBJECT, data), relative=False)  # an absolute link, inside the tree
    link(root, NOTES, annex(root, b"release notes"))
    link(root, MANIFEST, annex(root, manifest_bytes()))
    (root / ".datalad").mkdir()
    (root / ".datalad/config").write_text("[datalad]\n")
    lock(root / ".git/annex/objects")
    lock(root / SUBJECT / ".git/annex/objects")
    yield root
    for folder, _, _ in os.walk(tmp_path):
        os.chmod(folder, 0o755)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of every path under ``root`` (links not followed), hcpsync's state excepted."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".hcpsync"]
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def verify(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hcpsync", "verify", "--subject", SUBJECT, "--dest", str(dest), "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **FAKE_ENV}, timeout=120)


def test_datalad_tree_is_verified_through_its_links_and_left_untouched(dest: Path, moto_url: str, bucket: str) -> None:
    fast_put(bucket, {f"{REL}/{p}": d for p, d in LISTED.items()} | {
        f"{REL}/{NOTES}": b"release notes", f"{REL}/{MANIFEST}": manifest_bytes()})
    before = snapshot(dest)
    assert stat.S_IMODE(os.stat(dest / ".git/annex/objects").st_mode) == 0o555
    r = verify(dest, "--endpoint-url", moto_url, "--bucket", bucket, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["counts"] == {"ok": 5, "mismatched": 0, "missing": 0, "refused": 0, "absent_from_s3": 0,
                             "unlisted": 0, "unverifiable": 0}
    assert [c["path"] for c in doc["ok_by_s3_etag"]] == [NOTES]
    assert doc["hashed"]["bytes"] == sum(map(len, LISTED.values())) + len(b"release notes")
    assert snapshot(dest) == before

    # offline: the annexes (DEST/.git, DEST/100307/.git) are never walked as files of the subject
    r = verify(dest, "--offline", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["counts"]["ok"] == 4 and [c["path"] for c in doc["unlisted"]] == [NOTES]
    assert snapshot(dest) == before


def test_links_out_of_the_tree_are_refused_and_dangling_ones_missing(dest: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    t1, aparc, regressors, _ = LISTED
    evil = outside / "evil\x1b[2Kname"  # the right bytes: were it read, the file would be ok
    evil.write_bytes(LISTED[t1])
    (dest / t1).unlink()
    link(dest, t1, evil, relative=False)
    (outside / "Results/rfMRI_REST1_LR").mkdir(parents=True)  # a folder on the way, linked out of the tree
    (outside / "Results/rfMRI_REST1_LR/Movement_Regressors.txt").write_bytes(LISTED[regressors])
    shutil.rmtree(dest / f"{SUBJECT}/MNINonLinear/Results")
    link(dest, f"{SUBJECT}/MNINonLinear/Results", outside / "Results")
    stray = dest / f"{SUBJECT}/T1w/stray.txt"  # in no manifest: the walk refuses it too
    stray.symlink_to(evil)
    (dest / aparc).unlink()
    link(dest, aparc, dest / ".git/annex/objects/Xx/Yy/MD5E-s1--0/MD5E-s1--0")  # content not fetched
    outside_manifest = outside / f"{SUBJECT}_3T_Other_preproc.json"  # a manifest, too, is not read through such a link
    outside_manifest.write_bytes(manifest_bytes())
    link(dest, f"{SUBJECT}/.xdlm/{outside_manifest.name}", outside_manifest)
    before = snapshot(dest)

    r = verify(dest, "--offline", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert {c["path"]: c["detail"] for c in doc["refused"]} == {
        t1: f"symlink to {evil} outside the tree: not followed",
        regressors: f"symlink to {outside / 'Results/rfMRI_REST1_LR'} outside the tree (a folder on its way): not followed",
        f"{SUBJECT}/MNINonLinear/Results": f"symlink to {outside / 'Results'} outside the tree: not followed",  # the walk's
        f"{SUBJECT}/T1w/stray.txt": f"symlink to {evil} outside the tree: not followed",
    }
    assert doc["missing"] == [{"path": aparc, "expected": md5(LISTED[aparc]),
                               "detail": "symlink whose target is absent (annexed content not present?)"}]
    assert [c["path"] for c in doc["unlisted"]] == [NOTES]
    assert doc["problems"] == [f"manifest {outside_manifest.name}: symlink to {outside_manifest} outside the tree: not followed"]
    assert doc["counts"]["ok"] == 1 and doc["hashed"]["files"] == 1  # only mni's link was read through
    assert snapshot(dest) == before

    text = verify(dest, "--offline")
    assert text.returncode == 1
    assert f"  REFUSED {t1}: symlink to {outside}/evil\\x1b[2Kname outside the tree: not followed" in text.stdout
    assert "\x1b" not in text.stdout
