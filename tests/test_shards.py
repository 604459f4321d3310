"""Shards (issue 14): ``pull --shard K/N`` processes at once on one destination, by subject and by
key; the merged ``status``; ``verify`` of the whole; bad shard specs and a shard run twice.

Real parts: moto behind the fault proxy (GETs counted), ``hcpsync`` subprocesses, real files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule
from test_journal import spawn, wait_until

SUBJECTS = ("100206", "100307", "100408", "101107")


def release(n_files: int = 5) -> dict[str, bytes]:
    """Each subject's files and its ``.xdlm`` manifest (their MD5s, as HCP publishes them)."""
    tree = {f"HCP_1200/{s}/T1w/f{i}.nii": det_bytes(2000 + 7 * i, f"{s}{i}") for s in SUBJECTS for i in range(n_files)}
    for s in SUBJECTS:
        includes = [{"URI": k[len("HCP_1200/"):], "Checksum": hashlib.md5(v).hexdigest()}
                    for k, v in tree.items() if k.startswith(f"HCP_1200/{s}/")]
        tree[f"HCP_1200/{s}/.xdlm/{s}_3T_Structural_preproc.json"] = json.dumps(
            {"DownloadManifest": {"Includes": includes}}).encode()
    return tree


def pull_cmd(url: str, bucket: str, dest: Path, *extra: str, subjects: tuple[str, ...] = SUBJECTS) -> list[str]:
    sel = [a for s in subjects for a in ("--subject", s)]
    return [sys.executable, "-m", "hcpsync", "pull", *sel, "--endpoint-url", url, "--bucket", bucket,
            "--dest", str(dest), "--no-progress", "--json", "--workers", "1", *extra]


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **FAKE_ENV, **(env or {})})


def at_once(cmds: list[list[str]]) -> list[tuple[int, dict[str, object], str]]:
    procs = [spawn(c) for c in cmds]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append((p.returncode, json.loads(stdout) if stdout.strip() else {}, stderr))
    return out


def hcpsync(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "hcpsync", *args])


def test_three_subject_shards_at_once_make_the_whole_tree_once(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    tree = release()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    results = at_once([pull_cmd(proxy.url, bucket, dest, "--shard", f"{k}/3") for k in range(3)])
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert tree_files(dest) == {k[len("HCP_1200/"):]: v for k, v in tree.items()}
    gets = [key for _, kind, key, _ in proxy.requests_log if kind == "get"]
    # every file fetched once, by one shard; a manifest also by its shard's verifier (to check its files)
    assert sorted(k for k in gets if "/.xdlm/" not in k) == sorted(k for k in tree if "/.xdlm/" not in k)
    manifests = sorted(k for k in tree if "/.xdlm/" in k)
    assert sorted(set(k for k in gets if "/.xdlm/" in k)) == manifests and len(gets) <= len(tree) + len(manifests)
    planned = [int(doc["planned"]["files"]) for _, doc, _ in results]  # type: ignore[index, call-overload]
    assert sum(planned) == len(tree) and min(planned) > 0  # whole subjects: 2 + 1 + 1 of 4 subjects
    status = json.loads(hcpsync("status", "--dest", str(dest), "--json").stdout)
    assert [(s["shard"], s["state"]) for s in status["shards"]] == [(f"{k}-of-3", "complete") for k in range(3)]
    assert status["files"]["complete"] == status["files"]["total"] == len(tree)
    text = hcpsync("status", "--dest", str(dest)).stdout
    assert "shards: 3 (3 complete)" in text
    checked = hcpsync("verify", "--dest", str(dest), "--endpoint-url", proxy.url, "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["counts"]["missing"] == 0 and report["counts"]["mismatched"] == 0
    assert report["counts"]["ok"] == len(tree) - len(SUBJECTS)  # the whole selection, whatever the shards


def test_key_shards_split_one_subject_disjoint_and_complete(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    tree = {f"HCP_1200/100307/MNINonLinear/f{i:03d}.nii": det_bytes(1000 + i, str(i)) for i in range(30)}
    # its manifests: each shard's verifier reads them all, one shard also fetches each as a file
    # (a shard used to write them through the temp file of the shard downloading them: exit 1)
    for pkg in ("A", "B", "C", "D"):
        includes = [{"URI": k[len("HCP_1200/"):], "Checksum": hashlib.md5(v).hexdigest()} for k, v in tree.items()
                    if k.startswith("HCP_1200/")]
        tree[f"HCP_1200/100307/.xdlm/100307_3T_{pkg}_preproc.json"] = json.dumps(
            {"DownloadManifest": {"Includes": includes}}).encode()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    cmds = [pull_cmd(proxy.url, bucket, dest, "--shard", f"{k}/3", "--shard-by", "key", subjects=("100307",))
            for k in range(3)]
    results = at_once(cmds)
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert tree_files(dest) == {k[len("HCP_1200/"):]: v for k, v in tree.items()}
    gets = [key for _, kind, key, _ in proxy.requests_log if kind == "get"]
    assert sorted(k for k in gets if "/.xdlm/" not in k) == sorted(k for k in tree if "/.xdlm/" not in k)
    planned = [int(doc["planned"]["files"]) for _, doc, _ in results]  # type: ignore[index, call-overload]
    assert sum(planned) == len(tree) and min(planned) > 0
    assert all(int(doc["verified"]) == int(doc["planned"]["files"]) for _, doc, _ in results)  # type: ignore[call-overload]
    status = json.loads(hcpsync("status", "--dest", str(dest), "--json").stdout)
    assert [s["shard"] for s in status["shards"]] == [f"{k}-of-3-by-key" for k in range(3)]


def test_bad_shards_are_one_line_errors(bucket: str, tmp_path: Path, moto_url: str) -> None:
    fast_put(bucket, release(1))
    dest = tmp_path / "d"
    cases = {
        ("--shard", "3/3"): "K must be between 0 and 2",
        ("--shard", "0/0"): "at least 1",
        ("--shard", "auto/4"): "SLURM_ARRAY_TASK_ID is not set",
        ("--shard", "two/4"): "expected K/N",
        ("--shard-by", "key"): "--shard-by goes with --shard",
        ("--shard", "0/2", "--journal", str(tmp_path / "j.sqlite")): "--journal PATH does not go with --shard",
    }
    for extra, says in cases.items():
        done = run(pull_cmd(moto_url, bucket, dest, *extra), env={"SLURM_ARRAY_TASK_ID": ""} if "auto/4" in extra
                   else None)
        assert done.returncode == 2, (extra, done.stderr)
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, (extra, done.stderr)
    assert not dest.exists() or tree_files(dest) == {}
    # auto/N takes K from the array task (less its minimum, as with --array=1-4)
    done = run(pull_cmd(moto_url, bucket, dest, "--shard", "auto/2"),
               env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1"})
    assert done.returncode == 0, done.stderr
    assert (dest / ".hcpsync/shards/1-of-2/journal.sqlite").is_file()


def test_a_shard_run_twice_at_once_is_refused(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    tree = release(3)
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    proxy.add_rule(Rule("delay", delay_seconds=30))  # the first run holds its shard meanwhile
    first = spawn(pull_cmd(proxy.url, bucket, dest, "--shard", "0/2"))
    try:
        wait_until(lambda: (dest / ".hcpsync/shards/0-of-2/lock").is_file() and proxy.counts.get("get", 0) > 0, 60)
        again = run(pull_cmd(proxy.url, bucket, dest, "--shard", "0/2"))
        assert again.returncode == 2 and f"(pid {first.pid})" in again.stderr and "shard 0-of-2" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        plain = run(pull_cmd(proxy.url, bucket, dest))  # a pull of the whole waits for the shards
        assert plain.returncode == 2 and "is using destination" in plain.stderr, plain.stderr
        proxy.clear_rules()
        other = run(pull_cmd(proxy.url, bucket, dest, "--shard", "1/2"))  # another shard runs meanwhile
        assert other.returncode == 0, other.stderr
        assert json.loads(hcpsync("status", "--dest", str(dest), "--json").stdout)["shards"][0]["state"] == "running"
    finally:
        first.kill()
        first.communicate(timeout=30)


def test_dryrun_of_a_shard_plans_only_its_subjects(bucket: str, tmp_path: Path, moto_url: str) -> None:
    fast_put(bucket, release(1))
    seen: list[str] = []
    for k in range(2):
        done = run(pull_cmd(moto_url, bucket, tmp_path / "d", "--shard", f"{k}/2", "--dryrun"))
        assert done.returncode == 0, done.stderr
        subjects = {json.loads(line)["path"].split("/")[0] for line in done.stdout.splitlines()
                    if json.loads(line)["type"] == "object"}
        assert len(subjects) == 2
        seen += subjects
    assert sorted(seen) == sorted(SUBJECTS)  # disjoint, and together the whole selection
    assert not (tmp_path / "d").exists()
