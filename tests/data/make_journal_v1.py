"""Writes ``journal-v1.sqlite``: a journal of schema version 1, as hcpsync before the plan moved
into the journal (commit 5ecadb3) left it after an interrupted pull.  Run with that version
(``git worktree add /tmp/v1 5ecadb3``; ``PYTHONPATH=/tmp/v1 python tests/data/make_journal_v1.py``);
kept so the fixture can be made again, and to show what it holds:

* ``HCP_1200/100307/T1w/a.nii``   1,000 bytes, complete;
* ``HCP_1200/100307/T1w/big.nii`` 3 MiB + 5 bytes, ranges [0, 1 MiB) and [1 MiB, 2 MiB) recorded;
* ``HCP_1200/100307/T1w/c.nii``   2,000 bytes, planned, nothing done.

Contents are ``tests.conftest.det_bytes(size, key)``; ETags their MD5s (what moto gives); every
record is marked synced, so a different boot ID changes nothing.
"""

import hashlib
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hcpsync.journal import Journal
from hcpsync.journal.db import SCHEMA_VERSION
from hcpsync.models import Part, Plan, PlannedObject, Selection
from tests.conftest import det_bytes

MIB = 1024 * 1024
SIZES = {"HCP_1200/100307/T1w/a.nii": 1000, "HCP_1200/100307/T1w/big.nii": 3 * MIB + 5,
         "HCP_1200/100307/T1w/c.nii": 2000}


def main() -> None:
    assert SCHEMA_VERSION == 1, "run with hcpsync at commit 5ecadb3"
    out = Path(__file__).with_name("journal-v1.sqlite")
    objs = []
    for key, size in SIZES.items():
        data = det_bytes(size, key)
        objs.append(PlannedObject(key, size, hashlib.md5(data).hexdigest(), key.split("/", 1)[1]))
    jnl = Journal.open(out, reset=True)
    jnl.bind_destination(Path("/tmp/hcpsync-v1-dest"), True)
    jnl.start_run(Plan(Selection(subjects=("100307",), paths=("T1w",)), tuple(objs)))
    jnl.record_complete(objs[0], 1_700_000_000_000_000_000)
    big = det_bytes(objs[1].size, objs[1].key)
    for i in (0, 1):
        part = Part(objs[1], i, i * MIB, (i + 1) * MIB, True)
        jnl.record_part(part, zlib.crc32(big[part.start:part.end]))
    jnl.mark_synced(jnl.current_seq())
    jnl.end_run("interrupted", {})
    jnl._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    jnl._db.execute("PRAGMA journal_mode=DELETE")
    jnl.close()


if __name__ == "__main__":
    main()
