"""``hcpsync verify --repair`` (issue 15): what verification finds mismatched or missing is fetched
again through the pull's engine and journal, then checked again; the report names what was
repaired.  Real parts: moto behind the fault proxy (GETs counted), real files, CLI subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import FAKE_ENV, fast_put, tree_files
from faultproxy import FaultProxy

from hcpsync import Selection, TransferConfig, pull_sync
from hcpsync.demo.synth import SynthFile, synth_release

REL = "HCP_1200"
SUBJECT = "100307"
KiB = 1024
RANGED = TransferConfig(concurrency=8, part_size=64 * KiB, multipart_threshold=128 * KiB)
T1 = f"{SUBJECT}/T1w/T1w_acpc_dc.nii.gz"  # ranged (over 128 KiB)
EV = f"{SUBJECT}/MNINonLinear/Results/tfMRI_MOTOR_LR/EVs/lf.txt"  # one GET


def release(bucket: str) -> list[SynthFile]:
    files = synth_release([SUBJECT], REL, scale=0.1, large_size=256 * KiB)
    fast_put(bucket, {f.key: f.data() for f in files})
    return files


def want(files: list[SynthFile]) -> dict[str, bytes]:
    return {f.relpath(REL): f.data() for f in files}


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def verify(url: str, bucket: str, dest: Path, *extra: str) -> tuple[int, Any, str]:
    done = subprocess.run([sys.executable, "-m", "hcpsync", "verify", "--dest", str(dest), "--subject", SUBJECT,
                           "--bucket", bucket, "--endpoint-url", url, "--no-progress", *extra],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **FAKE_ENV})
    out = json.loads(done.stdout) if "--json" in extra and done.stdout.strip() else done.stdout
    return done.returncode, out, done.stderr


def gets(proxy: FaultProxy) -> list[str]:
    return sorted(key for _, kind, key, _ in proxy.requests_log if kind == "get" and "/.xdlm/" not in key)


def test_repair_fixes_a_flipped_byte_and_a_lost_file(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    files = release(bucket)
    dest = tmp_path / "d"
    assert pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=proxy.url, config=RANGED).ok
    flip(dest / T1)
    flip(dest / EV)
    (dest / EV.replace("lf.txt", "rh.txt")).unlink()
    proxy.reset_counts()
    code, doc, err = verify(proxy.url, bucket, dest, "--repair", "--json")
    assert code == 0, err
    assert doc["ok"] is True and doc["counts"]["mismatched"] == doc["counts"]["missing"] == 0
    repaired = {i["path"]: i["was"] for i in doc["repair"]["repaired"]}
    assert repaired == {T1: "mismatched", EV: "mismatched", EV.replace("lf.txt", "rh.txt"): "missing"}
    assert doc["repair"]["unrepaired"] == []
    assert tree_files(dest) == want(files) | {k: v for k, v in tree_files(dest).items() if "/.xdlm/" in k}
    assert set(gets(proxy)) == {f"{REL}/{p}" for p in repaired}  # those three only (T1 in ranges)
    # the journal's plan is still the whole subject, all complete (the repair added to it)
    done = subprocess.run([sys.executable, "-m", "hcpsync", "status", "--dest", str(dest), "--json"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **FAKE_ENV})
    status = json.loads(done.stdout)
    assert status["files"]["total"] == status["files"]["complete"] == len(files), status
    assert not any("no longer selected" in n for n in doc["notes"])


def test_repair_of_a_tree_another_tool_made(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    """No journal: the same-size damaged file is found by the check and replaced (the repair's pull
    compares checksums, not sizes)."""
    files = release(bucket)
    dest = tmp_path / "d"
    for f in files:
        p = dest / f.relpath(REL)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f.data())
    flip(dest / EV)
    proxy.reset_counts()
    code, out, err = verify(proxy.url, bucket, dest, "--repair")
    assert code == 0, err
    assert f"REPAIRED {EV} (was mismatched)" in out and "1 of 1 file(s) repaired" in out
    assert (dest / EV).read_bytes() == want(files)[EV]
    assert gets(proxy) == [f"{REL}/{EV}"]


def test_nothing_to_repair_fetches_nothing(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    release(bucket)
    dest = tmp_path / "d"
    assert pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=proxy.url).ok
    proxy.reset_counts()
    code, doc, err = verify(proxy.url, bucket, dest, "--repair", "--json")
    assert code == 0, err
    assert doc["repair"]["repaired"] == [] and doc["repair"]["pull"] is None
    assert gets(proxy) == []


def test_what_s3_no_longer_has_is_not_repaired(s3: Any, bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    files = release(bucket)
    dest = tmp_path / "d"
    assert pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=proxy.url).ok
    flip(dest / EV)
    s3.delete_object(Bucket=bucket, Key=f"{REL}/{EV}")
    code, doc, err = verify(proxy.url, bucket, dest, "--repair", "--json")
    assert code == 1, err
    [item] = doc["repair"]["unrepaired"]
    assert item["path"] == EV and item["was"] == "mismatched" and "not on S3" in item["reason"]
    assert (dest / EV).read_bytes() != want(files)[EV]  # left as it was: nothing to replace it with


def test_repair_does_not_go_with_offline(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    (dest / SUBJECT).mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "hcpsync", "verify", "--dest", str(dest), "--offline", "--repair"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **FAKE_ENV})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["hcpsync: error: --repair fetches from S3: it does not go with --offline"]
    assert sorted(p.name for p in dest.iterdir()) == [SUBJECT]
    shutil.rmtree(dest)
