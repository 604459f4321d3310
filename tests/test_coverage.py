"""Issue 15: coverage, the files the ``.xdlm`` manifests list that S3 does not have, in ``pull``
and ``plan``: their own category (per subject and package), never a failure by themselves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAKE_ENV, fast_put, plan_doc
from faultproxy import FaultProxy

from hcpsync import Selection
from hcpsync.api import pull
from hcpsync.models import Absent
from hcpsync.planfile import Plan
from hcpsync.shard import Shard

STRUCT, DIFF = "3T_Structural_preproc", "3T_Diffusion_preproc"
A, B, C = "100307/T1w/a.nii.gz", "100307/T1w/b.nii.gz", "100307/T1w/c.nii.gz"  # C: not on S3
D, E = "100307/Diffusion/d.nii.gz", "100307/Diffusion/e.nii.gz"  # D: not on S3
F, G = "100408/T1w/f.nii.gz", "100408/T1w/g.nii.gz"  # G's manifest checksum is wrong: it fails


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def manifest(entries: dict[str, str]) -> bytes:
    return json.dumps({"DownloadManifest": {"Includes": [{"URI": u, "Checksum": c} for u, c in entries.items()]}}).encode()


def seed(bucket: str) -> None:
    data = {p: p.encode() * 50 for p in (A, B, C, D, E, F, G)}
    on_s3 = {f"HCP_1200/{p}": d for p, d in data.items() if p not in (C, D)}
    fast_put(bucket, on_s3 | {
        f"HCP_1200/100307/.xdlm/100307_{STRUCT}.json": manifest({p: md5(data[p]) for p in (A, B, C)}),
        f"HCP_1200/100307/.xdlm/100307_{DIFF}.json": manifest({p: md5(data[p]) for p in (D, E)}),
        f"HCP_1200/100408/.xdlm/100408_{STRUCT}.json": manifest({F: md5(data[F]), G: "0" * 32}),
    })


def hcpsync(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hcpsync", *args, "--endpoint-url", url], capture_output=True,
                          text=True, env={**os.environ, **FAKE_ENV}, timeout=120)


def absent(*items: tuple[str, str]) -> list[dict[str, str]]:
    return [{"path": p, "subject": p.split("/")[0], "package": pkg} for p, pkg in items]


def test_pull_reports_absent_files_apart_from_failures(moto_url: str, bucket: str, tmp_path: Path,
                                                       proxy: FaultProxy) -> None:
    seed(bucket)
    one = ["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(tmp_path / "one"), "--no-progress"]
    r = hcpsync(moto_url, *one, "--json")
    assert r.returncode == 0, r.stderr  # absent files alone are no failure
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["failed"] == [] and doc["transferred"]["files"] == 5  # 3 data files, 2 manifests
    assert doc["absent_from_s3"] == absent((D, DIFF), (C, STRUCT))
    assert doc["coverage"] == {"100307": {DIFF: 1, STRUCT: 1}}
    assert not (tmp_path / "one" / C).exists()

    # a no-op re-run loads no manifest (no GET at all), so it says nothing of coverage
    r = hcpsync(proxy.url, *one, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and proxy.counts.get("get", 0) == 0
    assert doc["absent_from_s3"] is None and doc["coverage"] is None
    r = hcpsync(proxy.url, *one)
    assert r.returncode == 0 and not any(line.lower().lstrip().startswith("absent") for line in r.stdout.splitlines())
    r = hcpsync(proxy.url, *one, "--checksum")  # --checksum loads them: coverage again, in text
    assert r.returncode == 0 and "absent              2 files" in r.stdout, r.stdout
    assert f"ABSENT {C} ({STRUCT})" in r.stdout and "100307: 3T_Diffusion_preproc 1, 3T_Structural_preproc 1" in r.stdout

    # the selection bounds it; with a failure as well: exit 1, and the two are listed apart
    both = ["pull", "--bucket", bucket, "--subject", "100307", "--subject", "100408", "--path", "T1w",
            "--dest", str(tmp_path / "both"), "--no-progress", "--retries", "0"]
    r = hcpsync(moto_url, *both, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [f["key"] for f in doc["failed"]] == [f"HCP_1200/{G}"]
    assert doc["absent_from_s3"] == absent((C, STRUCT)) and doc["coverage"] == {"100307": {STRUCT: 1}}
    r = hcpsync(moto_url, *both[:-2])
    assert r.returncode == 1 and f"FAILED HCP_1200/{G}" in r.stdout and f"ABSENT {C}" in r.stdout, r.stdout


async def test_pull_coverage_of_a_package_and_of_a_shard(moto_url: str, bucket: str, tmp_path: Path) -> None:
    seed(bucket)
    sel = Selection(subjects=["100307", "100408"], bucket=bucket, packages=[DIFF])
    report = await pull(sel, tmp_path / "pkg", endpoint_url=moto_url)
    assert report.ok and report.absent == (Absent(D, "100307", DIFF),)
    report = await pull(Selection(subjects=["100307", "100408"], bucket=bucket), tmp_path / "shard",
                        endpoint_url=moto_url, shard=Shard(1, 2))  # 100408's shard: 100307's absent files are not its own
    assert report.absent == () and not report.ok


def test_plan_reports_coverage_when_it_has_the_manifests(moto_url: str, bucket: str, tmp_path: Path,
                                                         proxy: FaultProxy) -> None:
    seed(bucket)
    sel = ["--bucket", bucket, "--subject", "100307"]
    r = hcpsync(proxy.url, "plan", *sel, "--json")
    doc = plan_doc(r.stdout)
    assert r.returncode == 0 and doc["absent_from_s3"] is None and doc["coverage"] is None
    assert proxy.counts.get("get", 0) == 0  # no manifest fetched for it
    r = hcpsync(moto_url, "plan", *sel)
    assert r.returncode == 0 and "coverage: not compared with the .xdlm manifests (hcpsync plan --coverage" in r.stdout

    r = hcpsync(moto_url, "plan", *sel, "--coverage", "--json")
    doc = plan_doc(r.stdout)  # still objects, then the summary line (which has it)
    assert doc["absent_from_s3"] == absent((D, DIFF), (C, STRUCT)) and doc["files"] == 5
    r = hcpsync(moto_url, "plan", *sel, "--package", STRUCT)
    assert r.returncode == 0 and f"ABSENT {C} ({STRUCT})" in r.stdout and D not in r.stdout, r.stdout

    saved = tmp_path / "cohort.plan"
    assert hcpsync(moto_url, "plan", *sel, "--save", str(saved)).returncode == 0
    assert Plan.load(saved).absent is None  # --save alone fetches no manifest: it lists their keys only
    r = hcpsync(moto_url, "plan", *sel, "--save", str(saved), "--coverage")
    assert r.returncode == 0 and "absent              2 files" in r.stdout, r.stdout
    assert Plan.load(saved).absent == (Absent(D, "100307", DIFF), Absent(C, "100307", STRUCT))
    r = hcpsync(moto_url, "pull", "--plan", str(saved), "--dest", str(tmp_path / "d"), "--dryrun", "--json")
    assert plan_doc(r.stdout)["coverage"] == {"100307": {DIFF: 1, STRUCT: 1}}
