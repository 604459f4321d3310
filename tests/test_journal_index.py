"""The journal's per-file queries use an index (EXPLAIN QUERY PLAN), and a no-op re-run of
thousands of complete files answers Ctrl-C at once (a real subprocess)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import FAKE_ENV, fast_put

from hcpsync import pull_sync
from hcpsync.engine.events import FileDone, FileFailed, FileSkipped, PartDone
from hcpsync.errors import ObjectChangedError
from hcpsync.journal import Journal, status_of
from hcpsync.journal.resume import JournalGate
from hcpsync.models import Part, PlannedObject, Selection
from hcpsync.planfile import Plan

SUBJECT = "100307"


def _objects(n: int) -> list[PlannedObject]:
    return [PlannedObject(f"HCP_1200/{SUBJECT}/T1w/f{i}", 100 + i, f"{i:032x}", f"{SUBJECT}/T1w/f{i}") for i in range(n)]


def _scans(db: sqlite3.Connection, sql: str) -> list[str]:
    """The steps of ``sql``'s query plan that read a whole table (``SCAN objects``)."""
    return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}") if row[3].startswith("SCAN")]


def _per_file_statements(jnl: Journal, objects: list[PlannedObject], dest: Path) -> list[str]:
    """Every statement the journal runs through the per-file hooks (bound values expanded)."""
    statements: list[str] = []
    jnl._db.conn.set_trace_callback(statements.append)
    gate, cache = JournalGate(jnl), jnl.checksum_cache()
    for o in objects:
        path = dest / o.relpath
        gate.must_refetch(o)
        gate(PartDone(Part(o, 0, 0, o.size, True), 0))
        gate.resume_ranges(o)
        gate(FileDone(o, path, 123, None))
        gate(FileSkipped(o, path, 123, False))
        cache.put(o.relpath, o.size, 123, "0" * 32)
        cache.get(o.relpath, o.size, 123)
        jnl.flush()
        gate(FileFailed(o, ObjectChangedError("changed"), False))
        cache.mismatched(o.relpath)
    jnl._db.conn.set_trace_callback(None)
    return [s for s in dict.fromkeys(statements) if s.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]


def test_every_per_file_query_of_the_journal_uses_an_index(tmp_path: Path) -> None:
    objects = _objects(300)
    jnl = Journal.open(tmp_path / "journal.sqlite")
    try:
        jnl.start_run(Plan.build(Selection(subjects=(SUBJECT,)), objects))
        statements = _per_file_statements(jnl, objects, tmp_path / "dest")
        # the hooks did reach the database, the checksum cache's lookups by path among them
        assert any("WHERE relpath=" in s for s in statements) and any("FROM parts" in s for s in statements)
        scanning = {s: _scans(jnl._db.conn, s) for s in statements}
        assert {s: scans for s, scans in scanning.items() if scans} == {}
    finally:
        jnl.close()


def test_a_journal_written_before_the_index_gets_it_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    jnl = Journal.open(path)
    jnl.start_run(Plan.build(Selection(subjects=(SUBJECT,)), _objects(50)))
    jnl.close()
    old = sqlite3.connect(path)
    old.execute("DROP INDEX objects_relpath")  # the schema of the first journals
    lookup = f"SELECT md5 FROM objects WHERE relpath='{SUBJECT}/T1w/f7' AND size=107 AND verified_mtime_ns=1"
    assert _scans(old, lookup) == ["SCAN objects"]
    old.close()
    jnl = Journal.open(path)
    try:
        assert _scans(jnl._db, lookup) == []
        assert jnl.checksum_cache().get(f"{SUBJECT}/T1w/f7", 107, 1) is None
    finally:
        jnl.close()


#: files of the no-op re-run, and how long each completeness check takes in it (a network file
#: system's stat): the skip phase then lasts several seconds, whatever the journal's speed
NOOP_FILES = 3000
SLOW_CHECK_S = 0.002

_SLOW_FS_PULL = f"""
import sys, time
from hcpsync.journal import resume
from hcpsync.cli import main
check = resume.JournalGate.must_refetch
def slow_check(self, obj):
    time.sleep({SLOW_CHECK_S})
    return check(self, obj)
resume.JournalGate.must_refetch = slow_check
sys.exit(main(sys.argv[1:]))
"""


def test_noop_rerun_over_thousands_of_complete_files_answers_sigint_at_once(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    tree = {f"HCP_1200/{SUBJECT}/T1w/d{i // 100}/f{i}.txt": f"file {i}\n".encode() for i in range(NOOP_FILES)}
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    for key, data in tree.items():
        path = dest / key.removeprefix("HCP_1200/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    first = pull_sync(Selection(subjects=[SUBJECT], bucket=bucket), dest, endpoint_url=moto_url)
    assert (first.skipped_files, first.transferred_files) == (NOOP_FILES, 0)  # all complete, now journaled
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_FS_PULL, "pull", "--endpoint-url", moto_url, "--bucket", bucket,
         "--subject", SUBJECT, "--dest", str(dest), "--no-progress", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **FAKE_ENV},
    )
    try:
        _wait_for(lambda: _last_outcome(dest) == "running", 30)  # planned and journaled: skipping now
        time.sleep(0.3)  # well inside the skip phase (NOOP_FILES x SLOW_CHECK_S = 6 s)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        answered = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert answered < 2.0, answered
    assert _last_outcome(dest) == "interrupted"


def _last_outcome(dest: Path) -> str | None:
    last = status_of(dest).last_run
    return str(last["outcome"]) if last else None


def _wait_for(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
