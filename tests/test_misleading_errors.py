"""Errors that misled a new user (issue 11): each is one line that names the real problem.

Run as users type them: ``python -m hcpsync ...`` in a subprocess; exit code and the one line checked.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV


def hcpsync(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV}
    for name in ("HCPSYNC_DEBUG", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


class _NotS3(http.server.BaseHTTPRequestHandler):
    """A web server that is no S3 API: 404 with an HTML page for everything."""

    def do_GET(self) -> None:
        body = b"<html><body><h1>Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_s3_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_non_s3_endpoint_answering_404_is_named_as_such(not_s3_url: str) -> None:
    proc = hcpsync("plan", "--endpoint-url", not_s3_url, "--subject", "100307")
    line = one_line(proc)
    assert proc.returncode == 2
    assert "deleted since" not in line
    assert "not an S3 API" in line and "--endpoint-url" in line


def test_a_bad_region_is_a_usage_error() -> None:
    proc = hcpsync("plan", "--subject", "100307", "--region", "bad region!")
    line = one_line(proc)
    assert proc.returncode == 2
    assert "s3://-" not in line and "InvalidRegionError" not in line
    assert "invalid region 'bad region!'" in line and "--region" in line and "us-east-1" in line


def test_a_bad_bandwidth_suggests_a_rate(tmp_path: Path) -> None:
    proc = hcpsync("pull", "--subject", "100307", "--dest", str(tmp_path), "--max-bandwidth", "fast")
    line = one_line(proc)
    assert proc.returncode == 2
    assert "'fast'" in line and "200MB/s" in line and "8MiB" not in line


def test_a_stray_positional_argument_points_at_the_subcommands_help(tmp_path: Path) -> None:
    proc = hcpsync("status", "--dest", str(tmp_path), "stray")
    line = one_line(proc)
    assert proc.returncode == 2
    assert "stray" in line and "'hcpsync status --help'" in line
    # pull takes a source and a destination as operands: a third one has no place
    proc = hcpsync("pull", "s3://hcp-openaccess/HCP_1200/100307/", str(tmp_path), "stray")
    line = one_line(proc)
    assert proc.returncode == 2
    assert "stray" in line and "'hcpsync pull --help'" in line


def test_version_from_a_folder_holding_a_hcpsync_folder(tmp_path: Path) -> None:
    (tmp_path / "hcpsync").mkdir()  # e.g. a download destination named after the tool
    proc = hcpsync("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("hcpsync ") and "Traceback" not in proc.stderr
