"""Scale benchmark: planning and journaling N synthetic HCP-shaped objects, no network.

Run each size in a fresh process (peak RSS is the process's high-water mark)::

    python -m benchmarks.scale --objects 1000000 --json

Keys are the 12,863 real keys of ``shared/workloads/HCP_1200-100206-keys.txt`` repeated over
synthetic subjects (``100206`` replaced by ``200000``, ``200001``, ...; also inside file names,
as in ``100206_3T_...``), so paths have HCP's depth and length.  Phases, each timed:

1. ``plan``: what :func:`hcpsync.planning.listing.build_plan` does once the listing is in:
   ``check_relpath`` on every key, :func:`hcpsync.planning.listing._drop_clashes`, the sort by key,
   and the :class:`hcpsync.models.Plan` (with ``total_bytes``);
2. ``journal_start``: ``Journal.open`` on a new file and ``start_run(plan)`` (the plan's
   rows inserted);
3. ``journal_complete``: ``record_complete`` for every object, then ``flush()``;
4. ``journal_restart``: the journal closed, opened again and ``start_run(plan)`` once more,
   as a resumed pull of the same selection does (every row already there).

Peak RSS (``VmHWM``) is recorded after each phase.  The synthetic keys are generated lazily (the harness
keeps no list of them); generating them alone (``keys_s``) is timed separately and is
included in the ``plan`` phase's time, as a listing's parsing would be.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hcpsync.journal import Journal
from hcpsync.models import Plan, PlannedObject, Selection
from hcpsync.paths import check_relpath
from hcpsync.planning.listing import _drop_clashes, glob_filter

from .workloads import DEFAULT_WORK_DIR, default_keys_file, read_keys

SUBJECT = "100206"
RELEASE = "HCP_1200"


def rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (of this process's own memory since its exec).

    Not ``ru_maxrss``: started by vfork + exec from a bigger Python, it starts at the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_keys() -> list[str]:
    return [k for k in read_keys(default_keys_file()) if k.startswith(f"{RELEASE}/{SUBJECT}/")]


def synthetic_subjects(n: int, per_subject: int) -> list[str]:
    return [str(200000 + s) for s in range(-(-n // per_subject))]


def synthetic_keys(n: int, base: list[str]) -> Iterator[str]:
    """``n`` keys shaped like HCP keys (generated lazily: the harness holds no key list)."""
    done = 0
    for sid in synthetic_subjects(n, len(base)):
        for k in base[: n - done]:
            yield k.replace(SUBJECT, sid)
        done += min(len(base), n - done)


class _Phase:
    """Times a phase (wall and this process's CPU) and records the RSS high-water mark after it."""

    def __init__(self, out: dict[str, Any], name: str) -> None:
        self.out, self.name = out, name

    def __enter__(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.out["phases"][self.name] = round(time.perf_counter() - self.t0, 3)
        self.out["cpu"][self.name] = round(time.process_time() - self.c0, 3)
        self.out["rss_mib"][self.name] = round(rss_mib(), 1)


def run(n: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"objects": n, "phases": {}, "cpu": {}, "rss_mib": {}}
    base = base_keys()
    subjects = synthetic_subjects(n, len(base))
    t0 = time.perf_counter()
    for _ in synthetic_keys(n, base):
        pass
    out["keys_s"] = round(time.perf_counter() - t0, 3)
    out["rss_mib"]["keys"] = round(rss_mib(), 1)

    # -- 1. planning, as build_plan does once the listing is in
    with _Phase(out, "plan"):
        rel_prefix = RELEASE + "/"
        objects: list[PlannedObject] = []
        for i, key in enumerate(synthetic_keys(n, base)):
            rel = key[len(rel_prefix) :]
            if not glob_filter(rel, (), ()):
                continue
            check_relpath(rel)
            objects.append(PlannedObject(key, 1000 + (i * 7919) % 2_000_000, f'"{i:032x}"', rel))
        objects, clashes = _drop_clashes(objects)
        objects.sort(key=lambda o: o.key)
        plan = Plan(Selection(subjects=tuple(subjects), release=RELEASE), tuple(objects), tuple(clashes))
        del objects
        out["bytes"] = plan.total_bytes
    out["planned"] = len(plan.objects)
    out["clashes"] = len(plan.rejected)

    # -- 2-4. the journal
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"journal-{n}.sqlite"
    _remove_journal(path)
    try:
        with _Phase(out, "journal_start"):
            jnl = Journal.open(path)
            jnl.start_run(plan)
        with _Phase(out, "journal_complete"):
            mtime = time.time_ns()
            for o in plan.objects:
                jnl.record_complete(o, mtime)
            jnl.flush()
        jnl.end_run("complete", {})
        jnl.close()
        with _Phase(out, "journal_restart"):
            jnl = Journal.open(path)
            jnl.start_run(plan)
            jnl.close()
        out["journal_bytes"] = sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))
    finally:
        _remove_journal(path)
    out["total_s"] = round(sum(out["phases"].values()), 3)
    out["total_cpu_s"] = round(sum(out["cpu"].values()), 3)
    out["peak_rss_mib"] = round(rss_mib(), 1)
    return out


def _remove_journal(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, required=True)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK_DIR / "scale")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.objects, args.work)
    if args.json:
        print(json.dumps(res))
    else:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
