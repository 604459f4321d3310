"""Bad input, as users type it: ``python -m hcpsync`` in a subprocess, one line on stderr, exit 2.

tests/test_cli.py already covers an unknown or malformed subject, ``--path ../etc``, ``--part-size lots``,
``--concurrency 0``, an empty subjects file, a missing bucket, a missing ``--dest``, a closed port and a
destination that is a file; this file covers the rest (AccessDenied and refused credentials are in
tests/test_security.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FAKE_ENV, fast_put

SUBJ = "HCP_1200/100307/"


@dataclass
class Case:
    args: list[str]
    needle: str
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()
    max_seconds: float = 60.0


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float


def run(case: Case) -> Outcome:
    """``python -m hcpsync ARGS`` in a fresh interpreter."""
    env = {**os.environ, **FAKE_ENV, **case.env}
    for name in (*case.drop_env, "HCPSYNC_DEBUG", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hcpsync", *case.args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


BATCH = r"""
import contextlib, io, json, os, sys, time
import hcpsync.cli
out = {}
for name, case in json.load(sys.stdin).items():
    saved = dict(os.environ)
    os.environ.update(case["env"])
    for k in case["drop_env"]:
        os.environ.pop(k, None)
    stdout, stderr = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = hcpsync.cli.main(case["args"])
        except SystemExit as exc:  # argparse's own exits
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:
            code, _ = -1, stderr.write(f"Traceback: escaped {type(exc).__name__}: {exc}")
    out[name] = [code, stdout.getvalue(), stderr.getvalue(), time.monotonic() - t0]
    os.environ.clear()
    os.environ.update(saved)
print(json.dumps(out))
"""


def run_batch(cases: dict[str, Case]) -> dict[str, Outcome]:
    """Run many cases through ``hcpsync.cli.main`` in ONE child interpreter (an interpreter start and
    hcpsync's imports cost ~1 s, so thirty separate ``python -m`` runs would take half a minute)."""
    env = {**os.environ, **FAKE_ENV}
    for name in ("HCPSYNC_DEBUG", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    doc = {name: {"args": c.args, "env": c.env, "drop_env": list(c.drop_env)} for name, c in cases.items()}
    proc = subprocess.run([sys.executable, "-c", BATCH], input=json.dumps(doc), capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return {name: Outcome(*v) for name, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def run_all(cases: dict[str, Case], real: tuple[str, ...] = ()) -> dict[str, Outcome]:
    """The ``real`` cases as ``python -m hcpsync`` subprocesses, the others batched, side by side."""
    with ThreadPoolExecutor(1 + len(real)) as pool:
        singles = {name: pool.submit(run, cases[name]) for name in real}
        batch = run_batch({k: v for k, v in cases.items() if k not in real})
        return {**batch, **{name: f.result() for name, f in singles.items()}}


def check(name: str, case: Case, out: Outcome) -> None:
    assert out.code == case.code, (name, out.code, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, (name, out.stderr)
    assert lines[0].startswith("hcpsync: error: "), (name, lines[0])
    assert case.needle in lines[0], (name, case.needle, lines[0])
    assert "Traceback" not in out.stderr and out.stdout == "", (name, out.stdout, out.stderr)
    assert out.seconds < case.max_seconds, (name, out.seconds)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_bad_values_and_selections(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a", f"{SUBJ}MNINonLinear/b": b"b", "HCP_1200/100408/T1w/c": b"c"})
    dest = str(tmp_path / "dest")
    sel = ["--bucket", bucket, "--subject", "100307", "--endpoint-url", moto_url]
    pull = ["pull", *sel, "--dest", dest]
    (tmp_path / "bad-id.txt").write_text("100307\n10 03 07\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x01garbage")
    (tmp_path / "mixed.txt").write_text("100307\n999998  # typo\n")
    cases = {
        # values
        "bandwidth-word": Case([*pull, "--max-bandwidth", "fast"], "invalid bandwidth 'fast'"),
        "bandwidth-zero": Case([*pull, "--max-bandwidth", "0"], "must be positive"),
        "bandwidth-tiny": Case([*pull, "--max-bandwidth", "100B/s"], "max bandwidth must be at least"),
        "bandwidth-negative": Case([*pull, "--max-bandwidth=-5MB/s"], "invalid bandwidth '-5MB'"),
        "bandwidth-option-like": Case([*pull, "--max-bandwidth", "-5MB/s"], "--max-bandwidth: expected one argument"),
        "part-size-tiny": Case([*pull, "--part-size", "10"], "part size must be at least"),
        "part-size-negative": Case([*pull, "--part-size", "-8MiB"], "--part-size"),
        "part-size-unit": Case([*pull, "--part-size", "8XB"], "--part-size"),
        "threshold-zero": Case([*pull, "--multipart-threshold", "0"], "--multipart-threshold"),
        "concurrency-word": Case([*pull, "--concurrency", "many"], "--concurrency"),
        "concurrency-huge": Case([*pull, "--concurrency", "100000"], "concurrency must be between 1 and 4096"),
        "concurrency-negative": Case([*pull, "--concurrency", "-4"], "concurrency must be between"),
        "retries-negative": Case([*pull, "--retries", "-1"], "retries must be >= 0"),
        "read-timeout-zero": Case([*pull, "--read-timeout", "0"], "timeouts must be positive"),
        "read-timeout-word": Case([*pull, "--read-timeout", "soon"], "--read-timeout"),
        "unknown-option": Case([*pull, "--paralel", "8"], "unrecognized arguments: --paralel"),
        "no-command": Case([], "COMMAND"),
        # selections
        "no-subject": Case(["pull", "--bucket", bucket, "--dest", dest, "--endpoint-url", moto_url],
                           "no subject selected"),
        "subject-empty": Case(["plan", "--bucket", bucket, "--subject", "", "--endpoint-url", moto_url],
                              "malformed subject ID"),
        "subject-dots": Case(["plan", "--bucket", bucket, "--subject", "..", "--endpoint-url", moto_url],
                             "malformed subject ID"),
        "subjects-file-missing": Case(["plan", "--bucket", bucket, "--subjects-file", str(tmp_path / "nope.txt"),
                                       "--endpoint-url", moto_url], "cannot read subjects file"),
        "subjects-file-bad-id": Case(["plan", "--bucket", bucket, "--subjects-file", str(tmp_path / "bad-id.txt"),
                                      "--endpoint-url", moto_url], "malformed subject ID '10 03 07'"),
        "subjects-file-binary": Case(["plan", "--bucket", bucket, "--subjects-file", str(tmp_path / "binary.txt"),
                                      "--endpoint-url", moto_url], "is not UTF-8 text"),
        "one-unknown-among-known": Case(["plan", "--bucket", bucket, "--subjects-file", str(tmp_path / "mixed.txt"),
                                         "--endpoint-url", moto_url], "999998 not found"),
        "path-absolute": Case(["plan", *sel, "--path", "/etc"], "must be relative"),
        "path-control": Case(["plan", *sel, "--path", "T1w\x1b[2J"], "control characters"),
        "path-matches-nothing": Case(["plan", *sel, "--path", "T2w"], "'T2w' matches nothing"),
        "path-prefix-only": Case(["plan", *sel, "--path", "T1"], "'T1' matches nothing"),  # segment boundaries
        "include-matches-nothing": Case(["plan", *sel, "--include", "*.dtseries.nii"], "matches no object"),
        "release-escape": Case(["plan", *sel, "--release", "../HCP_1200"], "invalid release"),
        "bucket-invalid": Case(["plan", "--bucket", "Not_A_Bucket!", "--subject", "100307",
                                "--endpoint-url", moto_url], "invalid bucket name"),
    }
    outcomes = run_all(cases, real=("bandwidth-tiny", "subjects-file-binary"))
    for name, case in cases.items():
        check(name, case, outcomes[name])
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").rglob("*.nii.gz"))


def test_credentials_and_endpoints(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a"})
    dest = str(tmp_path / "dest")
    port = closed_port()
    no_creds = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    unset = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    sel = ["--bucket", bucket, "--subject", "100307"]
    cases = {
        # no credentials anywhere: not in the environment, no config or credentials file
        "no-credentials-pull": Case(["pull", *sel, "--dest", f"{dest}1", "--endpoint-url", moto_url],
                                    "no AWS credentials found", env=no_creds, drop_env=unset),
        "no-credentials-plan": Case(["plan", *sel, "--endpoint-url", moto_url], "--profile hcp",
                                    env=no_creds, drop_env=unset),
        "profile-missing": Case(["plan", *sel, "--profile", "nosuch", "--endpoint-url", moto_url],
                                "profile (nosuch) could not be found", env=no_creds),
        "profile-missing-env": Case(["plan", *sel, "--endpoint-url", moto_url], "profile (hcp) could not be found",
                                    env={**no_creds, "AWS_PROFILE": "hcp"}),
        # an endpoint refusing connections: a few quick retries, then a clear message, fast
        "refused-pull": Case(["pull", *sel, "--dest", f"{dest}2", "--endpoint-url", f"http://127.0.0.1:{port}"],
                             "cannot connect to the S3 endpoint", max_seconds=15),
        "refused-plan": Case(["plan", *sel, "--endpoint-url", f"http://127.0.0.1:{port}"],
                             "cannot connect to the S3 endpoint", max_seconds=15),
        "refused-env": Case(["plan", *sel], "cannot connect", env={"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"},
                            max_seconds=15),
        "endpoint-garbage": Case(["plan", *sel, "--endpoint-url", "not a url"], "invalid S3 endpoint URL 'not a url'"),
    }
    # the refused endpoints back off and retry (~3 s each): side by side in their own interpreters
    outcomes = run_all(cases, real=("no-credentials-pull", "refused-pull", "refused-plan", "refused-env"))
    for name, case in cases.items():
        check(name, case, outcomes[name])
    assert "--no-sign-request" in outcomes["no-credentials-pull"].stderr
    assert "BALSA" in outcomes["profile-missing"].stderr
    assert not any(tmp_path.rglob("a.nii.gz"))


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only file system (a tmpfs mounted ro): unwritable even for root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True,
                           timeout=10, check=False)
        mounted = r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a read-only tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True, timeout=10, check=False)


def test_unwritable_destinations(moto_url: str, bucket: str, tmp_path: Path) -> None:
    # tests run as root, for whom mode bits grant everything: unwritable has to mean more than chmod
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a"})
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".hcpsync").write_text("a file where hcpsync keeps its journal folder")
    pull = ["pull", "--bucket", bucket, "--subject", "100307", "--endpoint-url", moto_url, "--dest"]
    cases = {
        "under-a-file": Case([*pull, str(a_file / "sub" / "dir")], "cannot create destination"),
        "in-proc": Case([*pull, "/proc/hcpsync-dest"], "cannot create destination"),
        "state-folder-is-a-file": Case([*pull, str(busy)], ".hcpsync"),
    }
    outcomes = run_all(cases, real=("under-a-file",))
    for name, case in cases.items():
        check(name, case, outcomes[name])
    assert a_file.read_text() == "x"


def test_read_only_destination(moto_url: str, bucket: str, read_only_dir: Path) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a"})
    pull = ["pull", "--bucket", bucket, "--subject", "100307", "--endpoint-url", moto_url, "--dest"]
    cases = {
        "read-only": Case([*pull, str(read_only_dir)], "is not writable"),
        "read-only-new-subfolder": Case([*pull, str(read_only_dir / "new")], "cannot create destination"),
    }
    outcomes = run_all(cases, real=("read-only",))
    for name, case in cases.items():
        check(name, case, outcomes[name])
    assert list(read_only_dir.iterdir()) == []
