"""Release-scale benchmark (issue 13): the ``hcpsync`` CLI against a generated S3 release.

Every scenario starts a fresh ``hcpsync`` process (``--hcpsync CMD``, default ``python -m
hcpsync`` of this interpreter) against :mod:`benchmarks.synthrelease`, which runs in its own
process (its CPU is reported, never counted as hcpsync's) and serves synthetic subjects
``200000``, ``200001``, ... each holding subject 100206's 12,863 keys.  Measured for the
hcpsync process (:func:`benchmarks.measure.run_measured`): **wall** seconds from spawn to exit,
**CPU** seconds (user + sys from ``wait4``, worker processes included), **peak RSS** (GNU
``time``'s ``%M``: the largest RSS of one process of the tree) and **peak PSS** (summed over the
process tree, sampled every 50 ms).  MB = 10^6 bytes.

Scenarios (``--scenarios a,b,...``; default all):

``plan-rss``
    ``hcpsync plan`` (text summary) of ``--plan-sizes`` objects (default 100k, 1M, 3M), no page
    delay: wall, CPU, peak RSS, objects/s.  Targets: wall grows at most 1.1x as fast as the
    objects (10x objects -> <= 11x time); RSS at the other sizes within 10 % of RSS at 1M;
    RSS at 1M <= 300 MB.
``plan-15m``
    ``hcpsync plan`` of ``--plan-subjects`` subjects (default 1,113 x 12,863 = 14,316,519
    objects), ``--page-delay`` 0.3 s per listing page, ``--list-concurrency 64`` (when the build
    has it): wall (<= 600 s), peak RSS (<= 300 MB), the most listings the service had in flight.
``ttfb``
    ``hcpsync pull`` of ``--ttfb-subjects`` subjects (default 1,113; tiny objects, 0.3 s per
    page): seconds from the process's spawn to the service's first object GET (<= 2 s), then
    SIGINT to its process group (as Ctrl-C would) and its exit code and time to exit.
``pull-rss``, ``noop``
    ``hcpsync pull`` of ``--pull-objects`` (default 1M) zero-size objects (no GET needed but the
    ``.xdlm`` manifests) into a destination under ``--dest-root`` (default /dev/shm): wall and
    peak RSS (<= 300 MB) of that first pull; then the same pull again (the no-op re-run): its
    GETs at the service (target 0), wall, reconciliation rate = objects / wall (>= 50,000/s),
    peak RSS.  Both run when either is chosen; the destination is deleted afterwards.

Flags the build may lack (``--list-concurrency``) are passed only when ``hcpsync plan --help`` /
``pull --help`` lists them; ``features`` in the JSON says which were found.  ``--json`` prints
one JSON document (per-scenario results, ``targets`` rows, the exact ``commands``); otherwise a
readable summary.  Each hcpsync process runs under ``prlimit --as`` (``--max-as-gb``, default 12)
so a build that holds the whole plan in memory fails instead of exhausting the shared machine.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import measure
from .peers import clean_env
from .synthrelease import BUCKET, FIRST_ID, default_template
from .workloads import DEFAULT_WORK_DIR, default_keys_file, read_keys

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MB = 1_000_000
SCENARIOS = ("plan-rss", "plan-15m", "ttfb", "pull-rss", "noop")
PLAN_SIZES = (100_000, 1_000_000, 3_000_000)
RELEASE_SUBJECTS = 1_113  # HCP_1200
RSS_TARGET_MB = 300
RSS_SPREAD = 0.10
GROWTH_SLACK = 1.1  # 10x objects -> <= 11x time
PLAN_15M_TARGET_S = 600
TTFB_TARGET_S = 2.0
NOOP_RATE_TARGET = 50_000
LIST_CONCURRENCY_TARGET = 64
OPTIONAL_FLAGS = ("--list-concurrency", "--save", "--plan")
MAX_AS_GB = 12.0  # prlimit --as on each hcpsync process
DEST_ROOT = Path("/dev/shm")
SUBJECT = "100206"
RELEASE = "HCP_1200"


def default_hcpsync() -> list[str]:
    return [sys.executable, "-m", "hcpsync"]


def child_env() -> dict[str, str]:
    """As :func:`benchmarks.runner.child_env`: no AWS credentials, bytecode caching on (an editable
    hcpsync would otherwise compile its modules at every start)."""
    env = clean_env({})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(DEFAULT_WORK_DIR / "pycache")
    return env


# -- HCP-shaped keys without a service (used by benchmarks/noop.py)


def base_keys() -> list[str]:
    """The 12,863 keys of ``HCP_1200/100206/`` in the shared key list."""
    return [k for k in read_keys(default_keys_file()) if k.startswith(f"{RELEASE}/{SUBJECT}/")]


def synthetic_subjects(n: int, per_subject: int) -> list[str]:
    return [str(FIRST_ID + s) for s in range(-(-n // per_subject))]


def synthetic_keys(n: int, base: list[str]) -> Iterator[str]:
    """``n`` keys shaped like HCP keys (lazily; the last subject holds the first keys of ``base``)."""
    done = 0
    for sid in synthetic_subjects(n, len(base)):
        for k in base[: n - done]:
            yield k.replace(SUBJECT, sid)
        done += min(len(base), n - done)


@functools.cache
def keys_per_subject() -> int:
    return len(default_template())


def subjects_for(objects: int, per: int) -> int:
    return -(-objects // per)


# ------------------------------------------------------------------------------ the service


class Service:
    """:mod:`benchmarks.synthrelease` in its own process (own session; SIGTERM when this thread dies)."""

    def __init__(self, work: Path, *, subjects: int | None = None, objects: int | None = None,
                 sizes: str = "zero", page_delay: float = 0.0) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port_file = work / "service.port"
        self.log_path = work / "service.log"
        size = ["--objects", str(objects)] if objects is not None else ["--subjects", str(subjects)]
        self.argv = [sys.executable, "-m", "benchmarks.synthrelease", *size, "--sizes", sizes,
                     "--page-delay", str(page_delay), "--port-file", str(self.port_file)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Service:
        self.port_file.unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=child_env(), stdout=log, stderr=log,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"synthrelease did not start: {self.log_path.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text().strip())
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/__stats")

    def reset(self) -> None:
        self._call("POST", "/__reset")

    def cpu_s(self) -> float:
        assert self.proc is not None
        return measure.cpu_seconds([self.proc.pid])

    def command(self) -> str:
        """The service's command line, without ``--port-file F`` (its last two arguments)."""
        return shlex.join(self.argv[:-2])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------------ hcpsync


@dataclass
class Hcpsync:
    """How to start the measured build, and which optional flags it has."""

    argv0: list[str]
    features: dict[str, dict[str, bool]]
    max_as_gb: float = MAX_AS_GB
    version: str = ""

    @classmethod
    def probe(cls, argv0: list[str], max_as_gb: float) -> Hcpsync:
        """Read ``plan --help`` and ``pull --help`` for the flags of :data:`OPTIONAL_FLAGS`."""
        features: dict[str, dict[str, bool]] = {}
        for cmd in ("plan", "pull"):
            out = subprocess.run([*argv0, cmd, "--help"], capture_output=True, text=True, env=child_env(),
                                 cwd=REPO_ROOT, timeout=120)
            if out.returncode != 0:
                raise RuntimeError(f"{shlex.join([*argv0, cmd, '--help'])} failed: {out.stderr.strip()[-400:]}")
            features[cmd] = {f: re.search(rf"(^|[\s\[]){re.escape(f)}(?![\w-])", out.stdout) is not None for f in OPTIONAL_FLAGS}
        version = subprocess.run([*argv0, "--version"], capture_output=True, text=True, env=child_env(),
                                 cwd=REPO_ROOT, timeout=120).stdout.strip()
        return cls(argv0, features, max_as_gb, version)

    def has(self, cmd: str, flag: str) -> bool:
        return self.features.get(cmd, {}).get(flag, False)

    def argv(self, cmd: str, args: Sequence[str]) -> list[str]:
        return [*self.argv0, cmd, *args]

    def wrapped(self, argv: list[str]) -> list[str]:
        """``prlimit --as`` around ``argv`` (it execs the command: same process, same measurements)."""
        if self.max_as_gb <= 0 or not shutil.which("prlimit"):
            return argv
        return ["prlimit", f"--as={int(self.max_as_gb * 1e9)}", "--", *argv]


def selection_args(service: Service, subjects_file: Path) -> list[str]:
    return ["--subjects-file", str(subjects_file), "--bucket", BUCKET, "--release", RELEASE,
            "--endpoint-url", service.url, "--no-sign-request"]


def write_subjects(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{FIRST_ID + i}\n" for i in range(n)), encoding="utf-8")
    return path


def concurrency_args(hc: Hcpsync, cmd: str, n: int | None) -> tuple[list[str], str | None]:
    """``--list-concurrency n`` when asked for and the build has it; else a note saying why not."""
    if n is None:
        return [], None
    if hc.has(cmd, "--list-concurrency"):
        return ["--list-concurrency", str(n)], None
    return [], f"this build's {cmd} has no --list-concurrency: listing ran at its own default"


def quoted(argv: Sequence[str], service: Service, opts: Options) -> str:
    """A command as RESULTS.md quotes it: the port, the scratch and destination directories as
    placeholders (each run is wrapped in ``prlimit --as`` as well, see :meth:`Hcpsync.wrapped`)."""
    text = shlex.join(argv).replace(f":{service.port}", ":$PORT").replace(str(opts.work), "$WORK")
    return text.replace(str(dest_base(opts)), "$DEST")


def proc_fields(res: measure.ProcResult) -> dict[str, Any]:
    """What every measured hcpsync run reports."""
    return {
        "returncode": res.returncode,
        "wall_s": round(res.wall_s, 3),
        "cpu_s": round(res.cpu_s, 3),
        "user_s": round(res.user_s, 3),
        "sys_s": round(res.sys_s, 3),
        "peak_rss_mb": round(res.maxrss_kib * 1024 / MB, 1),
        "peak_pss_mb": round(res.peak_pss_kib * 1024 / MB, 1),
        "max_procs": res.max_procs,
        **({"stderr_tail": res.stderr_tail} if res.returncode != 0 or res.killed else {}),
        **({"killed": True} if res.killed else {}),
    }


def service_fields(after: dict[str, Any], cpu_s: float) -> dict[str, Any]:
    """The service's side of a run: requests by kind, listings in flight, its own CPU."""
    return {
        "lists": after["list"],
        "gets": after["get"],
        "manifest_gets": after["get_manifest"],
        "heads": after["head"],
        "errors": after["errors"],
        "lists_in_flight_max": after["lists_in_flight_max"],
        "gets_in_flight_max": after["gets_in_flight_max"],
        "service_cpu_s": round(cpu_s, 3),
    }


def files_in_text(text: str) -> int | None:
    """The file count of ``hcpsync plan``'s text summary (``...: 30000 files, ...``; or a JSON
    Lines ``summary``)."""
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("type") == "summary" and isinstance(doc.get("files"), int):
                return int(doc["files"])
    m = re.search(r"(\d[\d,]*) files", text)
    return int(m.group(1).replace(",", "")) if m else None


# ------------------------------------------------------------------------------ scenarios


@dataclass
class Options:
    hcpsync: Hcpsync
    work: Path
    dest_root: Path
    plan_sizes: Sequence[int] = PLAN_SIZES
    plan_subjects: int = RELEASE_SUBJECTS
    ttfb_subjects: int = RELEASE_SUBJECTS
    pull_objects: int = 1_000_000
    page_delay: float = 0.3
    list_concurrency: int = LIST_CONCURRENCY_TARGET
    workers: int | None = None
    timeout: float = 1800.0
    ttfb_timeout: float = 120.0
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)


def measure_plan(opts: Options, name: str, *, objects: int | None = None, subjects: int | None = None,
                 page_delay: float = 0.0, concurrency: int | None = None) -> dict[str, Any]:
    """One ``hcpsync plan`` (text summary) against a fresh service; the planned count is checked."""
    per = keys_per_subject()
    nsub = subjects if subjects is not None else subjects_for(objects or 0, per)
    expected = objects if objects is not None else nsub * per
    work = opts.work / name
    subjects_file = write_subjects(work / "subjects.txt", nsub)
    extra, note = concurrency_args(opts.hcpsync, "plan", concurrency)
    with Service(work, objects=objects, subjects=subjects, page_delay=page_delay) as svc:
        argv = opts.hcpsync.argv("plan", [*selection_args(svc, subjects_file), *extra])
        svc.reset()
        cpu0 = svc.cpu_s()
        res = measure.run_measured([opts.hcpsync.wrapped(argv)], child_env(), work / "run", timeout=opts.timeout,
                                   cwd=REPO_ROOT)
        out = {"objects": expected, "subjects": nsub, "page_delay_s": page_delay, **proc_fields(res),
               **service_fields(svc.stats(), svc.cpu_s() - cpu0)}
        out["planned"] = files_in_text(res.stdout)
        out["objects_per_s"] = round(expected / res.wall_s) if res.wall_s else None
        out["ok"] = res.returncode == 0 and out["planned"] == expected
        out["command"] = quoted(argv, svc, opts)
        out["service_command"] = svc.command()
        if note:
            out["note"] = note
    opts.log(f"{name}: {expected:,} objects ({nsub} subjects): {out['wall_s']} s, {out['cpu_s']} s CPU, "
             f"peak RSS {out['peak_rss_mb']} MB, {out['lists']} listings (max {out['lists_in_flight_max']} in flight), "
             f"planned {out['planned']}, exit {out['returncode']}")
    return out


def run_plan_rss(opts: Options) -> dict[str, Any]:
    """``plan`` at each of ``plan_sizes`` objects, no page delay, default listing concurrency."""
    runs = [measure_plan(opts, f"plan-rss/{n}", objects=n) for n in opts.plan_sizes]
    return {"runs": runs, "growth": growth(runs), "rss_spread": rss_spread(runs)}


def growth(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall and CPU ratio between consecutive sizes, against the objects ratio."""
    ok = [r for r in runs if r["ok"]]
    out = []
    for a, b in itertools.pairwise(ok):
        k = b["objects"] / a["objects"]
        out.append({"from": a["objects"], "to": b["objects"], "objects_ratio": round(k, 3),
                    "wall_ratio": round(b["wall_s"] / a["wall_s"], 3),
                    "cpu_ratio": round(b["cpu_s"] / a["cpu_s"], 3) if a["cpu_s"] else None,
                    "limit": round(GROWTH_SLACK * k, 3)})
    return out


def reference_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run nearest 1M objects (log scale): the reference of the RSS spread."""
    ok = [r for r in runs if r["ok"]]
    return min(ok, key=lambda r: abs(math.log(r["objects"] / 1e6))) if ok else None


def rss_spread(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    ref = reference_run(runs)
    if ref is None:
        return None
    return {"reference_objects": ref["objects"], "reference_rss_mb": ref["peak_rss_mb"],
            "relative": {str(r["objects"]): round(r["peak_rss_mb"] / ref["peak_rss_mb"] - 1, 4)
                         for r in runs if r["ok"] and r is not ref}}


def run_plan_15m(opts: Options) -> dict[str, Any]:
    """``plan`` of the whole release with S3's page latency and 64 listings allowed in flight."""
    return measure_plan(opts, "plan-15m", subjects=opts.plan_subjects, page_delay=opts.page_delay,
                        concurrency=opts.list_concurrency)


def run_ttfb(opts: Options) -> dict[str, Any]:
    """A ``pull`` of ``ttfb_subjects`` tiny-object subjects: spawn -> first GET at the service,
    then SIGINT (its process group, as Ctrl-C) and the exit."""
    work = opts.work / "ttfb"
    dest = fresh_dest(opts, "ttfb")
    subjects_file = write_subjects(work / "subjects.txt", opts.ttfb_subjects)
    extra, note = concurrency_args(opts.hcpsync, "pull", opts.list_concurrency)
    try:
        with Service(work, subjects=opts.ttfb_subjects, sizes="tiny", page_delay=opts.page_delay) as svc:
            argv = opts.hcpsync.argv("pull", [*selection_args(svc, subjects_file), "--dest", str(dest),
                                               "--no-progress", "--json", *extra, *workers_args(opts)])
            svc.reset()
            out = interrupt_at_first_get(opts, svc, opts.hcpsync.wrapped(argv), work)
            out.update({"subjects": opts.ttfb_subjects, "objects": opts.ttfb_subjects * keys_per_subject(),
                        "page_delay_s": opts.page_delay, "command": quoted(argv, svc, opts),
                        "service_command": svc.command()})
            if note:
                out["note"] = note
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    opts.log(f"ttfb: first GET {out.get('first_get_s')} s after spawn (first non-manifest GET "
             f"{out.get('first_data_get_s')} s, first listing {out.get('first_list_s')} s); SIGINT -> exit "
             f"{out.get('returncode')} after {out.get('exit_after_sigint_s')} s")
    return out


def interrupt_at_first_get(opts: Options, svc: Service, argv: list[str], work: Path) -> dict[str, Any]:
    """Spawn ``argv``, poll the service every 10 ms until an object GET arrives (or the process
    exits, or ``ttfb_timeout``), then SIGINT the process group and wait (60 s, then SIGKILL)."""
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "stdout", "wb") as so, open(work / "stderr", "wb") as se:
        t0 = time.time()
        proc = subprocess.Popen(argv, stdout=so, stderr=se, env=child_env(), cwd=REPO_ROOT, start_new_session=True)
        hwm = 0
        st = svc.stats()
        while proc.poll() is None and time.time() - t0 < opts.ttfb_timeout:
            st = svc.stats()
            hwm = max(hwm, vm_hwm_kib(proc.pid))
            if st["first_get"] is not None or st["first_get_manifest"] is not None:
                break
            time.sleep(0.01)
        at_signal = time.time()
        exited_before = proc.poll() is not None
        killed = False
        waited = None
        if not exited_before:
            os.killpg(proc.pid, signal.SIGINT)
            waited = measure._wait4(proc, 60)
            if waited is None:
                killed = True
                os.killpg(proc.pid, signal.SIGKILL)
                waited = measure._wait4(proc, 30)
        end = time.time()
    firsts = [t for t in (st["first_get"], st["first_get_manifest"]) if t is not None]
    return {
        "first_get_s": round(min(firsts) - t0, 3) if firsts else None,
        "first_data_get_s": round(st["first_get"] - t0, 3) if st["first_get"] else None,
        "first_list_s": round(st["first_list"] - t0, 3) if st["first_list"] else None,
        "lists_before_first_get": st["list"],
        "lists_in_flight_max_before_first_get": st["lists_in_flight_max"],
        "exited_before_first_get": exited_before,
        "returncode": proc.returncode,
        "exit_after_sigint_s": None if exited_before else round(end - at_signal, 3),
        "killed_after_60s": killed,
        "cpu_s": round(waited[1].ru_utime + waited[1].ru_stime, 3) if waited is not None else None,
        "peak_rss_mb_at_first_get": round(hwm * 1024 / MB, 1),
        "stderr_tail": "\n".join((work / "stderr").read_text(errors="replace").strip().splitlines()[-6:]),
    }


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def dest_base(opts: Options) -> Path:
    return opts.dest_root / f"hcpsync-scale-{os.getpid()}"


def fresh_dest(opts: Options, name: str) -> Path:
    dest = dest_base(opts) / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def workers_args(opts: Options) -> list[str]:
    return ["--workers", str(opts.workers)] if opts.workers is not None else []


def run_pulls(opts: Options) -> dict[str, Any]:
    """A pull of ``pull_objects`` zero-size objects to the end, then the same pull again (no-op)."""
    n = opts.pull_objects
    per = keys_per_subject()
    work = opts.work / "pull"
    dest = fresh_dest(opts, "pull")
    subjects_file = write_subjects(work / "subjects.txt", subjects_for(n, per))
    extra, note = concurrency_args(opts.hcpsync, "pull", None)
    out: dict[str, Any] = {"objects": n, "subjects": subjects_for(n, per), "dest": str(dest)}
    try:
        with Service(work, objects=n) as svc:
            argv = opts.hcpsync.argv("pull", [*selection_args(svc, subjects_file), "--dest", str(dest),
                                               "--no-progress", "--json", *extra, *workers_args(opts)])
            out["command"] = quoted(argv, svc, opts)
            out["service_command"] = svc.command()
            for label in ("first", "again"):
                out[label] = measure_pull(opts, svc, argv, work / label, n)
                opts.log(f"pull {label}: {n:,} objects: {out[label]['wall_s']} s, {out[label]['cpu_s']} s CPU, peak RSS "
                         f"{out[label]['peak_rss_mb']} MB, {out[label]['gets']} GETs + {out[label]['manifest_gets']} "
                         f"manifest GETs, exit {out[label]['returncode']}")
        out["noop_rate_objects_per_s"] = round(n / out["again"]["wall_s"]) if out["again"]["wall_s"] else None
    finally:
        t = time.monotonic()
        shutil.rmtree(dest.parent, ignore_errors=True)
        out["cleanup_s"] = round(time.monotonic() - t, 1)
    if note:
        out["note"] = note
    return out


def measure_pull(opts: Options, svc: Service, argv: list[str], log_dir: Path, n: int) -> dict[str, Any]:
    """One measured ``pull``, the service's counts, and what its JSON report says."""
    svc.reset()
    cpu0 = svc.cpu_s()
    res = measure.run_measured([opts.hcpsync.wrapped(argv)], child_env(), log_dir, timeout=opts.timeout, cwd=REPO_ROOT)
    out = {**proc_fields(res), **service_fields(svc.stats(), svc.cpu_s() - cpu0)}
    report = pull_report(res.stdout)
    out["report"] = report
    out["ok"] = res.returncode == 0 and report.get("planned") == n
    return out


def pull_report(stdout: str) -> dict[str, Any]:
    """The counts of ``pull --json``'s report (the last JSON object on stdout)."""
    doc: dict[str, Any] = {}
    try:
        doc = json.loads(stdout)
    except ValueError:
        for line in reversed(stdout.splitlines()):
            try:
                doc = json.loads(line)
                break
            except ValueError:
                continue
    if not isinstance(doc, dict) or not doc:
        return {}

    def files(k: str) -> Any:
        v = doc.get(k)
        return v.get("files") if isinstance(v, dict) else v

    return {"ok": doc.get("ok"), "planned": files("planned"), "transferred": files("transferred"),
            "skipped": files("skipped"), "failed": len(doc.get("failed") or []), "verified": doc.get("verified"),
            "requests": doc.get("requests"), "elapsed_s": doc.get("elapsed_seconds"),
            "notes": len(doc.get("notes") or [])}


# ------------------------------------------------------------------------------ targets


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target of issue 13: ``target``, ``goal``, ``measured``, ``met`` (None: not run / failed)."""
    rows: list[dict[str, Any]] = []

    def row(target: str, goal: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "goal": goal, "measured": measured, "met": met})

    pr = results.get("plan-rss")
    if pr:
        for r in pr["runs"]:
            if not r["ok"]:
                row(f"plan {r['objects']:,} objects", "completes", f"failed (exit {r['returncode']}, planned "
                    f"{r['planned']})", False)
        ref = reference_run(pr["runs"])
        if ref is not None:
            row(f"plan peak RSS, {ref['objects']:,} objects", f"<= {RSS_TARGET_MB} MB", f"{ref['peak_rss_mb']:.0f} MB",
                ref["peak_rss_mb"] <= RSS_TARGET_MB)
        spread = pr["rss_spread"]
        if spread and spread["relative"]:
            worst = max(abs(v) for v in spread["relative"].values())
            shown = ", ".join(f"{int(k):,}: {v * 100:+.1f} %" for k, v in spread["relative"].items())
            row(f"plan peak RSS vs {spread['reference_objects']:,} objects", f"within {RSS_SPREAD * 100:.0f} %",
                shown, worst <= RSS_SPREAD)
        for g in pr["growth"]:
            row(f"plan growth {g['from']:,} -> {g['to']:,} objects", f"<= {g['limit']:.1f}x wall",
                f"{g['wall_ratio']:.2f}x wall ({g['cpu_ratio']}x CPU) for {g['objects_ratio']:.0f}x objects",
                g["wall_ratio"] <= g["limit"])
    p15 = results.get("plan-15m")
    if p15:
        what = f"plan {p15['objects']:,} objects ({p15['subjects']:,} subjects, {p15['page_delay_s']} s/page)"
        ok = p15["ok"]
        row(f"{what}: wall", f"<= {PLAN_15M_TARGET_S} s", f"{p15['wall_s']:.1f} s" + ("" if ok else " (failed)"),
            ok and p15["wall_s"] <= PLAN_15M_TARGET_S)
        row(f"{what}: peak RSS", f"<= {RSS_TARGET_MB} MB", f"{p15['peak_rss_mb']:.0f} MB",
            ok and p15["peak_rss_mb"] <= RSS_TARGET_MB)
        row(f"{what}: listings in flight", f">= {LIST_CONCURRENCY_TARGET}", f"{p15['lists_in_flight_max']} (max)",
            p15["lists_in_flight_max"] >= LIST_CONCURRENCY_TARGET)
    tt = results.get("ttfb")
    if tt:
        fg = tt.get("first_get_s")
        fd = tt.get("first_data_get_s")
        measured = "no GET" if fg is None else f"{fg:.2f} s (first non-manifest GET: " + \
            (f"{fd:.2f} s)" if fd is not None else "none before the SIGINT)")
        row(f"time to first GET, pull of {tt['subjects']:,} subjects", f"<= {TTFB_TARGET_S:.0f} s", measured,
            fg is not None and fg <= TTFB_TARGET_S)
    pulls = results.get("pull-rss") or results.get("noop")
    if pulls and "again" in pulls:
        first, again = pulls["first"], pulls["again"]
        n = pulls["objects"]
        if "pull-rss" in results:
            for label, r in (("first", first), ("no-op re-run", again)):
                row(f"pull peak RSS, {n:,} objects, {label}", f"<= {RSS_TARGET_MB} MB",
                    f"{r['peak_rss_mb']:.0f} MB" + ("" if r["ok"] else " (failed)"),
                    r["ok"] and r["peak_rss_mb"] <= RSS_TARGET_MB)
        if "noop" in results:
            gets = again["gets"] + again["manifest_gets"]
            row(f"no-op re-run of {n:,} objects: GETs", "0", f"{gets}", again["ok"] and gets == 0)
            rate = pulls["noop_rate_objects_per_s"]
            row(f"no-op re-run of {n:,} objects: reconciliation", f">= {NOOP_RATE_TARGET:,} objects/s",
                f"{rate:,} objects/s ({again['wall_s']:.1f} s)", again["ok"] and rate is not None and rate >= NOOP_RATE_TARGET)
    return rows


# ------------------------------------------------------------------------------ CLI


def warm_up(opts: Options) -> None:
    """Untimed: a ``plan`` and a ``pull`` of 100 objects, so the timed processes find their
    bytecode cached (``PYTHONPYCACHEPREFIX``) and the files in the page cache."""
    work = opts.work / "warm-up"
    dest = fresh_dest(opts, "warm-up")
    subjects_file = write_subjects(work / "subjects.txt", 1)
    try:
        with Service(work, objects=100) as svc:
            for cmd, extra in (("plan", []), ("pull", ["--dest", str(dest), "--no-progress", "--json"])):
                argv = opts.hcpsync.argv(cmd, [*selection_args(svc, subjects_file), *extra])
                res = subprocess.run(argv, capture_output=True, env=child_env(), cwd=REPO_ROOT, timeout=300)
                if res.returncode != 0:
                    raise RuntimeError(f"warm-up {shlex.join(argv)} failed: {res.stderr.decode(errors='replace')[-400:]}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run(opts: Options, scenarios: Sequence[str]) -> dict[str, Any]:
    """Run the chosen scenarios (after :func:`warm_up`); the JSON document (results, targets, commands)."""
    machine = {"nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg()[0],
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results: dict[str, Any] = {}
    runners: dict[str, Callable[[Options], dict[str, Any]]] = {
        "plan-rss": run_plan_rss, "plan-15m": run_plan_15m, "ttfb": run_ttfb}
    pulls: dict[str, Any] | None = None
    try:
        warm_up(opts)
        for name in SCENARIOS:
            if name not in scenarios:
                continue
            if name in ("pull-rss", "noop"):
                pulls = pulls or run_pulls(opts)
                results[name] = pulls
            else:
                results[name] = runners[name](opts)
    finally:
        shutil.rmtree(dest_base(opts), ignore_errors=True)
    return {
        "hcpsync": shlex.join(opts.hcpsync.argv0),
        "hcpsync_version": opts.hcpsync.version,
        "machine": machine,
        "features": opts.hcpsync.features,
        "wrapper": shlex.join(opts.hcpsync.wrapped([])).strip() or None,
        "keys_per_subject": keys_per_subject(),
        "scenarios": list(results),
        "results": {k: v for k, v in results.items() if k != "noop" or "pull-rss" not in results},
        "targets": targets(results),
        "commands": commands(results),
    }


def commands(results: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, res in results.items():
        for r in res.get("runs", [res]):
            label = f"{name} {r['objects']:,}" if "runs" in res else name
            out[label] = r["command"]
            out[f"{label} (service)"] = r["service_command"]
    return out


def summary(doc: dict[str, Any]) -> str:
    """The readable report: one line per run, then the targets."""
    res = doc["results"]
    flags = ", ".join(f"{c} {f}" for c, fs in doc["features"].items() for f, ok in fs.items() if ok)
    lines = [f"hcpsync: {doc['hcpsync']} ({doc['hcpsync_version']}); optional flags: {flags or 'none'}; "
             f"load average at start {doc['machine']['loadavg_at_start']}"]
    for r in res.get("plan-rss", {}).get("runs", []):
        lines.append(_plan_line("plan-rss", r))
    if "plan-15m" in res:
        lines.append(_plan_line("plan-15m", res["plan-15m"]))
    if "ttfb" in res:
        t = res["ttfb"]
        lines.append(f"ttfb      {t['subjects']:>6,} subjects: first GET {t['first_get_s']} s, first non-manifest "
                     f"GET {t['first_data_get_s']} s, first listing {t['first_list_s']} s, {t['lists_before_first_get']} "
                     f"listings before it; SIGINT -> exit {t['returncode']} in {t['exit_after_sigint_s']} s")
    p = res.get("pull-rss") or res.get("noop")
    if p:
        for label in ("first", "again"):
            r = p[label]
            lines.append(f"pull {label:5s} {p['objects']:>9,} objects: {r['wall_s']:8.2f} s, {r['cpu_s']:8.2f} s CPU, "
                         f"peak RSS {r['peak_rss_mb']:7.1f} MB, GETs {r['gets']} + {r['manifest_gets']} manifests, "
                         f"exit {r['returncode']}; report {r['report']}")
    lines += ["", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    for t in doc["targets"]:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {met} |")
    lines += ["", "Commands:"] + [f"  {k}: {v}" for k, v in doc["commands"].items()]
    return "\n".join(lines)


def _plan_line(name: str, r: dict[str, Any]) -> str:
    return (f"{name:9s} {r['objects']:>10,} objects: {r['wall_s']:8.2f} s, {r['cpu_s']:8.2f} s CPU, peak RSS "
            f"{r['peak_rss_mb']:7.1f} MB, {r['objects_per_s'] or 0:>8,} objects/s, {r['lists']} listings (max "
            f"{r['lists_in_flight_max']} in flight), service CPU {r['service_cpu_s']} s, planned {r['planned']}, "
            f"exit {r['returncode']}" + (f" [{r['note']}]" if r.get("note") else ""))


def _sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        mult = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part[:-1] if mult > 1 else part) * mult))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", type=measure.csv_choices(SCENARIOS), default=list(SCENARIOS),
                    help=f"from {', '.join(SCENARIOS)}")
    ap.add_argument("--hcpsync", metavar="CMD", default=None, help="the hcpsync command (default: python -m hcpsync)")
    ap.add_argument("--plan-sizes", type=_sizes, default=list(PLAN_SIZES), help="plan-rss: objects (100k,1m,3m)")
    ap.add_argument("--plan-subjects", type=int, default=RELEASE_SUBJECTS, help="plan-15m: subjects (1113)")
    ap.add_argument("--ttfb-subjects", type=int, default=RELEASE_SUBJECTS, help="ttfb: subjects (1113)")
    ap.add_argument("--pull-objects", type=_sizes, default=[1_000_000], help="pull-rss/noop: objects (1m)")
    ap.add_argument("--page-delay", type=float, default=0.3, help="plan-15m and ttfb: seconds per listing page")
    ap.add_argument("--list-concurrency", type=int, default=LIST_CONCURRENCY_TARGET,
                    help="plan-15m and ttfb: --list-concurrency (when the build has it)")
    ap.add_argument("--workers", type=int, default=None, help="pulls: --workers N (default: hcpsync's)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK_DIR / "scale", help="subject files, logs")
    ap.add_argument("--dest-root", type=Path, default=DEST_ROOT, help="pull destinations (deleted after)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per hcpsync run")
    ap.add_argument("--ttfb-timeout", type=float, default=120, help="ttfb: give up waiting for a GET after this")
    ap.add_argument("--max-as-gb", type=float, default=MAX_AS_GB, help="prlimit --as on hcpsync (0: none)")
    ap.add_argument("--json", action="store_true", help="print the JSON document")
    return ap.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    argv0 = shlex.split(args.hcpsync) if args.hcpsync else default_hcpsync()
    return Options(Hcpsync.probe(argv0, args.max_as_gb), args.work, args.dest_root, args.plan_sizes,
                   args.plan_subjects, args.ttfb_subjects, args.pull_objects[0], args.page_delay,
                   args.list_concurrency, args.workers, args.timeout, args.ttfb_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc = run(options_from(args), args.scenarios)
    print(json.dumps(doc, indent=1) if args.json else summary(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
