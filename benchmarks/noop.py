"""No-op re-run benchmark: N files already complete at their final paths, with a journal that
says so, then ``hcpsync pull`` of the same selection again (it should make no GET).

    python -m benchmarks.noop --files 5000,20000,100000 [--runs 3] [--json]

Keys are the HCP-shaped synthetic keys of :mod:`benchmarks.scale` (12,863 real keys of one
subject repeated over synthetic subjects ``200000``, ``200001``, ...).  Each object's bytes are
its key, so its MD5 is known without reading anything; the listing gives that MD5 as the ETag,
as S3 does for a single-PUT object, so the pull's verifier consults its checksum cache for
every file (the path this benchmark is about).

The listing comes from :class:`benchmarks.s3listing.Service` (the origin's listing half),
served from a thread of this process: it lists 100k keys in well under a second, moto takes
minutes.  No object is ever served: a GET would fail the run.

Per N, once (kept in ``work/noop/<N>/``): the files at ``dest/<relpath>``, and a seed journal
written through :class:`hcpsync.journal.Journal` from ``hcpsync.plan()`` of that listing, every
file complete, synced and with its verified MD5 (what a finished verified pull leaves).  Each
timed run starts from a fresh copy of the seed journal; timed = the ``hcpsync pull`` process
from spawn to exit (interpreter start-up, listing, planning, journal, skipping), with its CPU
from ``wait4``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hcpsync
from hcpsync.journal import Journal, default_journal_path

from .measure import ProcResult, run_measured
from .s3listing import Bucket, Service, make_server
from .scale import RELEASE, base_keys, synthetic_keys, synthetic_subjects
from .workloads import DEFAULT_WORK_DIR

BUCKET = "hcp-noop"
WORK = DEFAULT_WORK_DIR / "noop"


class Md5Bucket(Bucket):
    """A listed bucket whose ETags are the objects' MD5s (an object's bytes are its key)."""

    def etag(self, i: int) -> str:
        return f'"{hashlib.md5(self.keys[i].encode(), usedforsecurity=False).hexdigest()}"'


class Listing:
    """The listing service for the keys of one N, in a thread of this process."""

    def __init__(self, n: int) -> None:
        keys = sorted(synthetic_keys(n, base_keys()))
        bucket = Md5Bucket(BUCKET, 1577836801.0, keys, [len(k.encode()) for k in keys], [1577836801] * len(keys))
        empty = WORK / "empty-root"
        empty.mkdir(parents=True, exist_ok=True)
        service = Service(empty)
        service.buckets = {BUCKET: bucket}
        self.server = make_server(service)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def selection(n: int) -> hcpsync.Selection:
    return hcpsync.Selection(subjects=tuple(synthetic_subjects(n, len(base_keys()))), bucket=BUCKET, release=RELEASE)


def pull_argv(n: int, url: str, dest: Path) -> list[str]:
    subjects = [a for s in synthetic_subjects(n, len(base_keys())) for a in ("--subject", s)]
    return [sys.executable, "-m", "hcpsync", "pull", "--endpoint-url", url, "--no-sign-request",
            "--bucket", BUCKET, "--release", RELEASE, *subjects, "--dest", str(dest), "--no-progress", "--json"]


def _write_files(plan: hcpsync.Plan, dest: Path) -> Iterator[tuple[hcpsync.PlannedObject, int, str]]:
    """Write every planned file (its bytes: its key); yield (object, mtime_ns, md5)."""
    for o in plan.objects:
        path = dest / o.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        data = o.key.encode()
        path.write_bytes(data)
        yield o, os.stat(path).st_mtime_ns, hashlib.md5(data, usedforsecurity=False).hexdigest()


def prepare(n: int, url: str) -> tuple[Path, Path]:
    """The complete destination for N and its seed journal (made once)."""
    root = WORK / str(n)
    dest, seed = root / "dest", root / "journal.seed.sqlite"
    if seed.exists():
        return dest, seed
    shutil.rmtree(root, ignore_errors=True)
    plan = asyncio.run(hcpsync.plan(selection(n), endpoint_url=url, no_sign_request=True))
    assert len(plan.objects) == n, (len(plan.objects), n)
    tmp = root / "journal.tmp.sqlite"
    jnl = Journal.open(tmp)
    jnl.start_run(plan)
    for o, mtime_ns, md5 in _write_files(plan, dest):
        jnl.record_complete(o, mtime_ns, md5)
    jnl.end_run("complete", {"transferred_files": n})
    jnl.close()
    db = sqlite3.connect(tmp)  # what a verified pull and its sync points leave
    db.execute("UPDATE objects SET verified_mtime_ns=mtime_ns, synced=1")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    tmp.replace(seed)
    return dest, seed


def fresh_journal(seed: Path, dest: Path) -> None:
    path = default_journal_path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(seed, path)


def timed_rerun(n: int, url: str, dest: Path, seed: Path, log_dir: Path) -> ProcResult:
    fresh_journal(seed, dest)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    res = run_measured([pull_argv(n, url, dest)], env, log_dir, timeout=3600)
    report = json.loads(res.stdout) if res.stdout.strip() else {}
    if res.returncode != 0 or report.get("skipped", {}).get("files") != n or report.get("transferred", {}).get("files"):
        raise SystemExit(f"N={n}: not a clean no-op re-run (exit {res.returncode}): {res.stdout[:500]} {res.stderr_tail}")
    return res


def bench(n: int, runs: int) -> dict[str, Any]:
    with Listing(n) as listing:
        dest, seed = prepare(n, listing.url)
        results = [timed_rerun(n, listing.url, dest, seed, WORK / str(n) / "logs") for _ in range(runs)]
    wall = statistics.median(r.wall_s for r in results)
    cpu = statistics.median(r.cpu_s for r in results)
    return {"files": n, "runs": runs, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "wall_s_per_1k": round(wall / n * 1000, 3), "cpu_s_per_1k": round(cpu / n * 1000, 3),
            "wall_s_all": [round(r.wall_s, 2) for r in results], "cpu_s_all": [round(r.cpu_s, 2) for r in results]}


def table(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| files | wall s | CPU s | wall s / 1,000 files | CPU s / 1,000 files |", "| ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {r['files']:,} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['wall_s_per_1k']:.3f} | {r['cpu_s_per_1k']:.3f} |"
            for r in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.noop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", default="5000,20000,100000", help="comma-separated N (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=1, help="timed runs per N; the median is reported")
    ap.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    args = ap.parse_args(argv)
    rows = []
    for n in (int(x.replace("_", "")) for x in args.files.split(",")):
        rows.append(bench(n, args.runs))
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
        else:
            print(f"N={n:,}: wall {rows[-1]['wall_s']} s, CPU {rows[-1]['cpu_s']} s", file=sys.stderr, flush=True)
    if not args.json:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
