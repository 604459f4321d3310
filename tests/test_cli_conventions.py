"""aws-cli's conventions: --dryrun, -q/--quiet, -v/--debug; the progress bar in MiB/s, on any terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import FAKE_ENV, fast_put, tree_files
from faultproxy import FaultProxy, Rule

from hcpsync.cli import main

TREE = {"HCP_1200/100307/T1w/a.nii.gz": b"a" * 3000, "HCP_1200/100307/T1w/b.txt": b"b" * 10}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}  # with the fake AWS keys of conftest


@pytest.fixture
def hcp(bucket: str) -> str:
    fast_put(bucket, TREE)
    return bucket


@pytest.mark.parametrize("flag", ["--dryrun", "--dry-run"])
def test_pull_dryrun_plans_and_writes_nothing(moto_url: str, hcp: str, tmp_path: Path, flag: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dest"
    code = main(["pull", flag, "--subject", "100307", "--bucket", hcp, "--endpoint-url", moto_url, "--dest", str(dest)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"s3://{hcp}/HCP_1200/: 2 files" in out
    assert not dest.exists()


def test_quiet_pull_prints_nothing_when_all_went_well(moto_url: str, hcp: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pull", "-q", "--subject", "100307", "--bucket", hcp, "--endpoint-url", moto_url,
                 "--dest", str(tmp_path)])
    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (0, "", "")
    assert tree_files(tmp_path) == {k.split("/", 1)[1]: v for k, v in TREE.items()}


def test_debug_logs_requests_and_retries_without_credentials(moto_url: str, hcp: str, tmp_path: Path) -> None:
    with FaultProxy(moto_url) as proxy:
        proxy.add_rule(Rule("slowdown", key_contains="b.txt", times=1))
        r = subprocess.run([sys.executable, "-m", "hcpsync", "pull", "-v", "--subject", "100307", "--bucket", hcp,
                            "--endpoint-url", proxy.url, "--dest", str(tmp_path), "--no-progress"],
                           capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any(line.startswith("hcpsync: debug: list_objects_v2 s3://") for line in lines), r.stderr
    assert any("GET " in line and "/HCP_1200/100307/T1w/a.nii.gz -> 200" in line for line in lines), r.stderr
    assert any("b.txt -> 503" in line for line in lines) and any("retry 1 of" in line for line in lines), r.stderr
    for secret in (*FAKE_ENV.values(), "Signature", "Authorization", "X-Amz-Security-Token"):
        if secret != "us-east-1":
            assert secret not in r.stderr


def _pull_on_a_terminal(args: list[str], columns: int) -> str:
    """Run ``hcpsync pull`` with stderr on a pseudo-terminal ``columns`` wide; what it showed there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "hcpsync", "pull", *args], stdout=subprocess.DEVNULL,
                            stderr=slave, env={**_env(), "COLUMNS": "", "TERM": "xterm"})
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:  # EIO: the terminal's last writer is gone
            chunk = b""
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.wait(60) == 0
    return shown.decode("utf-8", "replace")


@pytest.mark.parametrize("columns", [0, 100])
def test_progress_bar_in_binary_units_on_any_terminal(moto_url: str, hcp: str, tmp_path: Path, columns: int) -> None:
    shown = _pull_on_a_terminal(["--subject", "100307", "--bucket", hcp, "--endpoint-url", moto_url,
                                 "--dest", str(tmp_path)], columns)
    assert "files 2/2" in shown and "2.9 KiB/2.9 KiB" in shown, repr(shown)
    assert "iB/s" in shown and "MB/s" not in shown and "kB/s" not in shown, repr(shown)
