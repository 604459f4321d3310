"""As a new user meets it: verify after a partial pull, reports that say where and what next,
the library's shape (CLI in-process and subprocess, against moto's server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_put

from hcpsync.cli import main
from hcpsync.demo.synth import SynthFile, synth_release

KiB = 1024
REL = "HCP_1200"
SUBJECT = "100307"


@pytest.fixture(scope="module")
def release(s3: Any) -> tuple[str, list[SynthFile]]:
    """A read-only bucket holding one synthetic subject, manifests included."""
    name = f"hcp-first-{os.getpid()}"
    s3.create_bucket(Bucket=name)
    files = synth_release([SUBJECT], REL, scale=0.05, large_size=64 * KiB)
    fast_put(name, {f.key: f.data() for f in files})
    return name, files


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- item 8: verify after a partial pull -------------------------------------------------------


def test_verify_after_a_partial_pull_uses_its_selection_and_works_offline(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, files = release
    dest = tmp_path / "d"
    t1w = [f for f in files if f.key.startswith(f"{REL}/{SUBJECT}/T1w/")]
    assert 0 < len(t1w) < len(files) - 20
    s3_args = ["--endpoint-url", moto_url, "--bucket", bucket]
    code, _, err = run(capsys, "pull", *s3_args, "--subject", SUBJECT, "--path", "T1w", "--dest", str(dest),
                       "--no-progress")
    assert code == 0, err
    # the manifests the pull checked against are kept where HCP lays them out
    manifests = [f for f in files if f.is_manifest]
    for m in manifests:
        assert (dest / m.relpath(REL)).read_bytes() == m.data()
    # verify, with neither --subject nor --path: the pull's own selection, nothing missing
    code, out, err = run(capsys, "verify", *s3_args, "--dest", str(dest), "--json", "--no-progress")
    assert code == 0, (out, err)
    counts = json.loads(out)["counts"]
    assert counts["missing"] == 0 and counts["ok"] == len(t1w), counts
    assert "--path T1w" in err
    # offline, from the kept manifests: no network at all
    code, out, err = run(capsys, "verify", "--endpoint-url", "http://127.0.0.1:9", "--dest", str(dest), "--offline",
                         "--json", "--no-progress")
    assert code == 0, (out, err)
    counts = json.loads(out)["counts"]
    assert counts["missing"] == 0 and counts["ok"] == len(t1w), counts
