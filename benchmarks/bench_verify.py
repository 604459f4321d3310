"""Verification benchmarks: ``hcpsync verify`` vs ``md5sum``, and a pull with vs without verify.

Not run in CI.  Usage::

    python -m benchmarks.bench_verify                 # ~2 GB tree, median of 3
    python -m benchmarks.bench_verify --subjects 2 --repeat 1 --skip-pull   # quick look

The tree is synth.py's release (``--subjects`` subjects at ``--scale``; 7 x scale 10 is
952 files, 2.04 GB, from 1 KB text files to 114 MB time series), ``.xdlm`` manifests
included, written once under ``benchmarks/work/verify/`` (gitignored) as
``<root>/hcp-openaccess/HCP_1200/<subject>/...``: that folder is both a destination tree
for ``hcpsync verify`` and what the local S3 origin (:mod:`benchmarks.origin`, nginx) serves.

1. **Hashing throughput**, warm page cache (every file read once first; the numbers are
   CPU-bound MD5, not disk): ``hcpsync verify --offline`` as a user runs it (a subprocess,
   wall clock with interpreter start-up, and the hash phase's own MB/s), against
   ``md5sum`` on the same files (one process, as commonly run) and ``xargs -P <cpus>
   md5sum`` (as parallel as hcpsync).
2. **Pull cost of verification**: the whole tree pulled from the nginx origin on loopback
   (no journal, default transfer settings) with ``verify=False`` and ``verify=True``,
   alternated, dest emptied and ``sync`` run between pulls; median of ``--repeat`` each.
3. **``pull --checksum`` over a complete tree** (issue 15): a copy of the tree (hard links) as a
   destination another tool made, pulled from the nginx origin with ``--checksum``: with
   ``--no-journal`` every file is hashed each run (the hashing throughput of a pull, next to
   section 1's); with a journal, the second run finds every MD5 in the checksum cache and hashes
   nothing.  Each run must transfer nothing and find nothing different.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hcpsync import Selection, TransferConfig
from hcpsync.api import pull
from hcpsync.demo.synth import SynthFile, synth_release
from hcpsync.store.s3 import StorageOptions

WORK = Path(__file__).resolve().parent / "work" / "verify"
BUCKET = "hcp-openaccess"
RELEASE = "HCP_1200"
CHUNK = 8 * 1024 * 1024


def subjects_for(n: int) -> list[str]:
    return [str(100307 + 101 * i) for i in range(n)]


def generate(root: Path, subjects: Sequence[str], scale: float) -> list[SynthFile]:
    """Write the tree (once: a stamp records what is there)."""
    files = synth_release(subjects, RELEASE, scale=scale)
    stamp = root / "stamp.json"
    nbytes = sum(f.size for f in files)
    want = {"subjects": list(subjects), "scale": scale, "files": len(files), "bytes": nbytes}
    base = root / BUCKET
    if (
        stamp.exists()
        and json.loads(stamp.read_text()) == want
        and all((base / f.key).is_file() and (base / f.key).stat().st_size == f.size for f in files)
    ):
        return files
    if root.exists():
        shutil.rmtree(root)
    t0 = time.monotonic()
    for f in files:
        path = base / f.key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for start in range(0, f.size, CHUNK):
                out.write(f.read(start, min(start + CHUNK, f.size)))
    stamp.write_text(json.dumps(want))
    print(f"generated {len(files)} files, {nbytes / 1e9:.2f} GB in {time.monotonic() - t0:.1f} s under {root}")
    return files


def warm(paths: Sequence[Path]) -> None:
    buf = bytearray(CHUNK)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def timed(cmd: Sequence[str], **kw: object) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child processes, stdout)."""
    t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
    r = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    dt, dc = time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return dt, dc, str(r.stdout)


def bench_hash(tree: Path, hashed: list[Path], nbytes: int, repeat: int) -> None:
    cpus = os.cpu_count() or 1
    warm(hashed)
    walls: dict[str, list[float]] = {"verify": [], "md5sum": [], "xargs": []}
    cpus_used: dict[str, list[float]] = {"verify": [], "md5sum": [], "xargs": []}
    verify_rate: list[float] = []
    # largest first and one file per md5sum, as hcpsync schedules its threads
    listing = "\0".join(str(p) for p in sorted(hashed, key=lambda p: -p.stat().st_size))
    for _ in range(repeat):
        for name, cmd, kw in (
            ("verify", [sys.executable, "-m", "hcpsync", "verify", "--dest", str(tree), "--offline", "--json",
                        "--no-progress"], {}),
            ("md5sum", ["md5sum", *map(str, hashed)], {}),
            ("xargs", ["xargs", "-0", "-P", str(cpus), "-n", "1", "md5sum"], {"input": listing}),
        ):
            dt, dc, out = timed(cmd, **kw)
            walls[name].append(dt)
            cpus_used[name].append(dc)
            if name == "verify":
                doc = json.loads(out)
                assert doc["ok"] and doc["counts"]["ok"] == len(hashed), doc["counts"]
                verify_rate.append(doc["hashed"]["mb_per_second"])
    mb = nbytes / 1e6
    print(f"\n== MD5 throughput: {len(hashed)} files, {nbytes / 1e9:.2f} GB, warm page cache, {cpus} CPUs, "
          f"median of {repeat}")
    med = statistics.median
    for name, label in (("verify", "hcpsync verify --offline"), ("md5sum", "md5sum (1 process)"),
                        ("xargs", f"xargs -P {cpus} -n 1 md5sum")):
        w, c = med(walls[name]), med(cpus_used[name])
        extra = f"   hash phase alone: {med(verify_rate):.0f} MB/s, {cpus} threads" if name == "verify" else ""
        print(f"{label:<26} {w:6.2f} s wall {mb / w:6.0f} MB/s   CPU {c:5.2f} s ({mb / c:4.0f} MB per CPU-s){extra}")
    start_wall, start_cpu, _ = timed([sys.executable, "-m", "hcpsync", "--version"])
    print(f"(hcpsync's start-up alone, in those figures: {start_wall:.2f} s wall, {start_cpu:.2f} s CPU)")
    print(f"(load average {os.getloadavg()[0]:.1f}; runs, wall s: "
          + "; ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}" for k, v in walls.items()) + ")")


def bench_pull(root: Path, subjects: Sequence[str], nbytes: int, repeat: int, dest: Path) -> None:
    from benchmarks.origin import Origin

    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    counts: dict[bool, tuple[int, int]] = {}
    cfg = TransferConfig()
    with Origin(root) as origin:
        opts = StorageOptions(endpoint_url=origin.url, no_sign_request=True)
        sel = Selection(subjects=tuple(subjects), bucket=BUCKET, release=RELEASE)
        for _ in range(repeat):
            for verify in (False, True):
                shutil.rmtree(dest, ignore_errors=True)
                os.sync()
                t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
                report = asyncio.run(pull(sel, dest, storage=opts, config=cfg, journal=False, verify=verify))
                times[verify].append(time.perf_counter() - t0)
                cpu[verify].append(_cpu(resource.RUSAGE_SELF) - c0)
                assert report.ok and report.transferred_bytes == nbytes, report.failed[:3]
                counts[verify] = (report.verified_files, report.unverified_files)
    shutil.rmtree(dest, ignore_errors=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    cpu_off, cpu_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    mb = nbytes / 1e6
    print(f"\n== pull of {nbytes / 1e9:.2f} GB from nginx on loopback to {dest} (default settings, no journal), "
          f"median of {repeat}")
    print(f"verify off  {off:6.2f} s  {mb / off:6.0f} MB/s  CPU {cpu_off:5.2f} s   "
          f"runs: {', '.join(f'{t:.2f}' for t in times[False])}")
    print(f"verify on   {on:6.2f} s  {mb / on:6.0f} MB/s  CPU {cpu_on:5.2f} s   "
          f"runs: {', '.join(f'{t:.2f}' for t in times[True])}"
          f"   ({counts[True][0]} verified, {counts[True][1]} size-checked only: nginx ETags are not MD5s)")
    print(f"cost of verification: {100 * (on - off) / off:+.1f} % wall time, {cpu_on - cpu_off:+.2f} s CPU "
          f"(hcpsync process, all threads; load average {os.getloadavg()[0]:.1f})")


def bench_checksum(root: Path, subjects: Sequence[str], hashed_bytes: int, listed: int, repeat: int,
                   dest: Path) -> None:
    """Section 3: ``hcpsync pull --checksum`` of a complete tree, a subprocess as a user runs it."""
    from benchmarks.origin import Origin

    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["cp", "-al", str(root / BUCKET / RELEASE), str(dest)], check=True)  # hard links: no copy
    warm([p for p in dest.rglob("*") if p.is_file()])
    runs: dict[str, list[tuple[float, float, dict[str, object]]]] = {"no journal": [], "journal, cached": []}
    with Origin(root) as origin:
        base = [sys.executable, "-m", "hcpsync", "pull", *(f"--subject={s}" for s in subjects), "--bucket", BUCKET,
                "--release", RELEASE, "--dest", str(dest), "--endpoint-url", origin.url, "--no-sign-request",
                "--checksum", "--json", "--no-progress"]
        for _ in range(repeat):
            runs["no journal"].append(_checked(timed([*base, "--no-journal"]), listed))
        _checked(timed([*base, "--reset-journal"]), listed)  # fills the journal's checksum cache
        for _ in range(repeat):
            runs["journal, cached"].append(_checked(timed(base), 0))
    shutil.rmtree(dest, ignore_errors=True)
    mb, med = hashed_bytes / 1e6, statistics.median
    print(f"\n== pull --checksum of a complete tree ({listed} manifest-listed files, {hashed_bytes / 1e9:.2f} GB), "
          f"warm page cache, median of {repeat}")
    for name, got in runs.items():
        w, c = med(r[0] for r in got), med(r[1] for r in got)
        rate = f"{mb / w:6.0f} MB/s  {mb / c:4.0f} MB per CPU-s" if name == "no journal" else "(nothing hashed)"
        print(f"{name:<16} {w:6.2f} s wall  CPU {c:5.2f} s  {rate}   runs: {', '.join(f'{r[0]:.2f}' for r in got)}")


def _checked(run: tuple[float, float, str], hashed: int) -> tuple[float, float, dict[str, object]]:
    """A ``pull --checksum`` run that hashed ``hashed`` or more files, transferred and found nothing."""
    wall, cpu, out = run
    doc = json.loads(out)
    summed = doc["checksum"]
    assert doc["ok"] and doc["transferred"]["files"] == 0 and summed["differed"] == 0, (doc["transferred"], summed)
    assert summed["hashed"] >= hashed and (hashed or summed["hashed"] == 0), summed
    return wall, cpu, doc


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_verify", description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=7, help="synthetic subjects (default 7: ~2 GB at scale 10)")
    ap.add_argument("--scale", type=float, default=10.0, help="synth.py size scale (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed (default 3)")
    ap.add_argument("--skip-pull", action="store_true", help="only the hashing benchmark")
    ap.add_argument("--checksum", action="store_true", help="only sections 1 and 3 (pull --checksum)")
    ap.add_argument("--pull-dest", type=Path, default=WORK.parent / "verify-pull-dest",
                    help="where the pulls write (emptied before each; default benchmarks/work/verify-pull-dest)")
    args = ap.parse_args(argv)
    subjects = subjects_for(args.subjects)
    files = generate(WORK, subjects, args.scale)
    tree = WORK / BUCKET / RELEASE
    # what verify hashes: every manifest-listed file (not the manifests, not the release notes)
    listed = [f for f in files if not f.is_manifest and "/release-notes/" not in f.key]
    hashed = [WORK / BUCKET / f.key for f in listed]
    bench_hash(tree, hashed, sum(f.size for f in listed), args.repeat)
    if args.checksum:
        bench_checksum(WORK, subjects, sum(f.size for f in listed), len(listed), args.repeat, args.pull_dest)
    elif not args.skip_pull:
        bench_pull(WORK, subjects, sum(f.size for f in files), args.repeat, args.pull_dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
