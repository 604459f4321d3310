"""As a new user meets it: verify after a partial pull, reports that say where and what next,
the library's shape (CLI in-process and subprocess, against moto's server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    doc = json.loads(out)
    assert doc["counts"]["missing"] == 0 and doc["counts"]["ok"] == len(t1w), doc["counts"]
    assert any(f"--subject {SUBJECT} --path T1w" in note for note in doc["notes"]), doc["notes"]
    # offline, from the kept manifests: no network at all
    code, out, err = run(capsys, "verify", "--endpoint-url", "http://127.0.0.1:9", "--dest", str(dest), "--offline",
                         "--json", "--no-progress")
    assert code == 0, (out, err)
    counts = json.loads(out)["counts"]
    assert counts["missing"] == 0 and counts["ok"] == len(t1w), counts


# --- item 7: reports that say where and what next ----------------------------------------------


def test_pull_report_says_where_and_how_to_retry_and_status_says_how_to_resume(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from faultproxy import FaultProxy, Rule

    bucket, files = release
    dest = tmp_path / "d"
    journal = dest / ".hcpsync" / "journal.sqlite"
    t1w = sorted(f.key for f in files if f.key.startswith(f"{REL}/{SUBJECT}/T1w/") and not f.is_manifest)
    with FaultProxy(moto_url) as proxy:
        proxy.add_rule(Rule("denied", key_contains=t1w[0]))
        args = ["pull", "--endpoint-url", proxy.url, "--bucket", bucket, "--subject", SUBJECT, "--path", "T1w",
                "--dest", str(dest), "--no-progress", "--retries", "0"]
        code, out, _ = run(capsys, *args)
        assert code == 1
        assert f"destination {dest}" in out and f"journal     {journal}" in out
        assert out.rstrip().endswith("run the same command again to retry the 1 failed (complete files are skipped)")
        code, out, err = run(capsys, *args, "--json")
        assert code == 1
        doc = json.loads(out)
        assert (doc["dest"], doc["journal"]) == (str(dest), str(journal))
        assert "run the same command again to retry the 1 failed" in err
    code, out, err = run(capsys, "status", "--dest", str(dest))
    assert code == 0, err
    assert f"selection: --subject {SUBJECT} --path T1w --bucket" not in out  # the bucket goes first
    assert f"selection: --bucket {bucket} --subject {SUBJECT} --path T1w" in out
    assert (f"to resume (1 files to go): hcpsync pull --bucket {bucket} --subject {SUBJECT} --path T1w "
            f"--dest {dest}") in out


def test_status_of_a_folder_nothing_was_pulled_into(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "--dest", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["journal"] is None and doc["dest"] == str(tmp_path) and doc["files"]["total"] == 0
    code, out, err = run(capsys, "status", "--dest", str(tmp_path))
    assert code == 0 and "nothing pulled into" in out and "hcpsync pull --subject ID --dest" in out, err
    code, out, err = run(capsys, "status", "--dest", str(tmp_path / "nosuch"), "--json")
    assert code == 2 and "no journal" in err


def test_pull_without_credentials_leaves_no_journal(moto_url: str, bucket: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("kept")
    for dest in (tmp_path / "new", existing):
        r = subprocess.run([sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", moto_url, "--bucket", bucket,
                            "--subject", SUBJECT, "--dest", str(dest), "--no-progress"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2 and "no AWS credentials found" in r.stderr, r.stderr
        assert not (dest / ".hcpsync").exists()
    assert not (tmp_path / "new").exists()
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
    code = subprocess.run([sys.executable, "-m", "hcpsync", "status", "--dest", str(existing), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(code.stdout)["journal"] is None


# --- item 10: library polish -----------------------------------------------------------------

USER_CODE = '''
import hcpsync

sel = hcpsync.Selection(subjects=("100307",))
report = hcpsync.pull_sync(sel, "/data/hcp", profile="hcp", concurency=3)
plan = hcpsync.plan_sync(sel, profle="hcp")
checked: hcpsync.VerifyReport = hcpsync.check_sync(sel, "/data/hcp", offline=True)
# as README writes it: lists, and a lone string, where the fields are tuples
readme = hcpsync.Selection(subjects=["100307"], release="HCP_1200", paths=["MNINonLinear/Results/tfMRI_MOTOR_LR"])
lone = hcpsync.Selection(subjects="100307", filters=[("exclude", "*"), ("include", "*_MSMAll*")])
subjects: tuple[str, ...] = readme.subjects + lone.subjects
'''


def test_type_checkers_see_the_blocking_twins_signatures(tmp_path: Path) -> None:
    import importlib.resources

    assert importlib.resources.files("hcpsync").joinpath("py.typed").is_file()  # PEP 561 marker
    (tmp_path / "user.py").write_text(USER_CODE)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                        "--python-version", "3.11", "user.py"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "MYPYPATH": str(root)}, timeout=300)
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, r.stdout + r.stderr
    assert 'user.py:5: error: Unexpected keyword argument "concurency"' in errors[0]
    assert 'user.py:6: error: Unexpected keyword argument "profle"' in errors[1]


def test_check_has_the_shape_of_pull_and_a_blocking_twin(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path
) -> None:
    import inspect

    import hcpsync

    bucket, files = release
    sel = hcpsync.Selection(subjects=(SUBJECT,), bucket=bucket, paths=("T1w",))
    dest = tmp_path / "d"
    assert hcpsync.pull_sync(sel, dest, endpoint_url=moto_url).ok
    t1w = [f for f in files if f.key.startswith(f"{REL}/{SUBJECT}/T1w/")]
    for report in (hcpsync.check_sync(sel, dest, endpoint_url=moto_url),  # (selection, dest), like pull
                   hcpsync.check_sync(None, dest, offline=True)):  # the last pull's selection, no network
        assert report.ok and report.counts["ok"] == len(t1w) and report.counts["missing"] == 0, report.counts
    assert list(inspect.signature(hcpsync.check).parameters)[:2] == list(inspect.signature(hcpsync.pull).parameters)[:2]
    assert hcpsync.verify_tree  # still there, (dest, selection)


def test_mirror_expands_the_home_folder(
    moto_url: str, release: tuple[str, list[SynthFile]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hcpsync

    bucket, _ = release
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = hcpsync.Mirror("~/hcp", bucket=bucket, endpoint_url=moto_url).subject(SUBJECT).files("T1w")
    assert paths and all(p.is_file() and p.is_relative_to(tmp_path / "hcp") for p in paths)
    assert not (Path.cwd() / "~").exists()


def test_help_texts_docstrings_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    import hcpsync

    for doc in (hcpsync.SubjectMirror.__doc__, hcpsync.Mirror.subject.__doc__, hcpsync.PullReport.to_json.__doc__,
                hcpsync.pull_sync.__doc__, hcpsync.check_sync.__doc__):
        assert doc and len(doc) > 40
    for command in ("plan", "pull", "status", "verify", "packages", "demo"):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert stop.value.code == 0
        assert f"example:\n  hcpsync {command} " in out, out
        if command == "status":
            assert "the destination folder of a pull" in out and "print the status as JSON" in out
        if command == "demo":
            assert "no progress bar" in out and "print the report as JSON" in out
