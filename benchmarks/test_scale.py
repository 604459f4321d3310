"""Checks of the release-scale harness (:mod:`benchmarks.scale`): parsing, targets, and a small
end-to-end run against this checkout's hcpsync (~20 s).

Not part of the project's test suite (pytest's testpaths is ``tests``); run it with
``pytest benchmarks/test_scale.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import scale


def test_files_in_text() -> None:
    assert scale.files_in_text("s3://hcp-openaccess/HCP_1200/: 30000 files, 0 B (0 bytes)\n  200000: 12863 files") == 30000
    assert scale.files_in_text("s3://b/HCP_1200/: 1,234,567 files, 0 B\n") == 1_234_567
    lines = '{"type": "object", "key": "k"}\n{"type": "summary", "files": 42, "bytes": 0}\n'
    assert scale.files_in_text(lines) == 42
    assert scale.files_in_text("internal error: BrokenPipeError") is None


def test_pull_report() -> None:
    doc = '{"ok": true, "planned": {"files": 7, "bytes": 0}, "transferred": {"files": 0, "bytes": 0}, ' \
          '"skipped": {"files": 7, "bytes": 0}, "failed": [], "verified": 7, "requests": 3, "notes": ["a"]}'
    rep = scale.pull_report(doc)
    assert (rep["planned"], rep["skipped"], rep["transferred"], rep["failed"], rep["notes"]) == (7, 7, 0, 0, 1)
    assert scale.pull_report("not json") == {}


def _plan(objects: int, wall: float, rss: float, ok: bool = True) -> dict[str, Any]:
    return {"objects": objects, "wall_s": wall, "cpu_s": wall, "peak_rss_mb": rss, "ok": ok, "returncode": 0,
            "planned": objects if ok else None}


def _met(rows: list[dict[str, Any]], start: str) -> list[bool | None]:
    return [r["met"] for r in rows if r["target"].startswith(start)]


def test_targets_plan_rss() -> None:
    runs = [_plan(100_000, 10, 200), _plan(1_000_000, 105, 210), _plan(3_000_000, 340, 232)]
    res = {"plan-rss": {"runs": runs, "growth": scale.growth(runs), "rss_spread": scale.rss_spread(runs)}}
    rows = scale.targets(res)
    assert _met(rows, "plan peak RSS, 1,000,000") == [True]
    assert _met(rows, "plan peak RSS vs 1,000,000") == [False]  # 3M is 10.5 % above
    assert _met(rows, "plan growth 100,000") == [True]  # 10.5x for 10x
    assert _met(rows, "plan growth 1,000,000") == [True]  # 3.24x for 3x: <= 3.3x
    runs[2]["wall_s"] = 357  # 3.4x
    res["plan-rss"]["growth"] = scale.growth(runs)
    assert _met(scale.targets(res), "plan growth 1,000,000") == [False]


def test_targets_other_scenarios() -> None:
    res: dict[str, Any] = {
        "plan-15m": {"objects": 14_316_519, "subjects": 1113, "page_delay_s": 0.3, "ok": True, "wall_s": 590.0,
                     "peak_rss_mb": 301.0, "lists_in_flight_max": 64},
        "ttfb": {"subjects": 1113, "first_get_s": 1.5, "first_data_get_s": None},
    }
    pulls = {"objects": 1_000_000, "first": {"ok": True, "peak_rss_mb": 250.0},
             "again": {"ok": True, "peak_rss_mb": 260.0, "gets": 0, "manifest_gets": 1, "wall_s": 10.0},
             "noop_rate_objects_per_s": 100_000}
    res["pull-rss"] = res["noop"] = pulls
    rows = scale.targets(res)
    assert [r["met"] for r in rows if r["target"].startswith("plan 14,316,519")] == [True, False, True]
    assert _met(rows, "time to first GET") == [True]
    assert _met(rows, "pull peak RSS") == [True, True]
    assert _met(rows, "no-op re-run of 1,000,000 objects: GETs") == [False]  # a manifest GET counts
    assert _met(rows, "no-op re-run of 1,000,000 objects: reconciliation") == [True]
    res["ttfb"]["first_get_s"] = None
    assert _met(scale.targets(res), "time to first GET") == [False]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("scale")
    hc = scale.Hcpsync.probe(scale.default_hcpsync(), scale.MAX_AS_GB)
    opts = scale.Options(hc, work, Path("/dev/shm") if os.path.isdir("/dev/shm") else work, plan_sizes=[2_000, 13_000],
                         plan_subjects=2, ttfb_subjects=2, pull_objects=3_000, page_delay=0.05, timeout=120,
                         ttfb_timeout=60, log=lambda msg: None)
    return scale.run(opts, scale.SCENARIOS)


def test_small_run_plans(small_run: dict[str, Any]) -> None:
    runs = small_run["results"]["plan-rss"]["runs"]
    assert [(r["objects"], r["planned"], r["subjects"], r["ok"]) for r in runs] == [(2000, 2000, 1, True),
                                                                                     (13000, 13000, 2, True)]
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mb"] > 10 and r["lists"] >= 2 for r in runs)
    p15 = small_run["results"]["plan-15m"]
    assert (p15["objects"], p15["planned"], p15["page_delay_s"]) == (2 * 12_863, 2 * 12_863, 0.05)
    assert p15["wall_s"] >= 0.05 * p15["lists"] / max(1, p15["lists_in_flight_max"])


def test_small_run_ttfb(small_run: dict[str, Any]) -> None:
    t = small_run["results"]["ttfb"]
    assert t["first_get_s"] is not None and 0 < t["first_list_s"] <= t["first_get_s"] < 60
    assert not t["exited_before_first_get"] and not t["killed_after_60s"]
    assert t["returncode"] is not None and t["exit_after_sigint_s"] is not None


def test_small_run_pulls(small_run: dict[str, Any]) -> None:
    p = small_run["results"]["pull-rss"]
    assert "noop" not in small_run["results"]  # one pair of pulls serves both
    first, again = p["first"], p["again"]
    assert first["ok"] and again["ok"]
    assert first["gets"] == 0 and first["report"]["transferred"] == 3000  # zero-size objects: no GET
    assert again["gets"] + again["manifest_gets"] == 0 and again["report"]["skipped"] == 3000
    assert not Path(p["dest"]).exists()
    targets = {t["target"]: t["met"] for t in small_run["targets"]}
    assert targets["no-op re-run of 3,000 objects: GETs"] is True
    assert "$PORT" in small_run["commands"]["noop"] and "$DEST" in small_run["commands"]["noop"]
