"""``hcpsync pull s3://BUCKET/PREFIX/ DEST`` as aws-cli and s5cmd users type it; a URI is never a destination."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_put, plan_doc, tree_files


def _hcpsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1])})


OPENNEURO = {
    "ds000001/dataset_description.json": b'{"Name": "x"}',
    "ds000001/participants.tsv": b"participant_id\nsub-01\n",
    "ds000001/sub-01/anat/sub-01_T1w.nii.gz": b"t1" * 100,
    "ds000001/sub-01/func/sub-01_task-x_bold.nii.gz": b"bold" * 100,
    "ds000002/sub-01/anat/sub-01_T1w.nii.gz": b"other",
}


def test_pull_an_openneuro_like_prefix(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, OPENNEURO)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))  # public, as OpenNeuro's
    dest = tmp_path / "out"
    # the flags may come between the source and the destination, as with aws-cli
    r = _hcpsync("pull", f"s3://{bucket}/ds000001/", "--no-sign-request", "--endpoint-url", moto_url,
                 str(dest), "--no-progress", "--exclude", "*/func/*", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tree_files(dest) == {"ds000001/" + k.split("/", 1)[1]: v for k, v in OPENNEURO.items()
                                if k.startswith("ds000001/") and "/func/" not in k}
    r = _hcpsync("plan", "--json", f"s3://{bucket}/ds000001", "--endpoint-url", moto_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert plan_doc(r.stdout)["files"] == 4


def test_pull_an_hcp_subject_folder_uri(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {"HCP_1200/100307/T1w/a.nii.gz": b"a", "HCP_1200/100307/T1w/xfms/b": b"b",
                      "HCP_1200/100307/T1w_extra/c": b"c", "HCP_1200/100307/MNINonLinear/d": b"d"})
    r = _hcpsync("pull", f"s3://{bucket}/HCP_1200/100307/T1w/", str(tmp_path / "hcp"), "--no-progress",
                 "--endpoint-url", moto_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tree_files(tmp_path / "hcp") == {"100307/T1w/a.nii.gz": b"a", "100307/T1w/xfms/b": b"b"}


@pytest.mark.parametrize("args", [
    ["pull", "--subject", "100307", "--dest", "s3://hcp-openaccess/x"],
    ["pull", "s3://hcp-openaccess/HCP_1200/100307/", "s3://other-bucket/x/"],
    ["verify", "--subject", "100307", "--dest", "s3://hcp-openaccess/x"],
    ["status", "--dest", "s3://hcp-openaccess/x"],
])
def test_a_uri_is_never_a_destination(moto_url: str, tmp_path: Path, args: list[str]) -> None:
    r = _hcpsync(*args, *([] if args[0] == "status" else ["--endpoint-url", moto_url]), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "is a URI: give a local folder" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # no ./s3:/... folder


@pytest.mark.parametrize(("args", "message"), [
    (["s3://hcp-openaccess/"], "names no prefix"),
    (["s3://hcp-openaccess/HCP_1200/"], "is a whole release"),
    (["s3://hcp-openaccess/HCP_1200/100307/", "--subject", "100408"], "drop --subject"),
    (["s3://hcp-openaccess/HCP_1200/100307/T1w/", "--path", "T2w"], "drop --path"),
    (["https://example.org/x"], "expected an S3 URI"),
])
def test_bad_sources_are_one_line(moto_url: str, tmp_path: Path, args: list[str], message: str) -> None:
    r = _hcpsync("plan", *args, "--endpoint-url", moto_url, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_library_pull_refuses_a_uri_destination(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hcpsync import Selection, pull_sync
    from hcpsync.errors import DestinationError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DestinationError, match="is a URI"):
        pull_sync(Selection(subjects=["100307"]), "s3://hcp-openaccess/x", endpoint_url=moto_url)
    assert list(tmp_path.iterdir()) == []
