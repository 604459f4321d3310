"""hcpsync.demo.synth: a deterministic, realistic synthetic HCP release, and seeding it into S3."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from hcpsync.demo.synth import (
    BLOCK,
    DEFAULT_LARGE_SIZE,
    PACKAGES,
    SynthFile,
    package_relpaths,
    seed_bucket,
    synth_bytes,
    synth_release,
    synth_subject,
)
from hcpsync.paths import check_relpath
from hcpsync.verify.manifest import ManifestIndex, is_manifest_key, parse_manifest

MiB = 1024 * 1024
PART = 8 * MiB
REL = "HCP_1200"


@pytest.fixture(scope="module")
def subject() -> list[SynthFile]:
    return synth_subject()


def by_rel(files: list[SynthFile]) -> dict[str, SynthFile]:
    return {f.relpath(REL): f for f in files}


def test_default_subject_shape(subject: list[SynthFile]) -> None:
    keys = [f.key for f in subject]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(k.startswith("HCP_1200/100307/") for k in keys)
    for f in subject:
        check_relpath(f.relpath(REL))  # every key maps to a safe local path
    data_files = [f for f in subject if not f.is_manifest]
    assert 80 <= len(data_files) <= 200
    total = sum(f.size for f in subject)
    assert 30e6 <= total <= 40e6, total
    # top-level folders like the real bucket's
    tops = {f.relpath(REL).split("/")[1] for f in subject}
    assert tops == {".xdlm", "MNINonLinear", "T1w", "unprocessed", "release-notes"}
    names = by_rel(subject)
    for rel in (
        "100307/T1w/T1w_acpc_dc.nii.gz",
        "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/tfMRI_MOTOR_LR_Atlas.dtseries.nii",
        "100307/MNINonLinear/Results/tfMRI_MOTOR_RL/EVs/lh.txt",
        "100307/MNINonLinear/Results/rfMRI_REST1_LR/rfMRI_REST1_LR_Atlas.dtseries.nii",
        "100307/MNINonLinear/fsaverage_LR32k/100307.L.midthickness.32k_fs_LR.surf.gii",
        "100307/unprocessed/3T/tfMRI_MOTOR_LR/100307_3T_tfMRI_MOTOR_LR.nii.gz",
        "100307/release-notes/ReleaseNotes.txt",
    ):
        assert rel in names, rel


def test_sizes_follow_the_model(subject: list[SynthFile]) -> None:
    sizes = sorted((f.size for f in subject), reverse=True)
    # the 2 biggest are 10-20 MB-ish and split into several 8 MiB parts
    assert all(9e6 <= s <= 20e6 for s in sizes[:2]) and sizes[0] > PART
    names = by_rel(subject)
    large = [f for f in subject if f.size >= DEFAULT_LARGE_SIZE]
    assert len(large) >= 3
    assert all("/Results/" in f.key and (f.key.endswith(".dtseries.nii") or f.key.endswith(".nii.gz"))
               for f in large)
    for run in ("LR", "RL"):
        f = names[f"100307/MNINonLinear/Results/tfMRI_MOTOR_{run}/tfMRI_MOTOR_{run}_Atlas.dtseries.nii"]
        assert f.size > DEFAULT_LARGE_SIZE and f.size % BLOCK != 0
    # many small files: text files keep their real 0.2-20 KB
    txt = [f.size for f in subject if f.key.endswith(".txt")]
    assert len(txt) >= 30 and all(200 <= s <= 20_000 for s in txt)
    # volumes are bigger than text files, smaller than the time series
    t1 = names["100307/T1w/T1w_acpc_dc.nii.gz"].size
    assert 32 * 1024 < t1 < MiB
    assert sum(1 for s in sizes if s < 64 * 1024) > len(sizes) // 3


def test_scale_and_large_size() -> None:
    small = synth_subject(scale=0.1, large_size=256 * 1024)
    default = synth_subject()
    assert [f.key for f in small] == [f.key for f in default]
    assert sum(f.size for f in small) < sum(f.size for f in default) / 4
    ts = [f for f in small if f.key.endswith("_Atlas.dtseries.nii")]
    assert len(ts) == 3 and all(f.size > 256 * 1024 for f in ts)
    # the scale does not change the small text files
    assert {f.key: f.size for f in small if f.key.endswith(".txt")} == {
        f.key: f.size for f in default if f.key.endswith(".txt")
    }
    with pytest.raises(ValueError):
        synth_subject(scale=0)
    for bad in ("", "../x", "a/b", "."):
        with pytest.raises(ValueError):
            synth_subject(bad)


def test_deterministic(subject: list[SynthFile]) -> None:
    again = synth_subject()
    assert again == subject
    for a, b in zip(subject, again, strict=True):
        assert a.data() == b.data() and a.md5() == b.md5()
    f = by_rel(subject)["100307/MNINonLinear/Results/tfMRI_MOTOR_LR/Movement_Regressors.txt"]
    assert SynthFile(f.key, f.size, f.seed).data() == f.data()


def test_content_distinct_and_consistent(subject: list[SynthFile]) -> None:
    digests = {f.md5() for f in subject}
    assert len(digests) == len(subject)  # every file has distinct content
    for f in subject:
        data = f.data()
        assert len(data) == f.size
        assert f.md5() == hashlib.md5(data).hexdigest()
    big = max(subject, key=lambda f: f.size)
    data = big.data()
    # blocks differ within a file, ranges are consistent with the whole
    assert data[:BLOCK] != data[BLOCK : 2 * BLOCK]
    for start, end in ((0, 1), (31, 33), (BLOCK - 5, BLOCK + 5), (PART - 1, PART + 100), (big.size - 3, big.size)):
        assert big.read(start, end) == data[start:end]
    assert synth_bytes("seed", 10) != synth_bytes("other", 10)
    assert synth_bytes("seed", 0) == b""
    with pytest.raises(ValueError):
        synth_bytes("seed", 10, 5, 2)


def test_subjects_differ_but_weigh_the_same() -> None:
    a, b = synth_subject("100307"), synth_subject("100408")
    assert [f.size for f in a if not f.is_manifest] == [f.size for f in b if not f.is_manifest]
    assert {f.md5() for f in a}.isdisjoint({f.md5() for f in b})
    assert "HCP_1200/100408/T1w/100408/mri/aparc+aseg.mgz" in {f.key for f in b}
    release = synth_release(["100408", "100307", "100408"])
    assert [f.key for f in release] == sorted(f.key for f in a + b)
    other = synth_subject("100307", release="HCP_Retest")
    assert all(f.key.startswith("HCP_Retest/100307/") for f in other)


def test_manifests_are_valid_and_match_the_data(subject: list[SynthFile]) -> None:
    manifests = [f for f in subject if f.is_manifest]
    assert {f.key.rsplit("/", 1)[1] for f in manifests} == {f"100307_{p}.json" for p in PACKAGES}
    files = by_rel(subject)
    parsed = []
    for mf in manifests:
        assert is_manifest_key(mf.key)
        data = mf.data()
        assert data.count(b"\n") == 0 and len(data) == mf.size  # one line, like the real ones
        assert b'"Size"' in data and b'"Type"' in data  # extra fields real entries carry
        m = parse_manifest(mf.key, data)
        assert m.problems == () and m.entries and m.subject == "100307" and m.field == "3T"
        for e in m.entries:
            f = files[e.uri]  # URIs are relative to the release root
            assert e.md5 == hashlib.md5(f.data()).hexdigest()
            assert e.size == f.size
        parsed.append(m)
    index = ManifestIndex(parsed)
    assert index.problems == ()
    assert {p for p in index.packages()} == set(PACKAGES)
    for p in ("3T_tfMRI_MOTOR_preproc", "3T_Structural_preproc", "3T_rfMRI_REST1_preproc", "3T_tfMRI_MOTOR_unproc"):
        assert p in PACKAGES


def test_packages_realistic(subject: list[SynthFile]) -> None:
    pk = package_relpaths(subject)
    motor = pk["3T_tfMRI_MOTOR_preproc"]
    # a package spans several top-level folders, as real ones do
    assert {u.split("/")[1] for u in motor} == {"MNINonLinear", "T1w"}
    assert any(u.startswith("100307/MNINonLinear/Results/tfMRI_MOTOR_LR/") for u in motor)
    assert any(u.startswith("100307/MNINonLinear/Results/tfMRI_MOTOR_RL/") for u in motor)
    assert any(u.startswith("100307/T1w/") for u in motor)
    assert any(u.count("/") == 2 and u.startswith("100307/MNINonLinear/") for u in motor)  # top-level file
    assert "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/tfMRI_MOTOR_LR_Atlas.dtseries.nii" in motor
    assert all("/unprocessed/" in u for u in pk["3T_tfMRI_MOTOR_unproc"])
    assert any(u.endswith("T1w/T1w_acpc_dc.nii.gz") for u in pk["3T_Structural_preproc"])
    assert any(u.endswith("rfMRI_REST1_LR_Atlas.dtseries.nii") for u in pk["3T_rfMRI_REST1_preproc"])
    # packages overlap (shared structural files), and some files are in no package
    assert motor & pk["3T_Structural_preproc"]
    in_some = set().union(*pk.values())
    orphans = {f.relpath(REL) for f in subject if not f.is_manifest} - in_some
    assert orphans and all("/release-notes/" in u for u in orphans)
    # every large file belongs to a package
    assert all(f.relpath(REL) in in_some for f in subject if f.size >= DEFAULT_LARGE_SIZE)


def test_synth_file_validation() -> None:
    with pytest.raises(ValueError):
        SynthFile("k", 3, "k", content=b"four")
    with pytest.raises(ValueError):
        SynthFile("k", -1, "k")
    f = SynthFile("a/.xdlm/a_x.json", 2, "s", content=b"{}")
    assert f.data() == b"{}" and f.read(1, 2) == b"}" and f.md5() == hashlib.md5(b"{}").hexdigest()


def test_seed_bucket_lists_every_key_with_its_size(s3: Any, bucket: str) -> None:
    files = synth_release(["100307", "100408"], scale=0.2, large_size=512 * 1024)
    seed_bucket(s3, bucket, files, threads=16)
    listed: dict[str, int] = {}
    etags: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="HCP_1200/"):
        for obj in page.get("Contents", []):
            listed[obj["Key"]] = obj["Size"]
            etags[obj["Key"]] = obj["ETag"].strip('"')
    assert listed == {f.key: f.size for f in files}
    assert etags == {f.key: f.md5() for f in files}  # single-part PUTs: ETag is the MD5
    one = max(files, key=lambda f: f.size)
    body = s3.get_object(Bucket=bucket, Key=one.key, Range="bytes=1000-2999")["Body"].read()
    assert body == one.data()[1000:3000]
