"""``hcpsync demo``: the whole demo as a user runs it, and the one line it prints without the demo extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_ENV

# Runs ``python -m hcpsync ARGS`` in an interpreter where the top-level module BLOCKED cannot be
# imported, as if it were not installed (a meta-path finder refusing it and its submodules).
_WITHOUT = """
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
runpy.run_module("hcpsync", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], blocked: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV}
    env.pop("AWS_ENDPOINT_URL", None)
    prefix = ["-c", f"BLOCKED = {blocked!r}\n{_WITHOUT}"] if blocked else ["-m", "hcpsync"]
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("blocked", ["moto", "boto3", "flask"])
def test_demo_without_its_extra_says_what_to_install(tmp_path: Path, blocked: str) -> None:
    dest = tmp_path / "demo"
    r = run(["demo", "--dest", str(dest)], blocked)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hcpsync: error: hcpsync demo needs")
    assert f"{blocked} is not installed" in lines[0]
    assert lines[0].endswith('pip install "hcpsync[demo]"')
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not dest.exists()


def test_demo_pulls_a_verified_subject(tmp_path: Path) -> None:
    dest = tmp_path / "demo"
    r = run(["demo", "--dest", str(dest), "--no-progress", "--json"])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # with --json, the demo's own lines go to stderr
    assert doc["ok"] and doc["failed"] == []
    assert doc["transferred"]["files"] == doc["planned"]["files"] == doc["verified"] == 136
    assert "local S3 endpoint http://127.0.0.1:" in r.stderr and "hcpsync verify --dest" in r.stderr
    # the other commands need none of the demo extra
    r = run(["verify", "--dest", str(dest), "--offline", "--no-progress"], "moto")
    assert r.returncode == 0, r.stderr
    assert "mismatched             0 files" in r.stdout and "missing                0 files" in r.stdout
    r = run(["status", "--dest", str(dest), "--json"], "boto3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"]["complete"] == 136
