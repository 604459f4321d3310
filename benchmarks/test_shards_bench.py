"""Checks of the shards benchmark's accounting (:mod:`benchmarks.shards`) on synthetic access logs
and reports; no origin, no hcpsync run (< 1 s).  Run with ``pytest benchmarks/test_shards_bench.py``."""

from __future__ import annotations

from benchmarks import shards
from benchmarks.measure import LogLine

BUCKET = "hcp-openaccess"
DATA, BIG, MAN = "HCP_1200/100206/T1w/a.nii", "HCP_1200/100206/big.nii", "HCP_1200/100206/.xdlm/100206_p.json"


def _get(key: str, nbytes: int, start: int = 0, status: int = 200, method: str = "GET") -> LogLine:
    return LogLine(0.0, method, f"/{BUCKET}/{key}", status, nbytes, start, 1)


def test_once_ranges_and_twice() -> None:
    planned = {DATA: 10, BIG: 100, MAN: 5}
    lines = [_get(DATA, 10), _get(BIG, 50, 0, 206), _get(BIG, 50, 50, 206), _get(MAN, 5), _get(MAN, 5),
             _get(f"{BUCKET}/", 300), _get(DATA, 0, status=404), _get(DATA, 0, method="HEAD")]
    lines[5] = LogLine(0.0, "GET", f"/{BUCKET}?list-type=2", 200, 300, 0, 1)
    out = shards.fetch_check(lines, planned, BUCKET)
    assert out["data"] == {"once": 2, "twice": 0, "partial": 0, "missing": 0, "gets": 3, "examples": {}}
    assert (out["manifests"]["twice"], out["manifests"]["gets"]) == (1, 2)
    assert out["listings"] == 1 and out["other_statuses"] == [404] and not out["exactly_once"]


def test_missing_partial_overlap_extra() -> None:
    planned = {DATA: 10, BIG: 100, MAN: 0}
    lines = [_get(BIG, 60, 0, 206), _get(BIG, 60, 40, 206), _get(MAN, 0), _get("HCP_1200/100206/other", 3)]
    out = shards.fetch_check(lines, planned, BUCKET)
    assert out["data"]["missing"] == 1 and out["data"]["twice"] == 1  # 40-60 served twice
    assert out["manifests"]["once"] == 1  # a zero-size object GET once
    assert out["extra"] == {"count": 1, "examples": ["HCP_1200/100206/other"]}
    partial = shards.fetch_check([_get(BIG, 30, 0, 206)], {BIG: 100}, BUCKET)
    assert partial["data"]["partial"] == 1 and not partial["exactly_once"]
    once = shards.fetch_check([_get(BIG, 100)], {BIG: 100}, BUCKET)
    assert once["exactly_once"]


def test_pull_report_and_rates() -> None:
    doc = ('{"ok": false, "planned": {"files": 3, "bytes": 30}, "transferred": {"files": 2, "bytes": 20}, '
           '"skipped": {"files": 0, "bytes": 0}, "failed": [{"key": "k", "reason": "r"}], "elapsed_seconds": 2.0}')
    rep = shards.pull_report("noise\n" + doc)
    assert (rep["transferred_bytes"], rep["failed"], rep["elapsed_s"]) == (20, 1, 2.0)
    assert shards.pull_report("no json") == {}
    assert shards.shard_rates([{"transferred_bytes": 80_000_000, "elapsed_s": 2.0}, {}]) == [40.0, None]
    assert shards.rate_bytes("40MB/s") == 40_000_000 and shards.rate_bytes("1GiB") == 2**30
