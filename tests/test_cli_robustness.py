"""Issue 9, items 9, 12 and 14, as users meet them: ``python -m hcpsync`` in real subprocesses,
real SIGKILL/SIGINT, against moto.

* 9: a journal the user cannot write, a lock that is a FIFO, ``--reset-journal`` on a folder,
  ``plan --json | head -c 100``: one clear line (or, for the pipe, a quiet exit), never a traceback.
* 12: keys holding control and bidi characters cannot rewrite the terminal.
* 14: ``status`` counts what is on disk after ``kill -9``, reads a journal whose WAL was lost;
  Ctrl-C leaves no temp file of a small (single-GET) object.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV, fast_put
from faultproxy import FaultProxy

SUBJECT = "100307"
REL = f"HCP_1200/{SUBJECT}/"

#: what a terminal obeys: C0 (but the newline ending each line), DEL, C1, bidi controls
RAW_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def hcpsync(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV}
    env.pop("HCPSYNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **FAKE_ENV}
    env.pop("HCPSYNC_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "hcpsync", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def pull_args(url: str, bucket: str, dest: Path, *extra: str) -> list[str]:
    return ["pull", "--endpoint-url", url, "--bucket", bucket, "--subject", SUBJECT, "--dest", str(dest),
            "--no-progress", *extra]


def wait_until(cond: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def one_error_line(r: subprocess.CompletedProcess[str], needle: str, code: int = 2) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("hcpsync: error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def local(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k[len("HCP_1200/"):]: v for k, v in tree.items()}


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as p:
        yield p


# -- item 12: terminal injection -------------------------------------------------------------

FAKE = "\r\x1b[2K" + "transferred     9999 files\n  note: all good"
HOSTILE = {
    f"{REL}T1w/x{FAKE}": b"refused: control characters",
    f"{REL}T1w/\u202eclash": b"refused: file and folder",
}
CLASHING = {f"{REL}T1w/\u202eclash/y": b"lands: the folder wins the clash"}
C1_KEY = f"{REL}T1w/c1\x9b2J\u2067name.nii"  # C1 CSI and a bidi isolate: a legal file name, it lands


def assert_inert(text: str) -> None:
    """No raw control or bidi character, and no line the hostile keys forged."""
    assert RAW_UNSAFE.search(text) is None, text
    for line in text.splitlines():
        if "9999" in line or "all good" in line:
            assert line.lstrip().startswith(("FAILED", "refused")), line


def hostile_manifest() -> dict[str, bytes]:
    data = b"landed"
    doc = {"DownloadManifest": {"ID": "x", "Subject": SUBJECT, "Package": "3T_\u2066pkg\u2069", "Includes": [
        {"URI": C1_KEY[len("HCP_1200/"):], "Checksum": hashlib.md5(data).hexdigest(), "Size": len(data)},
        {"URI": f"{SUBJECT}/T1w/\u202emissing\x85.nii", "Checksum": "0" * 32, "Size": 3},
    ]}}
    return {C1_KEY: data, f"{REL}.xdlm/{SUBJECT}_3T_\u2066pkg\u2069.json": json.dumps(doc).encode()}


def test_hostile_keys_cannot_forge_output_lines(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {**HOSTILE, **CLASHING, **hostile_manifest(), f"{REL}T1w/fine.nii": b"fine"})
    dest = tmp_path / "dest\x1b[2K\u202e"
    sel = ["--endpoint-url", moto_url, "--bucket", bucket, "--subject", SUBJECT]
    plan = hcpsync("plan", *sel)
    assert plan.returncode == 0 and plan.stdout.count("  refused ") == 2, plan.stdout
    pull = hcpsync(*pull_args(moto_url, bucket, dest))
    assert pull.returncode == 1 and pull.stdout.count("  FAILED ") == 2, pull.stdout + pull.stderr
    assert (dest / C1_KEY[len("HCP_1200/"):]).read_bytes() == b"landed"
    verify = hcpsync("verify", "--dest", str(dest), "--offline", "--no-progress")
    assert verify.returncode == 1 and "MISSING" in verify.stdout, verify.stdout + verify.stderr
    status = hcpsync("status", "--dest", str(dest))
    packages = hcpsync("packages", *sel)
    assert status.returncode == 0 and packages.returncode == 0, status.stderr + packages.stderr
    (tmp_path / "file\x1b[2K\u202e").write_text("a file, not a folder")
    error = hcpsync(*pull_args(moto_url, bucket, tmp_path / "file\x1b[2K\u202e"))
    one_error_line(error, "is not a folder")
    for r in (plan, pull, verify, status, packages, error):
        assert_inert(r.stdout + r.stderr)
    # JSON stays JSON: ASCII only, and the keys come back intact
    plan_json = hcpsync("plan", *sel, "--json")
    pull_json = hcpsync(*pull_args(moto_url, bucket, dest, "--json"))
    for r in (plan_json, pull_json):
        assert r.stdout.isascii() and RAW_UNSAFE.search(r.stdout + r.stderr) is None
    assert {x["key"] for x in json.loads(plan_json.stdout)["rejected"]} == set(HOSTILE)
    assert {x["key"] for x in json.loads(pull_json.stdout)["failed"]} == set(HOSTILE)
