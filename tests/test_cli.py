"""The CLI as users run it: a real subprocess, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAKE_ENV, fast_put, plan_doc, tree_files


def run(args: list[str], url: str | None, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV}
    if url:
        env["AWS_ENDPOINT_URL"] = url
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=env,
                          timeout=120, **kw)  # type: ignore[call-overload]


def test_pull_tutorial_via_cli_json(moto_url: str, bucket: str, tmp_path: Path) -> None:
    motor = "q1/100307/MNINonLinear/Results/tfMRI_MOTOR_LR"
    fast_put(bucket, {f"{motor}/a.nii.gz": b"A" * 1000, f"{motor}/EVs/b.txt": b"B", "q1/100307/T1w/c": b"C"})
    dest = tmp_path / "out"
    r = run(["pull", "--bucket", bucket, "--release", "q1", "--subject", "100307",
             "--path", "MNINonLinear/Results/tfMRI_MOTOR_LR", "--dest", str(dest), "--json"], moto_url)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["transferred"] == {"files": 2, "bytes": 1001} and doc["failed"] == []
    assert tree_files(dest) == {"100307/MNINonLinear/Results/tfMRI_MOTOR_LR/a.nii.gz": b"A" * 1000,
                                "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/EVs/b.txt": b"B"}
    assert r.stderr == ""  # not a TTY: no progress bar
    # endpoint from --endpoint-url too, text report, re-run skips
    r = run(["pull", "--bucket", bucket, "--release", "q1", "--subject", "100307", "--path",
             "MNINonLinear/Results/tfMRI_MOTOR_LR", "--dest", str(dest), "--endpoint-url", moto_url], None)
    assert r.returncode == 0 and "skipped" in r.stdout and "2 files" in r.stdout


def test_plan_json_and_text(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {"HCP_1200/100307/a": b"12345", "HCP_1200/100408/b": b"1"})
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("# my cohort\n100307\n\n100408  # second\n")
    r = run(["plan", "--bucket", bucket, "--subjects-file", str(subjects), "--json"], moto_url)
    assert r.returncode == 0, r.stderr
    doc = plan_doc(r.stdout)
    assert doc["files"] == 2 and doc["bytes"] == 6
    assert doc["subjects"] == {"100307": {"files": 1, "bytes": 5}, "100408": {"files": 1, "bytes": 1}}
    assert [o["path"] for o in doc["objects"]] == ["100307/a", "100408/b"]
    r = run(["plan", "--bucket", bucket, "--subject", "100307"], moto_url)
    assert r.returncode == 0 and "1 files" in r.stdout and "100307: 1 files" in r.stdout


def _one_line_error(r: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_input_one_line_errors(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {"HCP_1200/100307/a": b"1"})
    base = ["pull", "--bucket", bucket, "--dest", str(tmp_path / "d")]
    _one_line_error(run([*base, "--subject", "999999"], moto_url), 2, "999999 not found")
    _one_line_error(run([*base, "--subject", "10/03"], moto_url), 2, "malformed subject")
    _one_line_error(run([*base, "--subject", "100307", "--path", "../etc"], moto_url), 2, "'..'")
    _one_line_error(run([*base, "--subject", "100307", "--part-size", "lots"], moto_url), 2, "--part-size")
    _one_line_error(run([*base, "--subject", "100307", "--concurrency", "0"], moto_url), 2, "concurrency")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    _one_line_error(run([*base, "--subjects-file", str(empty)], moto_url), 2, "lists no subject")
    _one_line_error(run(["pull", "--bucket", "no-such-bucket-here", "--subject", "1", "--dest", str(tmp_path)], moto_url),
                    2, "does not exist")
    _one_line_error(run(["pull", "--subject", "100307"], moto_url), 2, "--dest")
    _one_line_error(run([*base, "--subject", "100307"], "http://127.0.0.1:9"), 2, "cannot connect")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_line_error(run(["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(a_file)], moto_url),
                    2, "not a folder")
