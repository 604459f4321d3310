"""Chaos: 1,000 objects, random faults at ~5 %, two SIGKILLs and resumes, then verify: all ok."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule

from hcpsync.config import KiB

SUBJECT = "100307"


def _tree(rng: random.Random) -> dict[str, bytes]:
    tree: dict[str, bytes] = {}
    for i in range(1000):
        folder = rng.choice(["T1w", "MNINonLinear/Results/tfMRI_MOTOR_LR", "MNINonLinear/fsaverage_LR32k", "unprocessed/3T"])
        size = rng.randint(300 * KiB, 900 * KiB) if i % 50 == 0 else rng.randint(0, 12 * KiB)
        tree[f"HCP_1200/{SUBJECT}/{folder}/f{i:04d}.dat"] = det_bytes(size, f"chaos{i}")
    manifest = {"DownloadManifest": {"Includes": [
        {"URI": k[len("HCP_1200/"):], "Checksum": hashlib.md5(v).hexdigest()} for k, v in tree.items()]}}
    tree[f"HCP_1200/{SUBJECT}/.xdlm/{SUBJECT}_3T_chaos.json"] = json.dumps(manifest).encode()
    return tree


def test_chaos_faults_and_two_sigkills_then_verify_all_ok(moto_url: str, bucket: str, tmp_path: Path) -> None:
    rng = random.Random(20261124)
    tree = _tree(rng)
    fast_put(bucket, tree)
    dest = tmp_path / "dest"
    env = {**os.environ, **FAKE_ENV}
    with FaultProxy(moto_url) as proxy:
        # ~5 % of GETs faulted, mixed kinds, reproducible
        for n, kind in enumerate(("slowdown", "internal", "reset", "short")):
            proxy.add_rule(Rule(kind, probability=0.0125, seed=n, after_bytes=1024 if kind in ("reset", "short") else None))
        cmd = [sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", proxy.url, "--bucket", bucket,
               "--subject", SUBJECT, "--dest", str(dest), "--concurrency", "8", "--part-size", "128KiB",
               "--multipart-threshold", "128KiB", "--retries", "8", "--no-progress", "--json"]
        kills = []
        for _ in range(2):  # two SIGKILLs at random points
            target = proxy.counts.get("get", 0) + rng.randint(100, 300)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            deadline = time.monotonic() + 60
            while proxy.counts.get("get", 0) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
            kills.append(proc.returncode)
        assert kills == [-signal.SIGKILL, -signal.SIGKILL]
        # nothing incomplete at a final path, even right after the kills
        for rel, data in tree_files(dest).items():
            if not rel.endswith(".hcpsync-part"):  # partial files, kept for resume, are not final
                assert data == tree[f"HCP_1200/{rel}"]
        final = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        assert final.returncode == 0, final.stderr
        report = json.loads(final.stdout)
        faults = dict(proxy.faults)
    assert sum(faults.values()) >= 10, faults  # faults really were injected
    assert report["ok"] and report["failed"] == []
    assert report["verified"] + report["skipped"]["files"] >= 1000
    assert tree_files(dest) == {k[len("HCP_1200/"):]: v for k, v in tree.items()}  # files lost: 0
    assert not list(dest.rglob("*.hcpsync-part"))
    check = subprocess.run([sys.executable, "-m", "hcpsync", "verify", "--dest", str(dest), "--offline", "--json",
                            "--full"], capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    doc = json.loads(check.stdout)
    assert doc["ok"] and doc["counts"]["ok"] == 1000 and doc["mismatched"] == [] and doc["missing"] == []
    print(f"chaos: faults injected {faults}, final run retries {report['retries']}, files lost 0")
