"""Release-scale plans (issue 13): the plan lives in the journal, listing streams into downloads,
plan once / pull many, JSON Lines, the journal's schema migrated.

Real parts: moto's threaded server behind the fault proxy, real files, ``hcpsync`` subprocesses
and SIGKILL.  Every test asserts the bytes on disk, and counts requests at the proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule
from test_journal import finish, spawn, wait_until
from test_journal import want_local as local

from hcpsync import Selection, TransferConfig, pull_sync
from hcpsync.config import MiB
from hcpsync.journal.db import SCHEMA_VERSION
from hcpsync.paths import temp_path_for

SUBJECT = "100307"
DATA = Path(__file__).with_name("data")


def subject_tree(n_mni: int = 12, n_t1w: int = 6, size: int = 3000) -> dict[str, bytes]:
    """Two folders of one subject: listed as two units (each its own listing)."""
    tree = {f"HCP_1200/{SUBJECT}/MNINonLinear/m{i:03d}.nii": det_bytes(size + i, f"m{i}") for i in range(n_mni)}
    tree.update({f"HCP_1200/{SUBJECT}/T1w/t{i:03d}.nii": det_bytes(size + i, f"t{i}") for i in range(n_t1w)})
    return tree


def cli(*args: str, url: str, bucket: str) -> list[str]:
    return [sys.executable, "-m", "hcpsync", *args, "--endpoint-url", url, "--bucket", bucket]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **FAKE_ENV})


def gets(proxy: FaultProxy, contains: str = "") -> list[str]:
    return [key for _, kind, key, _ in proxy.requests_log if kind == "get" and contains in key]


# -- downloads start while the listing goes on ------------------------------------------------


def test_pull_fetches_before_its_listing_has_finished(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    """The origin holds the T1w listing until a GET has arrived: a pull that waited for its whole
    listing would wait out the hold (counted as a timeout)."""
    tree = subject_tree()
    fast_put(bucket, tree)
    proxy.add_rule(Rule("hold", key_contains="/T1w", stall_seconds=20))
    report = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), tmp_path / "d", endpoint_url=proxy.url,
                       config=TransferConfig(workers=1))
    assert report.ok, report.failed
    assert proxy.faults["hold_timeout"] == 0
    assert tree_files(tmp_path / "d") == local(tree)
    log = [(kind, key) for _, kind, key, _ in proxy.requests_log]
    first_get = next(i for i, (kind, _) in enumerate(log) if kind == "get")
    assert any(kind == "list" for kind, _ in log[first_get:]) or proxy.counts["list"] >= 3


def test_plan_json_lines_stream_and_head_exits_0(bucket: str, tmp_path: Path, moto_url: str) -> None:
    tree = {f"HCP_1200/{SUBJECT}/MNINonLinear/f{i:05d}.txt": b"x" for i in range(3000)}
    fast_put(bucket, tree)
    cmd = cli("plan", "--subject", SUBJECT, "--json", url=moto_url, bucket=bucket)
    done = run(cmd)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    objects = [d for d in lines if d["type"] == "object"]
    assert sorted(d["key"] for d in objects) == sorted(tree)
    assert lines[-1]["type"] == "summary" and lines[-1]["files"] == 3000 and lines[-1]["bytes"] == 3000
    piped = subprocess.run(["bash", "-c", "set -o pipefail; \"$@\" | head -1", "bash", *cmd], capture_output=True,
                           text=True, timeout=120, env={**os.environ, **FAKE_ENV})
    assert piped.returncode == 0, piped.stderr
    assert len(piped.stdout.splitlines()) == 1 and json.loads(piped.stdout)["type"] == "object"
    assert "error" not in piped.stderr


# -- resume after a kill during the listing ----------------------------------------------------


def test_kill_during_listing_relists_but_refetches_nothing_complete(
    bucket: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    """Killed while a folder is still being listed: the re-run lists again (the listing is not
    resumed) and fetches only what was not complete."""
    tree = subject_tree()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    proxy.add_rule(Rule("delay", kinds=("list",), key_contains="/T1w", delay_seconds=60))
    proc = spawn(cli("pull", "--subject", SUBJECT, "--dest", str(dest), "--no-progress", "--json", "--workers", "1",
                     url=proxy.url, bucket=bucket))
    mni = [k for k in local(tree) if "/MNINonLinear/" in k]
    wait_until(lambda: all((dest / k).is_file() for k in mni), timeout=60)
    proc.kill()
    proc.communicate(timeout=30)
    assert not any((dest / k).exists() for k in local(tree) if "/T1w/" in k)
    proxy.clear_rules()
    proxy.reset_counts()
    code, report, err = finish(spawn(cli("pull", "--subject", SUBJECT, "--dest", str(dest), "--no-progress", "--json",
                                         url=proxy.url, bucket=bucket)))
    assert code == 0, err
    assert proxy.counts["list"] >= 2  # listed again: the subject, and its folders
    assert sorted(gets(proxy)) == sorted(k for k in tree if "/T1w/" in k)
    assert report["skipped"] == {"files": len(mni), "bytes": sum(len(tree["HCP_1200/" + k]) for k in mni)}
    assert tree_files(dest) == local(tree)


# -- plan once, pull many ----------------------------------------------------------------------


def test_saved_plan_pulls_another_destination_with_no_listing(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    tree = subject_tree()
    fast_put(bucket, tree)
    saved = tmp_path / "plan.sqlite"
    made = run(cli("plan", "--subject", SUBJECT, "--path", "T1w", "--path", "MNINonLinear", "--save", str(saved),
                   url=proxy.url, bucket=bucket))
    assert made.returncode == 0, made.stderr
    assert f"plan saved to {saved}" in made.stdout
    proxy.reset_counts()
    for dest in (tmp_path / "a", tmp_path / "b"):
        done = run(cli("pull", "--plan", str(saved), "--dest", str(dest), "--no-progress", "--json",
                       url=proxy.url, bucket=bucket).__getitem__(slice(0, -2)))  # the plan names the bucket
        assert done.returncode == 0, done.stderr
        assert tree_files(dest) == local(tree)
    assert proxy.counts.get("list", 0) == 0
    assert sorted(gets(proxy)) == sorted(list(tree) * 2)


def test_saved_plan_is_refused_where_it_does_not_belong(s3: object, bucket: str, tmp_path: Path,
                                                        moto_url: str) -> None:
    tree = subject_tree(2, 1)
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    assert run(cli("pull", "--subject", SUBJECT, "--dest", str(dest), "--no-progress", url=moto_url,
                   bucket=bucket)).returncode == 0
    other = f"{bucket}-other"
    s3.create_bucket(Bucket=other)  # type: ignore[attr-defined]
    fast_put(other, tree)
    saved = tmp_path / "other.sqlite"
    assert run(cli("plan", "--subject", SUBJECT, "--save", str(saved), url=moto_url, bucket=other)).returncode == 0

    def pull(*extra: str) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", moto_url, "--no-progress", *extra])

    before = tree_files(dest)
    cases = {  # arguments -> what the one line says
        ("--plan", str(saved), "--dest", str(dest)): f"holds s3://{bucket}/HCP_1200/",
        ("--plan", str(saved), "--dest", str(tmp_path / "e"), "--subject", SUBJECT): "gives the selection: drop --subject",
        ("--plan", str(saved), "--dest", str(tmp_path / "e"), "--bucket", bucket): "drop --bucket",
        ("--plan", str(tmp_path / "none.sqlite"), "--dest", str(tmp_path / "e")): "no saved plan at",
        ("--plan", str(dest / ".hcpsync" / "journal.sqlite"), "--dest", str(tmp_path / "e")): "is not a plan saved",
    }
    for args, says in cases.items():
        done = pull(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert tree_files(dest) == before
    assert not (tmp_path / "e").exists()


# -- the journal of the previous version --------------------------------------------------------


def _v1_destination(bucket: str, dest: Path) -> dict[str, bytes]:
    """The objects and local state the schema-1 journal in tests/data describes (see its script)."""
    sizes = {"HCP_1200/100307/T1w/a.nii": 1000, "HCP_1200/100307/T1w/big.nii": 3 * MiB + 5,
             "HCP_1200/100307/T1w/c.nii": 2000}
    tree = {k: det_bytes(n, k) for k, n in sizes.items()}
    fast_put(bucket, tree)
    (dest / ".hcpsync").mkdir(parents=True)
    shutil.copyfile(DATA / "journal-v1.sqlite", dest / ".hcpsync" / "journal.sqlite")
    db = sqlite3.connect(dest / ".hcpsync" / "journal.sqlite")  # that pull was from the test's bucket
    sel = json.loads(db.execute("SELECT value FROM meta WHERE name='selection'").fetchone()[0])
    db.execute("UPDATE meta SET value=? WHERE name='selection'", (json.dumps({**sel, "bucket": bucket}),))
    db.commit()
    db.close()
    (dest / "100307" / "T1w").mkdir(parents=True)
    (dest / "100307/T1w/a.nii").write_bytes(tree["HCP_1200/100307/T1w/a.nii"])
    big = tree["HCP_1200/100307/T1w/big.nii"]
    temp = temp_path_for(dest / "100307/T1w/big.nii")
    temp.write_bytes(big[: 2 * MiB] + bytes(len(big) - 2 * MiB))
    return tree


def test_journal_of_schema_1_is_migrated_and_resumes(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    dest = tmp_path / "d"
    tree = _v1_destination(bucket, dest)
    cfg = TransferConfig(part_size=MiB, multipart_threshold=MiB, workers=1)
    report = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket, paths=["T1w"]), dest, endpoint_url=proxy.url,
                       config=cfg)
    assert report.ok, report.failed
    assert tree_files(dest) == local(tree)
    ranges = [r for _, kind, key, r in proxy.requests_log if kind == "get" and key.endswith("big.nii")]
    assert sorted(ranges) == [f"bytes={2 * MiB}-{3 * MiB - 1}", f"bytes={3 * MiB}-{3 * MiB + 4}"]
    assert gets(proxy, "a.nii") == [] and len(gets(proxy, "c.nii")) == 1
    db = sqlite3.connect(dest / ".hcpsync" / "journal.sqlite")
    assert db.execute("SELECT value FROM meta WHERE name='version'").fetchone() == (str(SCHEMA_VERSION),)


def test_journal_of_a_newer_schema_is_refused_in_one_line(bucket: str, tmp_path: Path, moto_url: str) -> None:
    dest = tmp_path / "d"
    _v1_destination(bucket, dest)
    db = sqlite3.connect(dest / ".hcpsync" / "journal.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE name='version'")
    db.commit()
    db.close()
    done = run(cli("pull", "--subject", SUBJECT, "--dest", str(dest), "--no-progress", url=moto_url, bucket=bucket))
    assert done.returncode == 2, done.stderr
    assert "schema version 99" in done.stderr and "--reset-journal" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (dest / "100307/T1w/c.nii").exists()
