"""The journal's per-file queries use an index (EXPLAIN QUERY PLAN), and a no-op re-run of
thousands of complete files answers Ctrl-C at once (a real subprocess)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hcpsync.errors import ObjectChangedError
from hcpsync.journal import Journal
from hcpsync.models import Part, Plan, PlannedObject, Selection
from hcpsync.resume import JournalObserver

SUBJECT = "100307"


def _objects(n: int) -> list[PlannedObject]:
    return [PlannedObject(f"HCP_1200/{SUBJECT}/T1w/f{i}", 100 + i, f"{i:032x}", f"{SUBJECT}/T1w/f{i}") for i in range(n)]


def _scans(db: sqlite3.Connection, sql: str) -> list[str]:
    """The steps of ``sql``'s query plan that read a whole table (``SCAN objects``)."""
    return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}") if row[3].startswith("SCAN")]


def _per_file_statements(jnl: Journal, objects: list[PlannedObject], dest: Path) -> list[str]:
    """Every statement the journal runs through the per-file hooks (bound values expanded)."""
    statements: list[str] = []
    jnl._db.set_trace_callback(statements.append)
    observer, cache = JournalObserver(jnl), jnl.checksum_cache()
    for o in objects:
        path = dest / o.relpath
        temp = path.with_name(path.name + ".hcpsync-part")  # never created: resume drops the ranges
        observer.is_complete(o, path)
        observer.part_done(Part(o, 0, 0, o.size, True), temp)
        observer.resume_ranges(o, temp)
        observer.file_done(o, path)
        observer.file_skipped(o, path)
        cache.put(o.relpath, o.size, 123, "0" * 32)
        cache.get(o.relpath, o.size, 123)
        jnl.completed_info(o.key)
        jnl.flush()
        observer.file_failed(o, ObjectChangedError("changed"), False)
    jnl._db.set_trace_callback(None)
    return [s for s in dict.fromkeys(statements) if s.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]


def test_every_per_file_query_of_the_journal_uses_an_index(tmp_path: Path) -> None:
    objects = _objects(300)
    jnl = Journal.open(tmp_path / "journal.sqlite")
    try:
        jnl.start_run(Plan(Selection(subjects=(SUBJECT,)), tuple(objects), ()))
        statements = _per_file_statements(jnl, objects, tmp_path / "dest")
        # the hooks did reach the database, the checksum cache's lookups by path among them
        assert any("WHERE relpath=" in s for s in statements) and any("FROM parts" in s for s in statements)
        scanning = {s: _scans(jnl._db, s) for s in statements}
        assert {s: scans for s, scans in scanning.items() if scans} == {}
    finally:
        jnl.close()


def test_a_journal_written_before_the_index_gets_it_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    jnl = Journal.open(path)
    jnl.start_run(Plan(Selection(subjects=(SUBJECT,)), tuple(_objects(50)), ()))
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
