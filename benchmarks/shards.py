"""Shards at once on one destination (issue 14): aggregate bandwidth and exactly-once fetching.

For each N of ``--shards`` (default 2,4) the benchmark starts N ``hcpsync pull ... --shard K/N
--shard-by key --max-bandwidth B --dest D`` processes at once (as a SLURM array would: separate
processes, one shared destination) against :class:`benchmarks.origin.Origin` (nginx serving a
workload as S3, access log on), and measures:

* **wall**: from the spawn of the first shard to the exit of the last
  (:func:`benchmarks.measure.run_measured`: interpreter start-up and listing included);
* **bytes landed**: the sum of the shards' ``transferred.bytes`` (their ``--json`` reports);
  the destination is checked too (every key present at its size);
* **aggregate** = bytes / wall, and the **ratio** aggregate / (N x B); target >= 0.9;
* **GETs at the origin** per key (the access log, 2xx GETs, byte intervals from ``Range`` and
  ``$body_bytes_sent``): *once* (the served intervals cover the object exactly, no byte twice),
  *twice* (some byte served more than once, or a zero-size object GET more than once),
  *partial* (bytes missing), *missing* (no GET), *extra* (GET of a key not planned), counted for
  the data files and the ``.xdlm`` manifests apart; target: every planned key once;
* beside them, to explain a miss: the **partition bound** (the best ratio the shards' split of the
  bytes allows: total / (N x largest shard's bytes)), each shard's own rate (its report's bytes /
  ``elapsed_seconds``) against B, the client CPU (all shards) and the origin's, and ``hcpsync
  status --json``'s state of each shard afterwards.

The workloads hold one subject (``subject``: 12,863 keys, 3.81 GB; ``large``: 4 x 1 GiB + 3
manifests), so sharding by subject would put everything in one shard: every run uses ``--shard-by
key`` (``crc32(key) mod N``), which balances keys, not bytes (``large`` with N=4 leaves two shards
empty). ``--dask`` runs the same through one ``hcpsync pull ... --dask local:N --shards N`` (a Dask
LocalCluster of N processes; its wall includes starting the cluster), when ``hcpsync pull --help``
lists ``--dask``; otherwise it is reported as not run.

Destinations go under ``--dest-root`` (default /dev/shm: the VM's disk writes ~240 MB/s, which
would cap the aggregate before the shards do) and are deleted after each run. The workload trees
are only read (``--work``, default ``benchmarks/work``; page cache warmed before timing).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import measure
from .measure import AccessLog, LogLine
from .origin import Origin, parse_size
from .scale import child_env, default_hcpsync
from .workloads import DEFAULT_WORK_DIR, Workload

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MB = 1_000_000
TARGET_RATIO = 0.9
SHARD_BY = "key"
WORKLOADS = ("subject", "large", "subject-tiny", "large-tiny")  # the -tiny ones: smoke runs
#: per-shard cap by workload: N x B well below what 2 shared cores move, runs of ~15-50 s
DEFAULT_RATES = {"subject": "40MB/s", "large": "100MB/s", "subject-tiny": "20MB/s", "large-tiny": "40MB/s"}
DEST_ROOT = Path("/dev/shm")
MANIFEST_DIR = "/.xdlm/"
OUT_DIR = BENCH_DIR / "ab" / "issue14-shards"


@dataclass
class Options:
    """What to run: workloads, shard counts, the per-shard cap, the hcpsync command."""

    workloads: Sequence[str]
    shards: Sequence[int]
    rate: str | None  # None: DEFAULT_RATES of each workload
    runs: int
    dask: bool
    argv0: list[str]
    pull_args: Sequence[str] = ()  # --pull-args: more options for every pull (e.g. --no-verify)
    work: Path = DEFAULT_WORK_DIR
    dest_root: Path = DEST_ROOT
    timeout: float = 600.0
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    def rate_of(self, workload: str) -> str:
        return self.rate or DEFAULT_RATES.get(workload, "40MB/s")


def rate_bytes(text: str) -> int:
    """``40MB/s`` -> 40_000_000 bytes/s (``/s`` optional; units as :func:`origin.parse_size`)."""
    return parse_size(text.strip().removesuffix("/s").removesuffix("/S"))


# ------------------------------------------------------------------------------ commands


def pull_has(argv0: Sequence[str], flag: str) -> bool:
    """Whether ``hcpsync pull --help`` lists ``flag``."""
    out = subprocess.run([*argv0, "pull", "--help"], capture_output=True, text=True, env=child_env(),
                         cwd=REPO_ROOT, timeout=120, check=False)
    return any(word.strip("[],") == flag for word in out.stdout.split())


def selection_args(wl: Workload, url: str) -> list[str]:
    """The workload's one subject from the origin, unsigned (as runner.py's hcpsync runs)."""
    release, subject = wl.prefix.strip("/").split("/")[:2]
    return ["--endpoint-url", url, "--no-sign-request", "--bucket", wl.bucket, "--release", release,
            "--subject", subject]


def shard_argv(argv0: Sequence[str], wl: Workload, url: str, dest: Path, k: int, n: int, rate: str,
               extra: Sequence[str] = ()) -> list[str]:
    """One SLURM-style shard: ``pull ... --shard K/N --shard-by key --max-bandwidth B``."""
    return [*argv0, "pull", *selection_args(wl, url), "--dest", str(dest), "--no-progress", "--json",
            "--shard", f"{k}/{n}", "--shard-by", SHARD_BY, "--max-bandwidth", rate, *extra]


def dask_argv(argv0: Sequence[str], wl: Workload, url: str, dest: Path, n: int, rate: str,
              extra: Sequence[str] = ()) -> list[str]:
    """All N shards as tasks of a Dask LocalCluster of N processes, from one command."""
    return [*argv0, "pull", *selection_args(wl, url), "--dest", str(dest), "--no-progress", "--json",
            "--dask", f"local:{n}", "--shards", str(n), "--shard-by", SHARD_BY, "--max-bandwidth", rate, *extra]


def quoted(argv: Sequence[str], url: str, dest: Path) -> str:
    """A command as the report quotes it: ``$PORT`` and ``$DEST`` placeholders."""
    port = url.rsplit(":", 1)[-1]
    return shlex.join(argv).replace(f":{port}", ":$PORT").replace(str(dest), "$DEST")


# ------------------------------------------------------------------------------ GETs at the origin


@dataclass
class KeyGets:
    """The successful GETs of one key: how many, bytes served, and the byte intervals."""

    gets: int = 0
    served: int = 0
    intervals: list[tuple[int, int]] = field(default_factory=list)

    def covered(self) -> int:
        """Bytes of the object served at least once (the union of the intervals)."""
        total, end = 0, 0
        for start, stop in sorted(self.intervals):
            if stop > end:
                total += stop - max(start, end)
                end = stop
        return total


def gets_by_key(lines: Iterable[LogLine], bucket: str) -> dict[str, KeyGets]:
    """2xx object GETs of the access log, by key (``/<bucket>/<key>`` -> ``key``)."""
    out: dict[str, KeyGets] = defaultdict(KeyGets)
    head = f"/{bucket}/"
    for ln in lines:
        if ln.method != "GET" or ln.is_listing or not 200 <= ln.status < 300:
            continue
        path = ln.key_path
        key = path[len(head):] if path.startswith(head) else path
        kg = out[key]
        kg.gets += 1
        kg.served += ln.body_bytes
        kg.intervals.append((ln.range_start, ln.range_start + ln.body_bytes))
    return dict(out)


def classify(kg: KeyGets | None, size: int) -> str:
    """``once``, ``twice`` (a byte served more than once), ``partial`` or ``missing``."""
    if kg is None or kg.gets == 0:
        return "missing"
    if kg.served > kg.covered() or (size == 0 and kg.gets > 1):
        return "twice"
    return "once" if kg.covered() >= size else "partial"


def fetch_check(lines: Sequence[LogLine], planned: dict[str, int], bucket: str) -> dict[str, Any]:
    """Every planned key against the origin's GETs: counts per class, data files and manifests
    apart, with up to 5 example keys of each non-``once`` class."""
    by_key = gets_by_key(lines, bucket)
    out: dict[str, Any] = {}
    for kind in ("data", "manifests"):
        keys = [k for k in planned if (MANIFEST_DIR in f"/{k}") == (kind == "manifests")]
        classes: dict[str, list[str]] = defaultdict(list)
        for k in keys:
            classes[classify(by_key.get(k), planned[k])].append(k)
        out[kind] = {c: len(classes.get(c, [])) for c in ("once", "twice", "partial", "missing")}
        out[kind]["gets"] = sum(by_key[k].gets for k in keys if k in by_key)
        out[kind]["examples"] = {c: sorted(v)[:5] for c, v in classes.items() if c != "once"}
    extra = sorted(k for k in by_key if k not in planned)
    out["extra"] = {"count": len(extra), "examples": extra[:5]}
    out["object_gets"] = sum(kg.gets for kg in by_key.values())
    out["listings"] = sum(1 for ln in lines if ln.is_listing)
    out["other_statuses"] = sorted({ln.status for ln in lines if not 200 <= ln.status < 300})
    out["exactly_once"] = all(out[k]["once"] == sum(out[k][c] for c in ("once", "twice", "partial", "missing"))
                              for k in ("data", "manifests")) and not extra
    return out


# ------------------------------------------------------------------------------ reports and checks


def pull_report(text: str) -> dict[str, Any]:
    """Files, bytes and time of one ``pull --json`` report (the last JSON document of stdout)."""
    doc: Any = None
    try:
        doc = json.loads(text)
    except ValueError:
        start = text.rfind("\n{")
        with_start = text[start + 1:] if start >= 0 else ""
        try:
            doc = json.loads(with_start) if with_start else None
        except ValueError:
            doc = None
    if not isinstance(doc, dict):
        return {}

    def part(name: str, unit: str) -> int | None:
        v = doc.get(name)
        return int(v[unit]) if isinstance(v, dict) and unit in v else None

    return {"ok": doc.get("ok"), "planned_files": part("planned", "files"), "planned_bytes": part("planned", "bytes"),
            "transferred_files": part("transferred", "files"), "transferred_bytes": part("transferred", "bytes"),
            "skipped_files": part("skipped", "files"), "failed": len(doc.get("failed") or []),
            "failed_examples": (doc.get("failed") or [])[:3],
            "verified": doc.get("verified"), "elapsed_s": doc.get("elapsed_seconds"), "requests": doc.get("requests")}


def shard_rates(reports: Sequence[dict[str, Any]]) -> list[float | None]:
    """Each shard's own rate (MB/s): its transferred bytes / its ``elapsed_seconds``."""
    return [round(r["transferred_bytes"] / r["elapsed_s"] / MB, 1) if r.get("transferred_bytes") and r.get("elapsed_s")
            else None for r in reports]


def partition_bytes(wl: Workload, n: int) -> list[int]:
    """The bytes each of N key shards holds (``crc32(key) mod N``, as :class:`hcpsync.shard.Shard`)."""
    out = [0] * n
    for o in wl.objects:
        out[zlib.crc32(o.key.encode()) % n] += o.size
    return out


def dest_check(wl: Workload, dest: Path) -> dict[str, int]:
    """Every key of the workload at ``dest/<key minus release>`` with its size."""
    release = wl.prefix.strip("/").split("/")[0] + "/"
    missing = wrong = 0
    for o in wl.objects:
        try:
            wrong += (dest / o.key[len(release):]).stat().st_size != o.size
        except OSError:
            missing += 1
    return {"files": len(wl.objects), "missing": missing, "wrong_size": wrong}


def shard_states(argv0: Sequence[str], dest: Path) -> list[str]:
    """``hcpsync status --dest D --json``: the state of each shard (empty when it cannot tell)."""
    res = subprocess.run([*argv0, "status", "--dest", str(dest), "--json"], capture_output=True, text=True,
                         env=child_env(), cwd=REPO_ROOT, timeout=120, check=False)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        return []
    return [str(s.get("state")) for s in doc.get("shards") or [] if isinstance(s, dict)]


# ------------------------------------------------------------------------------ one measured run


@dataclass
class Bench:
    """A workload served by a running origin, its access log, and the options."""

    opts: Options
    wl: Workload
    origin: Origin
    alog: AccessLog
    rate: str

    @property
    def planned(self) -> dict[str, int]:
        return {o.key: o.size for o in self.wl.objects}

    def fresh_dest(self, label: str) -> Path:
        dest = self.opts.dest_root / f"hcpsync-shards-{os.getpid()}" / label
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest


def measure_run(b: Bench, variant: str, n: int, rnd: int) -> dict[str, Any]:
    """One run of N shards (``variant`` ``processes`` or ``dask``): timed, GETs counted, checked,
    the destination deleted afterwards."""
    dest = b.fresh_dest(f"{b.wl.name}-{variant}-{n}-{rnd}")
    url = b.origin.url
    if variant == "dask":
        argvs = [dask_argv(b.opts.argv0, b.wl, url, dest, n, b.rate, b.opts.pull_args)]
    else:
        argvs = [shard_argv(b.opts.argv0, b.wl, url, dest, k, n, b.rate, b.opts.pull_args) for k in range(n)]
    logs = dest.parent / f"logs-{dest.name}"
    b.alog.skip_to_end()
    origin_pids = measure.origin_pids(b.origin)
    origin_cpu0 = measure.cpu_seconds(origin_pids)
    load = os.getloadavg()[0]
    try:
        res = measure.run_measured(argvs, child_env(), logs, timeout=b.opts.timeout, cwd=REPO_ROOT)
        origin_cpu = measure.cpu_seconds(origin_pids) - origin_cpu0
        lines = b.alog.read_new()
        reports = [pull_report((logs / f"stdout.{i}").read_text(errors="replace")) for i in range(len(argvs))]
        out = {"variant": variant, "shards": n, "round": rnd, "load_at_start": round(load, 2),
               "commands": [quoted(a, url, dest) for a in argvs], "returncode": res.returncode,
               "wall_s": round(res.wall_s, 3), "cpu_s": round(res.cpu_s, 2), "origin_cpu_s": round(origin_cpu, 2),
               "peak_pss_mb": round(res.peak_pss_kib * 1024 / MB, 1), "max_procs": res.max_procs,
               "reports": reports, "gets": fetch_check(lines, b.planned, b.wl.bucket),
               "dest_check": dest_check(b.wl, dest), "status_states": shard_states(b.opts.argv0, dest)}
        if res.returncode != 0:
            out["stderr_tail"] = res.stderr_tail
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    return {**out, **figures(out, b.wl, n, rate_bytes(b.rate))}


def figures(run: dict[str, Any], wl: Workload, n: int, rate: int) -> dict[str, Any]:
    """Aggregate, ratio to N x B and its verdict (on the bytes landed, whatever failed: ``ok`` says
    whether every shard exited 0 and every file landed); the partition bound, the shards' own rates."""
    landed = sum(r.get("transferred_bytes") or 0 for r in run["reports"])
    aggregate = landed / run["wall_s"] if run["wall_s"] else 0.0
    ratio = aggregate / (n * rate)
    parts = partition_bytes(wl, n)
    ok = run["returncode"] == 0 and run["dest_check"]["missing"] == 0 and run["dest_check"]["wrong_size"] == 0
    return {"bytes_landed": landed, "aggregate_mb_s": round(aggregate / MB, 1), "cap_mb_s": round(n * rate / MB, 1),
            "ratio": round(ratio, 3), "rate_met": ratio >= TARGET_RATIO,
            "failed_files": sum(r.get("failed") or 0 for r in run["reports"]),
            "once_met": ok and run["gets"]["exactly_once"], "partition_mb": [round(p / MB) for p in parts],
            "partition_bound": round(sum(parts) / (n * max(parts)), 3) if max(parts) else None,
            "shard_rates_mb_s": shard_rates(run["reports"]), "ok": ok}


# ------------------------------------------------------------------------------ the benchmark


def warm_up(b: Bench) -> None:
    """Untimed: the workload read once (page cache), and one shard's pull of the smallest object
    (``--include``), so the timed processes find their bytecode cached."""
    t = b.wl.warm()
    b.opts.log(f"{b.wl.name}: page cache warmed in {t:.1f} s")
    small = min(b.wl.data_objects, key=lambda o: o.size)
    dest = b.fresh_dest("warm-up")
    argv = [*shard_argv(b.opts.argv0, b.wl, b.origin.url, dest, 0, 1, b.rate), "--include", small.key]
    try:
        subprocess.run(argv, capture_output=True, env=child_env(), cwd=REPO_ROOT, timeout=300, check=False)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run_workload(opts: Options, name: str, variants: Sequence[str]) -> dict[str, Any]:
    """Every N and variant of one workload, ``opts.runs`` rounds, one origin."""
    wl = Workload.load(opts.work / name)
    rate = opts.rate_of(name)
    runs: list[dict[str, Any]] = []
    with Origin(wl.root, access_log=True) as origin:
        b = Bench(opts, wl, origin, AccessLog(origin.access_log_path), rate)
        warm_up(b)
        for rnd in range(opts.runs):
            for n in opts.shards:
                for variant in variants:
                    r = measure_run(b, variant, n, rnd)
                    opts.log(line_of(name, r))
                    runs.append(r)
    return {"workload": name, "objects": wl.count, "bytes": wl.total_bytes, "rate": rate,
            "rate_bytes_per_s": rate_bytes(rate), "shard_by": SHARD_BY, "runs": runs}


def run(opts: Options) -> dict[str, Any]:
    """All workloads: the JSON document (machine, hcpsync, runs, Dask's state, notes)."""
    has_dask = pull_has(opts.argv0, "--dask")
    variants = ["processes"] + (["dask"] if opts.dask and has_dask else [])
    doc: dict[str, Any] = {
        "hcpsync": shlex.join(opts.argv0), "hcpsync_version": version(opts.argv0),
        "machine": {"nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg()[0],
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
        "dest_root": str(opts.dest_root), "target_ratio": TARGET_RATIO, "shard_by": SHARD_BY,
        "dask": dask_state(opts.dask, has_dask), "workloads": []}
    try:
        for name in opts.workloads:
            doc["workloads"].append(run_workload(opts, name, variants))
    finally:
        shutil.rmtree(opts.dest_root / f"hcpsync-shards-{os.getpid()}", ignore_errors=True)
    return doc


def dask_state(asked: bool, available: bool) -> str:
    if not asked:
        return "not run (no --dask)"
    return "run" if available else "not run: this build's 'hcpsync pull --help' has no --dask"


def version(argv0: Sequence[str]) -> str:
    res = subprocess.run([*argv0, "--version"], capture_output=True, text=True, env=child_env(), cwd=REPO_ROOT,
                         timeout=120, check=False)
    return res.stdout.strip()


# ------------------------------------------------------------------------------ output


def _once_cell(g: dict[str, Any], kind: str) -> str:
    c = g[kind]
    return f"{c['once']}/{c['twice']}/{c['missing'] + c['partial']}"


def line_of(workload: str, r: dict[str, Any]) -> str:
    """One run in one line (progress on stderr)."""
    g = r["gets"]
    return (f"{workload} {r['variant']} N={r['shards']}: {r['bytes_landed'] / MB:,.0f} MB in {r['wall_s']:.2f} s = "
            f"{r['aggregate_mb_s']} MB/s of {r['cap_mb_s']} ({r['ratio']:.3f}); GETs once/twice/missing data "
            f"{_once_cell(g, 'data')}, manifests {_once_cell(g, 'manifests')}, extra {g['extra']['count']}; "
            f"exit {r['returncode']}")


def table(doc: dict[str, Any]) -> str:
    """The Markdown table: one row per run."""
    head = ("| workload | variant | N | B MB/s | bytes MB | wall s | aggregate MB/s | ratio (>= 0.9) | partition bound "
            "| shards' own MB/s | data GETs once/twice/missing | .xdlm once/twice/missing | extra | CPU s (origin) | "
            "exit, failed files | status | met |")
    rows = [head, "| " + " | ".join(["---"] * 17) + " |"]
    for w in doc["workloads"]:
        for r in w["runs"]:
            g = r["gets"]
            met = ("rate " + ("met" if r["rate_met"] else "MISSED") + ", once " + ("met" if r["once_met"] else "MISSED"))
            rows.append(
                f"| {w['workload']} | {r['variant']} | {r['shards']} | {w['rate_bytes_per_s'] / MB:g} | "
                f"{r['bytes_landed'] / MB:,.0f} | {r['wall_s']:.2f} | {r['aggregate_mb_s']} | {r['ratio']:.3f} | "
                f"{r['partition_bound']} | {', '.join(str(x) for x in r['shard_rates_mb_s'])} | "
                f"{_once_cell(g, 'data')} | {_once_cell(g, 'manifests')} | {g['extra']['count']} | "
                f"{r['cpu_s']} ({r['origin_cpu_s']}) | {r['returncode']}, {r['failed_files']} | "
                f"{', '.join(r['status_states']) or '?'} | {met} |")
    return "\n".join(rows)


def summary(doc: dict[str, Any]) -> str:
    """The readable report: the table, Dask's state, the commands."""
    lines = [f"hcpsync: {doc['hcpsync']} ({doc['hcpsync_version']}); {doc['machine']['nproc']} cores, load "
             f"{doc['machine']['loadavg_at_start']:.2f} at start; destinations under {doc['dest_root']}",
             f"shards split by key (--shard-by {doc['shard_by']}): every workload is one subject",
             f"Dask: {doc['dask']}", "", table(doc), "", "Commands (first round):"]
    for w in doc["workloads"]:
        for r in w["runs"]:
            if r["round"] == 0:
                lines += [f"  {w['workload']} {r['variant']} N={r['shards']}:"] + [f"    {c}" for c in r["commands"]]
    return "\n".join(lines)


def write_out(doc: dict[str, Any], out: Path, command: str) -> None:
    """``results.json`` and a short ``README.md`` (the command, the table) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    readme = [f"# Issue 14: shards at once on one destination ({doc['machine']['started']})", "", "```sh",
              command, "```", "", summary(doc), ""]
    (out / "README.md").write_text("\n".join(readme), encoding="utf-8")


# ------------------------------------------------------------------------------ CLI


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("shard counts must be >= 1")
    return out


def _workloads(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in WORKLOADS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {bad}: choose from {', '.join(WORKLOADS)}")
    return items


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.shards", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", type=_workloads, default=["subject"], help="subject, large or both (subject,large)")
    ap.add_argument("--shards", type=_ints, default=[2, 4], help="shard counts N (2,4)")
    rates = ", ".join(f"{k} {v}" for k, v in DEFAULT_RATES.items())
    ap.add_argument("--rate", default=None, help=f"--max-bandwidth of each shard (default: {rates})")
    ap.add_argument("--runs", type=int, default=1, help="rounds")
    ap.add_argument("--dask", action="store_true", help="also through pull --dask local:N --shards N (when available)")
    ap.add_argument("--hcpsync", metavar="CMD", default=None, help="the hcpsync command (default: python -m hcpsync)")
    ap.add_argument("--pull-args", default="", help="more options for every pull, e.g. '--no-verify' (a diagnosis)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK_DIR, help="the workload trees (read only)")
    ap.add_argument("--dest-root", type=Path, default=DEST_ROOT, help="destinations (deleted after each run)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument("--out", type=Path, default=None, help=f"write results.json + README.md there (e.g. {OUT_DIR})")
    ap.add_argument("--json", action="store_true", help="print the JSON document")
    args = ap.parse_args(argv)
    if args.rate is not None:
        try:
            rate_bytes(args.rate)
        except ValueError as exc:
            ap.error(f"--rate: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    argv0 = shlex.split(args.hcpsync) if args.hcpsync else default_hcpsync()
    opts = Options(args.workload, args.shards, args.rate, args.runs, args.dask, argv0, shlex.split(args.pull_args),
                   args.work, args.dest_root, args.timeout)
    doc = run(opts)
    if args.out:
        write_out(doc, args.out, "python -m benchmarks.shards " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(json.dumps(doc, indent=1) if args.json else summary(doc))
    every = [r for w in doc["workloads"] for r in w["runs"]]
    return 0 if every and all(r["ok"] for r in every) else 1


if __name__ == "__main__":
    sys.exit(main())
