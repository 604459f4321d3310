"""``python -m benchmarks``: hcpsync against s5cmd, aws-cli, boto3 and curl on the local nginx S3 origin.

Workloads (``--workloads``, comma-separated; default all):

``large``
    4 x 1 GiB objects.  hcpsync with its defaults and with larger parts; s5cmd, aws-cli, boto3
    with the same budget of 64 requests in flight; ``curl``: 4 parallel ``curl -o file``, the
    physical reference (one stream per file, no client logic).
``subject``
    The 12,863 objects (3.81 GB) of subject 100206.  hcpsync with verification on (default)
    and ``--no-verify``, and with ``--no-journal`` (journal overhead); s5cmd (64 workers, and
    its default 256), aws-cli, boto3.
``s3like``
    The origin in S3-like mode (25 MB/s per request, 20 ms to first byte) with ``large`` and
    ``subject-tiny``: hcpsync and s5cmd, and the link measured with 4 curls on a plain origin
    over the same files, interleaved.
``resume``
    ``large`` pulled, SIGKILLed at 50 % of the bytes (``/proc/<pid>/io`` ``wchar``), pulled
    again; bytes fetched twice, from the origin's access log.  hcpsync, s5cmd, aws-cli.
``scale``
    :mod:`benchmarks.scale`: the release-scale targets of issue 13 (``plan`` of 100k/1M/3M objects
    and of 1,113 subjects at 0.3 s per listing page, time to first GET of a pull, a 1M-object
    pull and its no-op re-run) against :mod:`benchmarks.synthrelease`'s generated release.
``large-https``, ``subject-https``
    ``large`` and ``subject`` from the origin over HTTPS (nginx, a certificate of a private CA):
    hcpsync with ``--ca-bundle CA``, s5cmd with ``--no-verify-ssl``, curl with ``--cacert CA``.
``verify``
    Verification where a user meets it: an S3-like origin whose aggregate is capped below what
    the CPUs hash (``--verify-cap``, default 250 MB/s = 64 requests x 3.9 MB/s, 20 ms to first
    byte), ``subject`` and ``large``: hcpsync with verification on (default) and
    ``--no-verify``, and ``md5sum`` over the same files (CPU-s per GB of hashing), interleaved.
``startup``
    ``hcpsync --version`` and ``hcpsync pull`` of one 1 KiB object from the plain origin, against
    ``s5cmd version`` and ``s5cmd cp`` of the same object, ``--startup-runs`` interleaved rounds.
``memory``
    ``subject`` with hcpsync (defaults) and s5cmd only, for the peak PSS (every section records
    it; this one is for a run without the rest of ``subject``; not in the default set).
``scaling``
    ``subject`` and ``large``: ``hcpsync --workers 1`` against ``--workers 2`` (skipped, with a
    note, when ``hcpsync pull --help`` has no ``--workers``).

Protocol: one origin per workload (access log on, for requests and bytes served); every run
starts from an empty destination, after ``sync`` (and ``drop_caches`` with
``--drop-caches``) and a read of every source file (page cache warm); the variants of a
workload run interleaved, in an order rotated every round; each variant's row is the median
of its runs; ratios hcpsync/peer are medians of per-round ratios.  Each variant's first run is
checked byte for byte (MD5) against the workload, later runs by size.  Every run's peak PSS is
the largest sum over its process tree (``/proc/<pid>/smaps_rollup`` every 50 ms), so worker
processes count.

Output: a markdown report on stdout and in ``RESULTS.md``, and every measurement in
``results.json`` (``--out DIR``; ``--quick`` writes to ``benchmarks/work/quick/`` unless
``--out`` is given, so a smoke run never overwrites the committed results).  Text between
``<!-- analysis:begin -->`` and ``<!-- analysis:end -->`` in an existing ``RESULTS.md`` is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import measure, peers, workloads
from .measure import AccessLog, LogLine, ProcResult
from .origin import S3LIKE_FIRST_BYTE_MS, S3LIKE_RATE, Origin, parse_size
from .workloads import Workload

BENCH_DIR = Path(__file__).resolve().parent
WORK = workloads.DEFAULT_WORK_DIR
MiB = 1024 * 1024
MB = 1_000_000

ALL_WORKLOADS = ("large", "subject", "s3like", "resume", "scale", "large-https", "subject-https", "verify",
                 "startup", "memory", "scaling")
DEFAULT_WORKLOADS = tuple(w for w in ALL_WORKLOADS if w != "memory")  # subject records the same peak PSS
ALL_TOOLS = ("hcpsync", "s5cmd", "awscli", "boto3", "curl")
HCPSYNC_CONCURRENCY = 64  # hcpsync's default; the budget every peer gets
VERIFY_CAP = 250 * 1_000_000  # the verify section's aggregate cap (bytes/s), below 2 cores' MD5 rate
STARTUP_PATH = "MNINonLinear/Results/tfMRI_MOTOR_LR/EVs/cue.txt"  # the one-kib workload's object
MD5SUM = "md5sum"  # the hashing reference of the verify section (a Variant tool, not a peer)
ANALYSIS_BEGIN, ANALYSIS_END = "<!-- analysis:begin -->", "<!-- analysis:end -->"
BASELINE = "hcpsync (baseline)"  # --baseline: another build of hcpsync, in the same rounds


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of every timed process: :func:`peers.clean_env` (no AWS credentials), and
    Python bytecode caching on, in ``work/pycache``: with ``PYTHONDONTWRITEBYTECODE`` set (as in
    this sandbox) an editable install of hcpsync would compile its own modules on every start,
    which no installed copy does."""
    env = peers.clean_env(extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    return env


HCPSYNC_CMD: list[str] = []  # --hcpsync: another hcpsync command to benchmark as "hcpsync"


def hcpsync_argv0() -> list[str]:
    """``--hcpsync`` if given, else the installed ``hcpsync`` script beside this interpreter (no
    pyenv shim), else ``-m``."""
    if HCPSYNC_CMD:
        return list(HCPSYNC_CMD)
    cand = Path(sys.executable).parent / "hcpsync"
    return [str(cand)] if os.access(cand, os.X_OK) else [sys.executable, "-m", "hcpsync"]


# ------------------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    """One way of downloading a workload: a tool and its settings."""

    label: str  # unique within a workload
    tool: str  # one of ALL_TOOLS
    hcpsync_args: tuple[str, ...] = ()
    concurrency: int = HCPSYNC_CONCURRENCY  # peers: files (workers) in flight
    file_concurrency: int = 1  # peers: ranged GETs per file
    part_size: int = 8 * MiB
    plain_origin: bool = False  # curl: against a plain origin (the link) even in s3like mode
    note: str = ""
    argv0: tuple[str, ...] = ()  # hcpsync: another build's command (--baseline), else this one's

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", self.label).strip("-").lower()


def large_variants(n_files: int) -> list[Variant]:
    per_file = max(1, HCPSYNC_CONCURRENCY // n_files)
    return [
        Variant("hcpsync", "hcpsync", note="defaults: --concurrency 64, 8 MiB parts over 16 MiB, verification on"),
        Variant("hcpsync --no-verify", "hcpsync", ("--no-verify",),
                note="what verifying the 4 GiB (listed in the 3 manifests) costs on an uncapped loopback origin"),
        Variant("hcpsync --part-size 32MiB", "hcpsync", ("--part-size", "32MiB")),
        Variant("hcpsync --part-size 64MiB --concurrency 32", "hcpsync", ("--part-size", "64MiB", "--concurrency", "32")),
        Variant(f"s5cmd ({n_files}x{per_file}, 8 MiB)", "s5cmd", concurrency=HCPSYNC_CONCURRENCY, file_concurrency=per_file,
                note=f"--numworkers 64, cp --concurrency {per_file} (x {n_files} files = 64 in flight), --part-size 8"),
        Variant(f"s5cmd ({n_files}x{per_file}, 50 MiB)", "s5cmd", concurrency=HCPSYNC_CONCURRENCY, file_concurrency=per_file,
                part_size=50 * MiB, note="its default part size (50 MiB)"),
        Variant("aws-cli", "awscli", note="max_concurrent_requests = 64, multipart_chunksize = 8 MiB"),
        Variant("boto3", "boto3", concurrency=n_files, file_concurrency=per_file,
                note=f"{n_files} files x max_concurrency {per_file}, 8 MiB parts"),
        Variant("curl", "curl", note=f"{n_files} parallel 'curl -o FILE', one stream per object"),
    ]


def subject_variants() -> list[Variant]:
    return [
        Variant("hcpsync", "hcpsync", note="defaults: verification on, journal on"),
        Variant("hcpsync --no-verify", "hcpsync", ("--no-verify",)),
        Variant("hcpsync --no-journal", "hcpsync", ("--no-journal",)),
        Variant("s5cmd", "s5cmd", concurrency=HCPSYNC_CONCURRENCY, file_concurrency=5,
                note="--numworkers 64, cp --concurrency 5 (its default), --part-size 8"),
        Variant("s5cmd --numworkers 256", "s5cmd", concurrency=256, file_concurrency=5,
                note="s5cmd's default worker count (more than the budget of 64)"),
        Variant("aws-cli", "awscli", note="max_concurrent_requests = 64, multipart_chunksize = 8 MiB"),
        Variant("boto3", "boto3", concurrency=HCPSYNC_CONCURRENCY, file_concurrency=1,
                note="64 files at once, download_file each, 8 MiB parts"),
    ]


def s3like_variants(n_large_files: int, small: bool) -> list[Variant]:
    per_file = max(1, HCPSYNC_CONCURRENCY // n_large_files)
    out = [
        Variant("hcpsync", "hcpsync"),
        Variant("s5cmd", "s5cmd", concurrency=HCPSYNC_CONCURRENCY, file_concurrency=5 if small else per_file,
                note="--numworkers 64, cp --concurrency " + ("5" if small else str(per_file)) + ", --part-size 8"),
    ]
    if not small:
        out.append(Variant("curl (plain origin = link)", "curl", plain_origin=True,
                           note=f"{n_large_files} parallel curls against a plain (uncapped) origin on the same files"))
    return out


def https_variants(section: str, n_files: int) -> list[Variant]:
    """The HTTPS sections: hcpsync's defaults (and ``--no-verify`` on subject), s5cmd as in the
    plain sections, and on large the 4 curls (aws-cli and boto3 and the other hcpsync settings stay
    in the plain sections: the targets are against s5cmd)."""
    if section == "large-https":
        keep = {"hcpsync", "curl"}
        base = large_variants(n_files)
    else:
        keep = {"hcpsync", "hcpsync --no-verify"}
        base = subject_variants()
    return [v for v in base if v.label in keep or v.tool == "s5cmd"]


def verify_variants() -> list[Variant]:
    return [
        Variant("hcpsync", "hcpsync", note="defaults: verification on"),
        Variant("hcpsync --no-verify", "hcpsync", ("--no-verify",)),
        Variant(MD5SUM, MD5SUM, note="xargs md5sum over the files the manifests list (the source tree, page cache warm)"),
    ]


def scaling_variants() -> list[Variant]:
    return [Variant(f"hcpsync --workers {n}", "hcpsync", ("--workers", str(n))) for n in (1, 2)]


def hcpsync_has_workers(argv0: Sequence[str] | None = None) -> bool:
    """Whether this hcpsync's ``pull --help`` mentions ``--workers``."""
    try:
        res = subprocess.run([*(argv0 or hcpsync_argv0()), "pull", "--help"], capture_output=True, text=True,
                             timeout=60, check=False, env=child_env({}))
    except (OSError, subprocess.SubprocessError):
        return False
    return "--workers" in res.stdout


# ------------------------------------------------------------------------------ commands


@dataclass
class Target:
    wl: Workload
    url: str
    plain_url: str | None = None
    ca_bundle: Path | None = None  # HTTPS: the CA to trust (hcpsync --ca-bundle, curl --cacert)

    @property
    def tls(self) -> bool:
        return self.url.startswith("https:")

    @property
    def release(self) -> str:
        return self.wl.prefix.strip("/").split("/")[0]

    @property
    def subject(self) -> str:
        return self.wl.prefix.strip("/").split("/")[1]


def build(v: Variant, t: Target, dest: Path, scratch: Path) -> tuple[list[list[str]], dict[str, str]]:
    """argv(s) and extra environment of variant ``v`` downloading ``t`` into ``dest``."""
    if v.tool == "hcpsync":
        argv = [
            *(v.argv0 or hcpsync_argv0()), "pull", "--endpoint-url", t.url, "--no-sign-request", "--bucket", t.wl.bucket,
            "--release", t.release, "--subject", t.subject, "--dest", str(dest), "--no-progress", "--json",
            *(["--ca-bundle", str(t.ca_bundle)] if t.tls and t.ca_bundle else []),
            *v.hcpsync_args,
        ]
        return [argv], {}
    if v.tool == "curl":
        # one curl per big object (the streams that carry the bytes), one more for the small ones
        # (the .xdlm manifests), sequentially on one connection
        plain = v.plain_origin and t.plain_url
        url = t.plain_url if plain and t.plain_url else t.url
        tls = [] if plain or not t.tls or not t.ca_bundle else ["--cacert", str(t.ca_bundle)]
        argvs, small = [], []
        for o in t.wl.objects:
            out = ["-o", str(dest / o.key[len(t.wl.prefix) :]), t.wl.url_of(url, o.key)]
            if o.size > 16 * MiB:
                argvs.append(["curl", "-sS", "--fail", "--create-dirs", *tls, *out])
            else:
                small += out
        if small:
            argvs.append(["curl", "-sS", "--fail", "--create-dirs", *tls, *small])
        return argvs, {}
    if v.tool == MD5SUM:
        listing = scratch / "md5sum.files"
        listing.write_bytes(b"".join(str(t.wl.path_of(o.key)).encode() + b"\0" for o in verified_objects(t.wl)))
        return [["xargs", "-0", "-a", str(listing), "md5sum", "--"]], {}
    name = {"awscli": "aws-cli"}.get(v.tool, v.tool)
    pull = peers.Pull(t.url, t.wl.bucket, t.wl.prefix, dest, concurrency=v.concurrency,
                      file_concurrency=v.file_concurrency, part_size=v.part_size, no_verify_ssl=t.tls)
    cmd = peers.PEERS[name](pull, scratch)
    return [cmd.argv], cmd.env


def n_big(wl: Workload) -> int:
    """Objects over the multipart threshold (16 MiB): the files the large layouts split (4 in ``large``)."""
    return sum(1 for o in wl.objects if o.size > 16 * MiB) or 1


def verified_objects(wl: Workload) -> list[workloads.WorkloadObject]:
    """The objects a verifying client checks: those the workload's ``.xdlm`` manifests list."""
    return [o for o in wl.data_objects if wl.xdlm_objects]


def check_md5sum_output(wl: Workload, stdout: str) -> tuple[bool, str, int]:
    """``md5sum`` lines against the workload's MD5s: (ok, summary, bytes hashed)."""
    want = {str(wl.path_of(o.key)): o for o in verified_objects(wl)}
    seen, bad, nbytes = 0, 0, 0
    for line in stdout.splitlines():
        digest, _, path = line.partition("  ")
        o = want.get(path)
        if o is None:
            continue
        seen += 1
        nbytes += o.size
        bad += digest != o.md5
    ok = seen == len(want) and not bad
    return ok, f"md5sum {'OK' if ok else 'FAILED'}: {seen} of {len(want)} files hashed, {bad} differ", nbytes


def shell_of(argvs: list[list[str]], env: dict[str, str]) -> str:
    envs = " ".join(f"{k}={shlex.quote(val)}" for k, val in env.items())
    first = (envs + " " if envs else "") + shlex.join(argvs[0])
    return first if len(argvs) == 1 else f"{first} & ... ({len(argvs)} processes in parallel)"


def verify_root(v: Variant, t: Target, dest: Path) -> Path:
    """Where the variant puts ``<key minus the workload prefix>``."""
    return dest / t.subject if v.tool == "hcpsync" else dest


# ------------------------------------------------------------------------------ the system


def drop_dest(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)


def settle(drop_caches: bool) -> None:
    os.sync()
    if drop_caches:
        with contextlib.suppress(OSError):
            Path("/proc/sys/vm/drop_caches").write_text("1\n")


def system_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``: everything but idle and iowait)."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / measure.CLK_TCK


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _version(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    return (res.stdout + res.stderr).strip().splitlines()[0] if (res.stdout + res.stderr).strip() else "?"


def machine_info() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    deps = {}
    for name in ("hcpsync", "aiobotocore", "botocore", "aiohttp", "tqdm"):
        try:
            deps[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            deps[name] = "missing"
    pp = peers.peer_python()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "hcpsync_deps": deps,
        "hcpsync_cmd": shlex.join(hcpsync_argv0()),
        "hcpsync_version": _version([*hcpsync_argv0(), "--version"]),
        "hcpsync_workers_flag": hcpsync_has_workers(),
        "hcpsync_commit": _version(["git", "-C", str(BENCH_DIR.parent), "log", "-1", "--format=%h %ci %s"]),
        "hcpsync_dirty": bool(_version(["git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "hcpsync"])
                              .strip() not in ("", "?")),
        "s5cmd": _version([peers.s5cmd_binary() or "s5cmd", "version"]),
        "aws_cli": _version([peers.peer_bin("aws") or "aws", "--version"]),
        "boto3": _version([pp, "-c", "import boto3, s3transfer; print('boto3', boto3.__version__, "
                           "'s3transfer', s3transfer.__version__)"]),
        "nginx": _version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "curl": _version(["curl", "--version"]),
        "dirty_ratio": Path("/proc/sys/vm/dirty_ratio").read_text().strip(),
        "dirty_background_ratio": Path("/proc/sys/vm/dirty_background_ratio").read_text().strip(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip(),
    }


# ------------------------------------------------------------------------------ running


@dataclass
class RunRecord:
    workload: str
    variant: str
    tool: str
    round: int
    wall_s: float
    user_s: float
    sys_s: float
    cpu_s: float
    maxrss_mib: float
    returncode: int
    ok: bool
    check: str
    origin_cpu_s: float
    other_cpu_s: float  # CPU busy on the machine that was neither the client nor the origin
    loadavg: float
    log: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: str = ""
    peak_pss_mib: float = 0.0  # the largest sum of PSS over the run's processes
    max_procs: int = 0  # the most processes of the run alive at once (sampled)
    hashed_bytes: int = 0  # md5sum: bytes it hashed


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runs = 1 if args.quick else args.runs
        self.tools = set(args.tools)
        self.md5_check = args.md5_check
        self.records: list[RunRecord] = []
        self.commands: dict[str, dict[str, str]] = {}
        self.sections: dict[str, dict[str, Any]] = {}
        self.dest_root = WORK / "dest"
        self.scratch = WORK / "scratch"

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def workload(self, name: str) -> Workload:
        wl_name = f"{name}-tiny" if self.args.quick and not name.endswith("-tiny") else name
        return workloads.ensure(wl_name, WORK, log=True)

    def wanted(self, variants: list[Variant]) -> list[Variant]:
        """The variants of the selected tools, and with --baseline the other build's defaults."""
        out = [v for v in variants if v.tool in self.tools]
        if self.args.baseline and "hcpsync" in self.tools:
            out.insert(1, Variant(BASELINE, "hcpsync", argv0=(self.args.baseline,),
                                  note=f"defaults, run as {self.args.baseline}"))
        return out

    # -- one run

    def one_run(self, section: str, v: Variant, t: Target, origin: Origin, alog: AccessLog, rnd: int,
                md5: bool) -> RunRecord:
        dest = self.dest_root / section / v.slug
        scratch = self.scratch / section / v.slug
        drop_dest(dest)
        settle(self.args.drop_caches)
        t.wl.warm()
        dest.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        argvs, env = build(v, t, dest, scratch)
        self.commands.setdefault(section, {})[v.label] = shell_of(argvs, env)
        alog.skip_to_end(settle=0)
        pids = measure.origin_pids(origin)
        o0, b0, load = measure.cpu_seconds(pids), system_busy_s(), loadavg()
        res = measure.run_measured(argvs, child_env(env), scratch / f"round{rnd}", timeout=self.args.timeout)
        o1, b1 = measure.cpu_seconds(pids), system_busy_s()
        lines = alog.read_new()
        rec = self._record(section, v, rnd, res, o1 - o0, (b1 - b0) - (o1 - o0) - res.cpu_s, load, lines)
        if res.returncode == 0 and v.tool == MD5SUM:
            rec.ok, rec.check, rec.hashed_bytes = check_md5sum_output(t.wl, res.stdout)
        elif res.returncode == 0:
            vr = workloads.verify(t.wl, verify_root(v, t, dest), strip_prefix=t.wl.prefix, check_md5=md5)
            rec.ok = vr.ok
            rec.check = ("md5 " if md5 else "size ") + vr.summary()
        else:
            rec.ok = False
            rec.check = f"exit {res.returncode}"
            rec.error = res.stderr_tail
        self.records.append(rec)
        self.log(f"{section:8s} r{rnd} {v.label:45s} {rec.wall_s:7.2f} s  cpu {rec.cpu_s:6.2f} s  "
                 f"pss {rec.peak_pss_mib:6.1f} MiB ({rec.max_procs} proc)  req {rec.log.get('requests', 0):6d}  "
                 f"other-cpu {rec.other_cpu_s:5.1f} s  {rec.check}")
        drop_dest(dest)
        return rec

    def _record(self, section: str, v: Variant, rnd: int, res: ProcResult, origin_cpu: float, other: float,
                load: float, lines: list[LogLine]) -> RunRecord:
        report = None
        if v.tool == "hcpsync" and res.stdout.strip():
            with contextlib.suppress(ValueError):
                report = json.loads(res.stdout)
        return RunRecord(
            section, v.label, v.tool, rnd, round(res.wall_s, 3), round(res.user_s, 3), round(res.sys_s, 3),
            round(res.cpu_s, 3), round(res.maxrss_kib / 1024, 1), res.returncode, res.returncode == 0, "",
            round(origin_cpu, 3), round(max(0.0, other), 3), load, measure.summarize_log(lines), report,
            peak_pss_mib=round(res.peak_pss_kib / 1024, 1), max_procs=res.max_procs,
        )

    def rounds(self, section: str, variants: list[Variant], t: Target, origin: Origin, runs: int) -> None:
        alog = AccessLog(origin.access_log_path)
        for rnd in range(runs):
            k = rnd % len(variants)
            order = variants[k:] + variants[:k]
            for v in order:
                md5 = self.md5_check == "all" or (self.md5_check == "first" and rnd == 0)
                self.one_run(section, v, t, origin, alog, rnd, md5)

    # -- workloads

    def run_large(self) -> None:
        wl = self.workload("large")
        variants = self.wanted(large_variants(n_big(wl)))
        with Origin(wl.root, access_log=True) as origin:
            self.rounds("large", variants, Target(wl, origin.url), origin, self.runs)
        self.sections["large"] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes,
                                  "variants": [asdict(v) for v in variants]}

    def run_subject(self) -> None:
        wl = self.workload("subject")
        variants = self.wanted(subject_variants())
        with Origin(wl.root, access_log=True) as origin:
            self.rounds("subject", variants, Target(wl, origin.url), origin, self.runs)
        self.sections["subject"] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes,
                                    "variants": [asdict(v) for v in variants]}

    def run_s3like(self) -> None:
        big = self.args.s3like_large if not self.args.quick else "large-tiny"
        for section, wl_name, small in (("s3like-large", big, False), ("s3like-small", "subject-tiny", True)):
            wl = workloads.ensure(wl_name, WORK, log=True)
            n_large = n_big(wl)
            variants = [v for v in s3like_variants(n_large, small) if v.tool in self.tools]
            with Origin(wl.root, s3like=True, access_log=True) as origin, Origin(wl.root) as plain:
                t = Target(wl, origin.url, plain.url)
                self.rounds(section, variants, t, origin, max(self.runs, 3) if small else self.runs)
                desc = origin.describe()
            self.sections[section] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes,
                                      "origin": desc, "variants": [asdict(v) for v in variants],
                                      "ideal": s3like_ideal(wl, HCPSYNC_CONCURRENCY, 8 * MiB, 16 * MiB)}

    def run_https(self, section: str) -> None:
        """``large-https`` / ``subject-https``: the workload from nginx over TLS."""
        wl = self.workload(section.removesuffix("-https"))
        variants = [v for v in https_variants(section, n_big(wl)) if v.tool in self.tools]
        with Origin(wl.root, access_log=True, tls=True) as origin:
            t = Target(wl, origin.url, ca_bundle=origin.ca_bundle)
            self.rounds(section, variants, t, origin, self.runs)
            desc = origin.describe()
        self.sections[section] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes, "origin": desc,
                                  "variants": [asdict(v) for v in variants]}

    def run_verify(self) -> None:
        """Verification on vs off where the link, not the CPU, is the limit: an S3-like origin whose
        aggregate (``--verify-cap`` over 64 requests) is below what 2 cores hash; md5sum over the
        same files in the same rounds for the CPU cost of hashing a byte."""
        if "hcpsync" not in self.tools:
            return
        cap = self.args.verify_cap
        rate = max(1, cap // HCPSYNC_CONCURRENCY)
        for name in ("subject", "large"):
            section = f"verify-{name}"
            wl = self.workload(name)
            variants = verify_variants()
            with Origin(wl.root, s3like=True, rate=rate, first_byte_ms=S3LIKE_FIRST_BYTE_MS, access_log=True) as origin:
                self.rounds(section, variants, Target(wl, origin.url), origin, self.runs)
                desc = origin.describe()
            vo = verified_objects(wl)
            self.sections[section] = {
                "workload": wl.name, "files": wl.count, "bytes": wl.total_bytes, "origin": desc,
                "variants": [asdict(v) for v in variants], "cap_bytes_per_s": rate * HCPSYNC_CONCURRENCY,
                "rate_per_request": rate, "verified_files": len(vo), "verified_bytes": sum(o.size for o in vo),
                "ideal": s3like_ideal(wl, HCPSYNC_CONCURRENCY, 8 * MiB, 16 * MiB, rate, S3LIKE_FIRST_BYTE_MS),
            }

    def run_startup(self) -> None:
        """``--version`` and a pull of one 1 KiB object: hcpsync against s5cmd, interleaved."""
        wl = workloads.ensure("one-kib", WORK, log=True)
        obj = next(o for o in wl.data_objects)
        runs = max(10, self.args.startup_runs) if not self.args.quick else 10
        s5 = peers.s5cmd_binary() if "s5cmd" in self.tools else None
        section = "startup"
        with Origin(wl.root) as origin:
            t = Target(wl, origin.url)
            cmds: dict[str, tuple[str, Callable[[Path], list[str]]]] = {}
            if "hcpsync" in self.tools:
                cmds["hcpsync --version"] = ("hcpsync", lambda d: [*hcpsync_argv0(), "--version"])
                cmds["hcpsync pull (1 KiB)"] = ("hcpsync", lambda d: [
                    *hcpsync_argv0(), "pull", "--endpoint-url", t.url, "--no-sign-request", "--bucket", wl.bucket,
                    "--release", t.release, "--subject", t.subject, "--path", STARTUP_PATH, "--dest", str(d),
                    "--no-progress", "--json"])
            if s5:
                cmds["s5cmd version"] = ("s5cmd", lambda d: [s5, "version"])
                cmds["s5cmd cp (1 KiB)"] = ("s5cmd", lambda d: [
                    s5, "--endpoint-url", t.url, "--no-sign-request", "cp", f"s3://{wl.bucket}/{obj.key}", f"{d}/"])
            labels = list(cmds)
            pids = measure.origin_pids(origin)
            for rnd in range(runs):
                k = rnd % len(labels) if labels else 0
                for label in labels[k:] + labels[:k]:
                    tool, make = cmds[label]
                    dest = self.dest_root / section / re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
                    scratch = self.scratch / section / re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
                    drop_dest(dest)
                    dest.mkdir(parents=True)
                    argv = make(dest)
                    self.commands.setdefault(section, {})[label] = shlex.join(argv)
                    o0, b0, load = measure.cpu_seconds(pids), system_busy_s(), loadavg()
                    res = measure.run_measured([argv], child_env({"AWS_REGION": "us-east-1"} if tool == "s5cmd" else {}),
                                               scratch / f"round{rnd}", timeout=120, pss_interval=0.01)
                    o1, b1 = measure.cpu_seconds(pids), system_busy_s()
                    v = Variant(label, tool)
                    rec = self._record(section, v, rnd, res, o1 - o0, (b1 - b0) - (o1 - o0) - res.cpu_s, load, [])
                    if res.returncode != 0:
                        rec.ok, rec.check, rec.error = False, f"exit {res.returncode}", res.stderr_tail
                    elif "version" in label:
                        rec.check = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "ok"
                    else:
                        got = dest / (t.subject + "/" + STARTUP_PATH if tool == "hcpsync" else obj.key.rsplit("/", 1)[1])
                        rec.ok = got.is_file() and got.stat().st_size == obj.size
                        rec.check = f"{obj.size} B file {'OK' if rec.ok else 'MISSING/WRONG'}"
                    self.records.append(rec)
                    drop_dest(dest)
                self.log(f"startup  r{rnd} " + "  ".join(
                    f"{r.variant}: {r.wall_s:.3f} s" for r in self.records if r.workload == section and r.round == rnd))
        self.sections[section] = {"workload": wl.name, "files": 1, "bytes": obj.size, "runs": runs,
                                  "object": obj.key, "labels": labels}

    def run_memory(self) -> None:
        """Peak PSS on subject at the defaults: hcpsync and s5cmd only (every section records PSS)."""
        wl = self.workload("subject")
        variants = [v for v in subject_variants() if v.label in ("hcpsync", "s5cmd") and v.tool in self.tools]
        with Origin(wl.root, access_log=True) as origin:
            self.rounds("memory", variants, Target(wl, origin.url), origin, self.runs)
        self.sections["memory"] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes,
                                   "variants": [asdict(v) for v in variants]}

    def run_scaling(self) -> None:
        """hcpsync --workers 1 vs 2 on subject and large (only if this hcpsync has --workers)."""
        if "hcpsync" not in self.tools:
            return
        if not hcpsync_has_workers():
            note = f"skipped: '{shlex.join(hcpsync_argv0())} pull --help' has no --workers"
            self.log(f"scaling  {note}")
            self.sections["scaling"] = {"skipped": note}
            return
        for name in ("subject", "large"):
            section = f"scaling-{name}"
            wl = self.workload(name)
            variants = scaling_variants()
            with Origin(wl.root, access_log=True) as origin:
                self.rounds(section, variants, Target(wl, origin.url), origin, self.runs)
            self.sections[section] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes,
                                      "variants": [asdict(v) for v in variants]}

    def run_resume(self) -> None:
        wl = self.workload("large")
        out: dict[str, Any] = {"workload": wl.name, "files": wl.count, "bytes": wl.total_bytes, "runs": []}
        variants = [v for v in (
            Variant("hcpsync", "hcpsync"),
            Variant("s5cmd", "s5cmd", concurrency=64, file_concurrency=max(1, 64 // n_big(wl))),
            Variant("aws-cli", "awscli"),
        ) if v.tool in self.tools]
        with Origin(wl.root, access_log=True) as origin:
            t = Target(wl, origin.url)
            for v in variants:
                out["runs"].append(self.resume_one(v, t, origin))
        self.sections["resume"] = out

    def resume_one(self, v: Variant, t: Target, origin: Origin) -> dict[str, Any]:
        dest = self.dest_root / "resume" / v.slug
        scratch = self.scratch / "resume" / v.slug
        drop_dest(dest)
        settle(self.args.drop_caches)
        t.wl.warm()
        dest.mkdir(parents=True)
        scratch.mkdir(parents=True, exist_ok=True)
        alog = AccessLog(origin.access_log_path)
        alog.skip_to_end(settle=0)
        argvs, env = build(v, t, dest, scratch)
        total = t.wl.total_bytes
        target = total * self.args.kill_at
        written_at_kill: list[int] = []

        def past_half(procs: list[subprocess.Popen[bytes]]) -> bool:
            w = sum(measure.proc_io(pid).get("wchar", 0) for pid in measure.process_tree([p.pid for p in procs]))
            if w >= target:
                written_at_kill.append(w)
                return True
            return False

        first = measure.run_measured(argvs, child_env(env), scratch / "first", timeout=self.args.timeout,
                                     kill_when=past_half, poll_s=0.002)
        lines1 = alog.read_new()
        root = verify_root(v, t, dest)
        expected = {o.key[len(t.wl.prefix) :]: o.size for o in t.wl.objects}
        files_done_1 = sum(1 for rel, size in expected.items() if _size(root / rel) == size)
        # the second run: the same command (aws-cli/s5cmd: their 'sync', which skips complete files)
        argvs2, env2 = build_resume(v, t, dest, scratch, argvs, env)
        second = measure.run_measured(argvs2, child_env(env2), scratch / "second", timeout=self.args.timeout)
        lines2 = alog.read_new()
        vr = workloads.verify(t.wl, verify_root(v, t, dest), strip_prefix=t.wl.prefix, check_md5=True,
                              allow_extra=True)
        refetched = overlap_bytes(lines1, lines2)
        res = {
            "variant": v.label,
            "tool": v.tool,
            "command": shell_of(argvs, env),
            "resume_command": shell_of(argvs2, env2),
            "killed": first.killed,
            "first_wall_s": round(first.wall_s, 3),
            "written_at_kill": written_at_kill[0] if written_at_kill else None,
            "first_served_bytes": sum(ln.body_bytes for ln in lines1 if not ln.is_listing),
            "files_complete_after_kill": files_done_1,
            "second_wall_s": round(second.wall_s, 3),
            "second_rc": second.returncode,
            "second_served_bytes": sum(ln.body_bytes for ln in lines2 if not ln.is_listing),
            "second_requests": len(lines2),
            "refetched_bytes": refetched,
            "bound_bytes": HCPSYNC_CONCURRENCY * 8 * MiB if v.tool == "hcpsync" else None,
            "verify": vr.summary(),
            "leftovers": sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                                if p.is_file() and p.relative_to(root).as_posix() not in expected)[:10],
        }
        if second.returncode != 0:
            res["second_error"] = second.stderr_tail
        self.log(f"resume   {v.label:10s} killed at {res['written_at_kill']} B written "
                 f"({res['first_served_bytes']} B served); 2nd run {res['second_served_bytes']} B served, "
                 f"{refetched} B fetched twice; {res['verify']}")
        drop_dest(dest)
        return res

    def warm_up(self) -> None:
        """Untimed: every tool pulls subject-tiny once (fills the bytecode cache, loads the binaries)."""
        wl = workloads.ensure("subject-tiny", WORK, log=True)
        tools = [v for v in subject_variants() if v.tool in self.tools and v.label in ("hcpsync", "s5cmd", "aws-cli",
                                                                                          "boto3")]
        if "curl" in self.tools:
            tools.append(Variant("curl", "curl"))
        with Origin(wl.root) as origin:
            t = Target(wl, origin.url)
            for v in tools:
                dest = self.dest_root / "warm-up" / v.slug
                scratch = self.scratch / "warm-up" / v.slug
                drop_dest(dest)
                dest.mkdir(parents=True)
                scratch.mkdir(parents=True, exist_ok=True)
                argvs, env = build(v, t, dest, scratch)
                res = measure.run_measured(argvs[:8], child_env(env), scratch, timeout=300)
                self.log(f"warm-up  {v.label:10s} exit {res.returncode} in {res.wall_s:.2f} s")
                drop_dest(dest)

    def run_scale(self) -> None:
        """Issue 13's release-scale targets: :mod:`benchmarks.scale`, every scenario (fresh hcpsync
        processes against a generated release served by :mod:`benchmarks.synthrelease`)."""
        from . import scale

        quick = self.args.quick
        hc = scale.Hcpsync.probe(hcpsync_argv0(), scale.MAX_AS_GB)
        opts = scale.Options(
            hc, WORK / "scale", scale.DEST_ROOT,
            plan_sizes=[10_000, 100_000] if quick else list(scale.PLAN_SIZES),
            plan_subjects=10 if quick else scale.RELEASE_SUBJECTS,
            ttfb_subjects=10 if quick else scale.RELEASE_SUBJECTS,
            pull_objects=20_000 if quick else 1_000_000,
            timeout=self.args.timeout, log=lambda msg: self.log(f"scale    {msg}"))
        settle(False)
        doc = scale.run(opts, scale.SCENARIOS)
        self.sections["scale"] = doc
        self.commands["scale"] = doc["commands"]

    def run_profile(self) -> None:
        from . import profile

        self.sections["profile"] = {}
        for name in ("subject", "large", "large-https"):
            if name not in self.args.workloads:
                continue
            tls = name.endswith("-https")
            wl = self.workload(name.removesuffix("-https"))
            self.log(f"profile  hcpsync on {wl.name}{' over HTTPS' if tls else ''} (py-spy)")
            self.sections["profile"][name] = profile.profile_pull(wl, self.dest_root / "profile", self.scratch / "profile",
                                                                  tls=tls)


def build_resume(v: Variant, t: Target, dest: Path, scratch: Path, argvs: list[list[str]],
                 env: dict[str, str]) -> tuple[list[list[str]], dict[str, str]]:
    """hcpsync: the same command; s5cmd and aws-cli: ``sync`` (they have no resume; sync skips complete files)."""
    if v.tool == "hcpsync":
        return argvs, env
    argv = list(argvs[0])
    if v.tool == "s5cmd":
        i = argv.index("cp")
        argv[i] = "sync"
    elif v.tool == "awscli":
        i = argv.index("cp")
        argv[i] = "sync"
        argv.remove("--recursive")
    return [argv], env


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return -1


def overlap_bytes(first: Sequence[LogLine], second: Sequence[LogLine]) -> int:
    """Bytes of each object sent in both runs (from Range start + body bytes sent)."""

    def ranges(lines: Sequence[LogLine]) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {}
        for ln in lines:
            if ln.is_listing or ln.method != "GET" or ln.body_bytes == 0 or ln.status not in (200, 206):
                continue
            out.setdefault(ln.key_path, []).append((ln.range_start, ln.range_start + ln.body_bytes))
        return {k: merge(v) for k, v in out.items()}

    a, b = ranges(first), ranges(second)
    total = 0
    for key, ra in a.items():
        for s1, e1 in ra:
            for s2, e2 in b.get(key, []):
                total += max(0, min(e1, e2) - max(s1, s2))
    return total


def merge(rs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(rs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def s3like_ideal(wl: Workload, concurrency: int, part: int, threshold: int, rate: int = S3LIKE_RATE,
                 first_byte_ms: int = S3LIKE_FIRST_BYTE_MS) -> dict[str, float]:
    """Lower bound of a pull's time on the S3-like origin with ``concurrency`` requests in flight,
    hcpsync's part layout, the origin's rate (per request) and first-byte delay, and no other limit."""
    delay = first_byte_ms / 1000
    reqs: list[float] = []
    for o in wl.objects:
        if o.size > threshold:
            reqs += [delay + min(part, o.size - s) / rate for s in range(0, o.size, part)]
        else:
            reqs.append(delay + o.size / rate)
    busy = sum(reqs)
    return {
        "requests": len(reqs),
        "request_seconds": round(busy, 3),
        "bound_s": round(max(busy / concurrency, max(reqs)) + delay, 3),  # + one listing
        "cap_mb_s": rate * concurrency / MB,
    }


# ------------------------------------------------------------------------------ summary


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def summarize(records: list[RunRecord], section: str, files: int, nbytes: int) -> list[dict[str, Any]]:
    rows: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.workload == section:
            rows.setdefault(r.variant, []).append(r)
    out = []
    for label, rs in rows.items():
        good = [r for r in rs if r.ok]
        wall = med([r.wall_s for r in good])
        reqs = med([float(r.log.get("requests", 0)) for r in good])
        if reqs == 0:  # it talked to another origin (the link measure): no access log there
            reqs = math.nan
        cpu = med([r.cpu_s for r in good])
        internal = [float(r.report["elapsed_seconds"]) for r in good if r.report]
        out.append({
            "variant": label,
            "tool": rs[0].tool,
            "runs": len(rs),
            "ok_runs": len(good),
            "walls": [r.wall_s for r in rs],
            "wall_s": wall,
            "mb_s": nbytes / MB / wall if good else math.nan,
            "files_s": files / wall if good else math.nan,
            "cpu_s": cpu,
            "user_s": med([r.user_s for r in good]),
            "sys_s": med([r.sys_s for r in good]),
            "maxrss_mib": med([r.maxrss_mib for r in good]),
            "maxrss_mib_max": max((r.maxrss_mib for r in good), default=math.nan),
            "peak_pss_mib": med([r.peak_pss_mib for r in good]),
            "peak_pss_mib_max": max((r.peak_pss_mib for r in good), default=math.nan),
            "max_procs": max((r.max_procs for r in good), default=0),
            "cpu_s_per_gb": cpu / (nbytes / 1e9) if good and nbytes else math.nan,
            "requests": reqs,
            "connections": med([float(r.log.get("connections", 0)) for r in good]),
            "req_s": reqs / wall if good else math.nan,
            "cpu_ms_per_req": 1000 * cpu / reqs if good else math.nan,
            "origin_cpu_s": med([r.origin_cpu_s for r in good]),
            "other_cpu_s": med([r.other_cpu_s for r in good]),
            "internal_elapsed_s": med(internal) if internal else None,
            "checks": sorted({r.check.split(":")[0] + ":" + r.check.split(":")[1][:30] if ":" in r.check
                              else r.check for r in rs}),
        })
    return out


def paired_ratio(records: list[RunRecord], section: str, a: str, b: str) -> dict[str, Any] | None:
    """Median over rounds of wall(a) / wall(b), using only rounds where both ran fine."""
    wa = {r.round: r.wall_s for r in records if r.workload == section and r.variant == a and r.ok}
    wb = {r.round: r.wall_s for r in records if r.workload == section and r.variant == b and r.ok}
    common = sorted(set(wa) & set(wb))
    if not common:
        return None
    ratios = [wa[i] / wb[i] for i in common]
    return {"a": a, "b": b, "wall_ratio": statistics.median(ratios), "per_round": [round(x, 3) for x in ratios],
            "throughput_ratio": statistics.median(wb[i] / wa[i] for i in common)}


def fmt(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


class Report:
    def __init__(self, bench: Bench, machine: dict[str, Any], started: float) -> None:
        self.b = bench
        self.machine = machine
        self.started = started
        self.data: dict[str, Any] = {"machine": machine, "args": vars(bench.args), "sections": {}, "targets": []}
        self.md: list[str] = []

    def targets(self, name: str, measured: str, ok: bool | None, goal: str) -> None:
        self.data["targets"].append({"target": name, "goal": goal, "measured": measured, "met": ok})

    def table(self, section: str, title: str) -> list[dict[str, Any]]:
        info = self.b.sections[section]
        rows = summarize(self.b.records, section, info["files"], info["bytes"])
        self.data["sections"][section] = {**info, "rows": rows}
        md = self.md
        md.append(f"### {title}\n")
        md.append(f"Workload `{info['workload']}`: {info['files']:,} files, {info['bytes'] / MB:,.0f} MB. "
                  f"Median of {max((r['runs'] for r in rows), default=0)} interleaved run(s).\n")
        md.append("| tool / variant | wall s (median) | MB/s | files/s | peak RSS MiB | peak PSS MiB (sum, procs) "
                  "| CPU s (user+sys) | CPU s/GB | requests | req/s | CPU s/1k req | origin CPU s | other CPU s "
                  "| runs (wall s) | check |")
        md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        for r in rows:
            md.append(
                f"| {r['variant']} | {fmt(r['wall_s'])} | {fmt(r['mb_s'], 0)} | {fmt(r['files_s'], 0)} "
                f"| {fmt(r['maxrss_mib'], 0)} | {fmt(r['peak_pss_mib'], 0)} ({r['max_procs']}) | {fmt(r['cpu_s'])} "
                f"| {fmt(r['cpu_s_per_gb'], 2)} | {fmt(r['requests'], 0)} | {fmt(r['req_s'], 0)} "
                f"| {fmt(r['cpu_ms_per_req'], 3)} | {fmt(r['origin_cpu_s'], 1)} | {fmt(r['other_cpu_s'], 1)} "
                f"| {', '.join(f'{w:.2f}' for w in r['walls'])} | {'; '.join(r['checks'])} |"
            )
        md.append("")
        return rows

    def baseline_ratios(self, section: str, peer_labels: list[str]) -> None:
        """With --baseline: this build against the other one, and the other one against the peers."""
        if self._row(section, BASELINE) is not None:
            self.ratios(section, "hcpsync", [BASELINE])
            self.ratios(section, BASELINE, peer_labels)

    def ratios(self, section: str, hcp: str, peers_: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        lines = []
        for p in peers_:
            r = paired_ratio(self.b.records, section, hcp, p)
            if r is None:
                continue
            out[p] = r
            lines.append(f"| {hcp} / {p} | {r['wall_ratio']:.3f} | {r['throughput_ratio']:.3f} | "
                         f"{', '.join(f'{x:.3f}' for x in r['per_round'])} |")
        if lines:
            self.md += ["| ratio (same rounds) | wall ratio (median) | throughput ratio (median) | per round (wall) |",
                        "| --- | ---: | ---: | --- |", *lines, ""]
        self.data["sections"][section].setdefault("ratios", {}).update({f"{hcp} / {p}": r for p, r in out.items()})
        return out

    def build(self) -> str:
        b, md = self.b, self.md
        m = self.machine
        md += [
            "# hcpsync benchmarks: results",
            "",
            f"Generated by `python -m benchmarks {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M %Z')} "
            f"in {(time.monotonic() - self.started) / 60:.1f} min. Raw data: `results.json`. "
            "Method: `benchmarks/runner.py` (docstring) and `benchmarks/README.md`.",
            "",
            "## Machine",
            "",
            f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, kernel {m['kernel']}, {m['os']}",
            f"- hcpsync at commit {m.get('hcpsync_commit', '?')}"
            + (" (with uncommitted changes in hcpsync/)" if m.get("hcpsync_dirty") else "") + f"; run as `{m['hcpsync_cmd']}`"
            + f" ({m.get('hcpsync_version', '?')}; `pull --workers`: {'yes' if m.get('hcpsync_workers_flag') else 'no'})",
            f"- Python {m['python']}; hcpsync deps: "
            + ", ".join(f"{k} {v}" for k, v in m["hcpsync_deps"].items()),
            f"- s5cmd {m['s5cmd']}; {m['aws_cli']}; {m['boto3']}; {m['nginx']}; {m['curl'].split(' (')[0]}",
            f"- vm.dirty_ratio {m['dirty_ratio']}, vm.dirty_background_ratio {m['dirty_background_ratio']}; "
            f"load average at start {m['loadavg_at_start']}",
            "- Columns: *peak RSS* from GNU time (sum over processes for curl); *peak PSS*: the largest sum of "
            "PSS over the run's process tree, sampled every 50 ms from `/proc/<pid>/smaps_rollup` (in brackets: the "
            "most processes seen at once); *CPU s* of the client (all its processes); *CPU s/GB* = client CPU / GB "
            "of the workload; "
            "*origin CPU s* nginx + listing service; *other CPU s*: CPU the machine spent busy outside the client "
            "and the origin during the run (kernel writeback and softirq threads, other users' jobs on this shared "
            "VM: the noise indicator); *requests* from the origin's access log; *CPU s/1k req* = client CPU per "
            "1,000 requests (= ms per request).",
            "",
            ANALYSIS_BEGIN,
            ANALYSIS_END,
            "",
            "## Results",
            "",
        ]
        if "large" in b.sections:
            self.large()
        if "subject" in b.sections:
            self.subject()
        for s in ("s3like-large", "s3like-small"):
            if s in b.sections:
                self.s3like(s)
        for s in ("large-https", "subject-https"):
            if s in b.sections:
                self.https(s)
        for s in ("verify-subject", "verify-large"):
            if s in b.sections:
                self.verify(s)
        if "startup" in b.sections:
            self.startup()
        if "memory" in b.sections:
            self.memory()
        if "scaling" in b.sections:
            self.md += [f"### scaling\n\n{b.sections['scaling']['skipped']}.\n"]
            self.data["sections"]["scaling"] = b.sections["scaling"]
        for s in ("scaling-subject", "scaling-large"):
            if s in b.sections:
                self.scaling(s)
        if "resume" in b.sections:
            self.resume()
        if "scale" in b.sections:
            self.scale()
        if "profile" in b.sections:
            self.profile()
        at = md.index("## Results")
        md[at:at] = self.issue12_md()
        self.targets_md()
        md += ["## Commands", ""]
        for section, cmds in b.commands.items():
            md.append(f"**{section}**\n")
            md += [f"- {label}: `{cmd}`" for label, cmd in cmds.items()]
            md.append("")
        self.data["commands"] = b.commands
        self.data["records"] = [asdict(r) for r in b.records]
        return "\n".join(md) + "\n"

    def _row(self, section: str, variant: str) -> dict[str, Any] | None:
        return next((r for r in self.data["sections"][section]["rows"] if r["variant"] == variant), None)

    def large(self) -> None:
        rows = self.table("large", "large: 4 x 1 GiB")
        # the best configuration that verifies, as the defaults do (--no-verify is reported beside it)
        hc = [r for r in rows if r["tool"] == "hcpsync" and r["ok_runs"] and r["variant"] != BASELINE
              and "--no-verify" not in r["variant"]]
        best = min(hc, key=lambda r: r["wall_s"]) if hc else None
        peer_labels = [r["variant"] for r in rows if r["tool"] != "hcpsync"]
        rs = self.ratios("large", "hcpsync", peer_labels)
        self.baseline_ratios("large", peer_labels)
        rb = self.ratios("large", best["variant"], peer_labels) if best and best["variant"] != "hcpsync" else rs
        self.data["sections"]["large"]["best_hcpsync"] = best["variant"] if best else None
        if best:
            self.md.append(f"Best hcpsync configuration here: **{best['variant']}** ({best['mb_s']:,.0f} MB/s).\n")
        s5 = [p for p in peer_labels if p.startswith("s5cmd")]
        for label, r in (("default", rs), (f"best ({best['variant'] if best else '-'})", rb)):
            for p in s5:
                if p in r:
                    x = r[p]["throughput_ratio"]
                    self.targets(f"large: hcpsync {label} vs {p}", f"{x:.3f}x", x >= 1.05, ">= 1.05x throughput")
            if "curl" in r:
                x = r["curl"]["throughput_ratio"]
                self.targets(f"large: hcpsync {label} vs curl", f"{x:.3f}x", x >= 0.9, ">= 0.9x throughput")

    def subject(self) -> None:
        rows = self.table("subject", "subject: 12,863 files of subject 100206")
        labels = [r["variant"] for r in rows]
        peer_labels = [r["variant"] for r in rows if r["tool"] != "hcpsync"]
        rs = self.ratios("subject", "hcpsync", peer_labels)
        self.baseline_ratios("subject", peer_labels)
        if "hcpsync --no-verify" in labels:
            self.ratios("subject", "hcpsync --no-verify", peer_labels)
        if "s5cmd" in rs:
            x = rs["s5cmd"]["wall_ratio"]
            self.targets("subject: hcpsync wall vs s5cmd", f"{x:.3f}x", x <= 1.0, "<= 1.0x wall")
        if "s5cmd --numworkers 256" in rs:
            x = rs["s5cmd --numworkers 256"]["wall_ratio"]
            self.targets("subject: hcpsync wall vs s5cmd (256 workers)", f"{x:.3f}x", x <= 1.0, "<= 1.0x wall (info)")
        if "aws-cli" in rs:
            x = rs["aws-cli"]["wall_ratio"]
            self.targets("subject: hcpsync wall vs aws-cli", f"{x:.3f}x", x <= 0.25, "<= 0.25x wall")
        h, s5 = self._row("subject", "hcpsync"), self._row("subject", "s5cmd")
        if h:
            self.targets("subject: hcpsync peak RSS", f"{h['maxrss_mib_max']:.0f} MiB (max of runs)",
                         h["maxrss_mib_max"] * MiB <= 150 * MB, "<= 150 MB")
            if s5:
                self.targets("subject: hcpsync peak RSS vs s5cmd", f"{h['maxrss_mib']:.0f} vs {s5['maxrss_mib']:.0f} MiB",
                             h["maxrss_mib"] <= s5["maxrss_mib"], "not above s5cmd's")
        nj = paired_ratio(self.b.records, "subject", "hcpsync", "hcpsync --no-journal")
        if nj:
            pct = (nj["wall_ratio"] - 1) * 100
            self.data["sections"]["subject"]["journal_overhead"] = nj
            self.md.append(
                f"**Journal overhead** (issue 3): hcpsync with the journal vs `--no-journal`, same rounds: "
                f"{pct:+.1f} % of wall time (median of per-round ratios {', '.join(map(str, nj['per_round']))}).\n")
            self.targets("journal overhead on subject", f"{pct:+.1f} % wall", None, "report")
        nv = paired_ratio(self.b.records, "subject", "hcpsync", "hcpsync --no-verify")
        if nv:
            self.md.append(f"**Verification on vs `--no-verify`**: {(nv['wall_ratio'] - 1) * 100:+.1f} % wall "
                           f"(per round {', '.join(map(str, nv['per_round']))}).\n")
            self.data["sections"]["subject"]["verify_overhead"] = nv
        reports = [r.report for r in self.b.records if r.workload == "subject" and r.variant == "hcpsync" and r.report]
        if reports:
            rep = reports[0]
            self.md.append(f"hcpsync's own report (verification on): verified {rep.get('verified')}, unverified "
                           f"{rep.get('unverified')}; notes: {'; '.join(rep.get('notes', [])[:3]) or 'none'}.\n")

    def s3like(self, section: str) -> None:
        info = self.b.sections[section]
        title = f"{section}: S3-like origin (25 MB/s per request, 20 ms first byte), `{info['workload']}`"
        rows = self.table(section, title)
        peer_labels = [r["variant"] for r in rows if r["tool"] != "hcpsync"]
        rs = self.ratios(section, "hcpsync", peer_labels)
        h = self._row(section, "hcpsync")
        link = self._row(section, "curl (plain origin = link)")
        ideal = info["ideal"]
        if h is None:
            return
        cap = ideal["cap_mb_s"]
        lines = []
        frac = None
        if link is not None:
            lines = [f"Allowed aggregate = min(link, 25 MB/s x 64 = {cap:,.0f} MB/s)"]
            allowed = min(link["mb_s"], cap)
            frac = h["mb_s"] / allowed
            lines[0] += f" = min({link['mb_s']:,.0f}, {cap:,.0f}) = **{allowed:,.0f} MB/s**; hcpsync reaches " \
                        f"{h['mb_s']:,.0f} MB/s = **{frac * 100:.0f} %** of it (wall clock, process start included)"
            if h.get("internal_elapsed_s"):
                fi = info["bytes"] / MB / h["internal_elapsed_s"] / allowed
                lines[0] += f"; {fi * 100:.0f} % on hcpsync's own elapsed time"
            lines[0] += "."
        bound = ideal["bound_s"]
        lines.append(f"Latency-aware lower bound for 64 requests in flight with hcpsync's part layout "
                     f"({ideal['requests']} requests, each 20 ms + size / 25 MB/s; link ignored): {bound:.2f} s; "
                     f"hcpsync's median wall {h['wall_s']:.2f} s = {bound / h['wall_s'] * 100:.0f} % of ideal"
                     + (f", own elapsed {h['internal_elapsed_s']:.2f} s = {bound / h['internal_elapsed_s'] * 100:.0f} %"
                        if h.get("internal_elapsed_s") else "") + ".")
        self.md += [*lines, ""]
        self.data["sections"][section]["fraction_of_allowed"] = frac
        self.data["sections"][section]["fraction_of_bound"] = bound / h["wall_s"] if h["wall_s"] else None
        if frac is not None:
            self.targets(f"{section}: hcpsync vs allowed aggregate", f"{frac * 100:.0f} %", frac >= 0.85, ">= 85 %")
        elif section == "s3like-small":
            f2 = bound / h["wall_s"]
            self.targets(f"{section}: hcpsync vs latency-aware bound (no link measure for small files)",
                         f"{f2 * 100:.0f} % (wall), "
                         + (f"{bound / h['internal_elapsed_s'] * 100:.0f} % (own elapsed)" if h.get("internal_elapsed_s")
                            else ""), f2 >= 0.85, ">= 85 %")
        if "s5cmd" in rs:
            x = rs["s5cmd"]["throughput_ratio"]
            self.targets(f"{section}: hcpsync vs s5cmd", f"{x:.3f}x throughput", x >= 1.2, ">= 1.2x")

    def resume(self) -> None:
        info = self.b.sections["resume"]
        self.data["sections"]["resume"] = info
        md = self.md
        md += [f"### resume: `{info['workload']}` killed (SIGKILL) at ~{self.b.args.kill_at * 100:.0f} % of its bytes, "
               "then pulled again\n",
               "| tool | written at kill (wchar) | files complete after kill | served, 1st run | served, 2nd run "
               "| fetched twice | bound | 2nd run wall s | result | leftovers |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for r in info["runs"]:
            bound = r["bound_bytes"]
            md.append(
                f"| {r['variant']} | {_mb(r['written_at_kill'])} | {r['files_complete_after_kill']} "
                f"| {_mb(r['first_served_bytes'])} | {_mb(r['second_served_bytes'])} | **{_mb(r['refetched_bytes'])}** "
                f"| {_mb(bound) if bound else 'whole unfinished files'} | {r['second_wall_s']:.2f} | {r['verify']} "
                f"| {', '.join(r['leftovers'][:3]) or '-'} |")
            if bound:
                self.targets("resume: hcpsync bytes fetched twice", f"{_mb(r['refetched_bytes'])}",
                             r["refetched_bytes"] <= bound, f"<= concurrency x part size = {_mb(bound)}")
        md += ["", "Fetched twice = bytes of each object the origin sent in both runs (intervals from the `Range` "
               "start and `$body_bytes_sent`); bytes in flight in socket buffers at the kill count as sent.", ""]

    def scale(self) -> None:
        info = self.b.sections["scale"]
        self.data["sections"]["scale"] = info
        if "sizes" in info:  # recorded by the in-process scale.py before issue 13
            self.md += ["### scale\n", "Recorded by the earlier in-process `scale.py` (planning and journaling without "
                        "network); regenerate with this code for the release-scale section.\n"]
            return
        res = info["results"]
        md = self.md
        md += ["### scale: release-scale plans and pulls (issue 13)\n",
               f"`benchmarks/scale.py` against `benchmarks/synthrelease.py` (a generated release: synthetic subjects of "
               f"{info['keys_per_subject']:,} keys, the service in its own process, its CPU not counted), hcpsync run "
               f"as `{info['hcpsync']}` ({info.get('hcpsync_version', '?')}) under `{info.get('wrapper') or '-'}`; "
               "optional flags found: "
               + (", ".join(f"`{c} {f}`" for c, fs in info["features"].items() for f, ok in fs.items() if ok) or "none")
               + ". Wall from spawn to exit; CPU from `wait4` (worker processes included); peak RSS from GNU time "
               "(the largest process); MB = 10^6 bytes.\n",
               "| run | objects | subjects | page delay s | wall s | CPU s | peak RSS MB | peak PSS MB | objects/s "
               "| listings (max in flight) | service CPU s | planned | exit |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
        plans = [("plan-rss", r) for r in res.get("plan-rss", {}).get("runs", [])]
        if "plan-15m" in res:
            plans.append(("plan-15m", res["plan-15m"]))
        for name, r in plans:
            md.append(f"| {name} | {r['objects']:,} | {r['subjects']:,} | {r['page_delay_s']} | {fmt(r['wall_s'])} "
                      f"| {fmt(r['cpu_s'])} | {fmt(r['peak_rss_mb'], 0)} | {fmt(r['peak_pss_mb'], 0)} "
                      f"| {fmt(float(r['objects_per_s'] or 0), 0)} | {r['lists']:,} ({r['lists_in_flight_max']}) "
                      f"| {fmt(r['service_cpu_s'], 1)} | {'-' if r['planned'] is None else format(r['planned'], ',')} "
                      f"| {r['returncode']} |")
        pulls = res.get("pull-rss") or res.get("noop")
        for label in ("first", "again") if pulls else ():
            r = pulls[label]
            md.append(f"| pull ({'first' if label == 'first' else 'no-op re-run'}) | {pulls['objects']:,} "
                      f"| {pulls['subjects']:,} | 0 | {fmt(r['wall_s'])} | {fmt(r['cpu_s'])} | {fmt(r['peak_rss_mb'], 0)} "
                      f"| {fmt(r['peak_pss_mb'], 0)} | {fmt(pulls['objects'] / r['wall_s'] if r['wall_s'] else None, 0)} "
                      f"| {r['lists']:,} ({r['lists_in_flight_max']}) | {fmt(r['service_cpu_s'], 1)} "
                      f"| {format(r['report'].get('planned') or 0, ',')} | {r['returncode']} |")
        md.append("")
        if pulls:
            md.append(f"Pulls: GETs at the service, first pull {pulls['first']['gets']} + {pulls['first']['manifest_gets']} "
                      f"manifests, no-op re-run {pulls['again']['gets']} + {pulls['again']['manifest_gets']} manifests; "
                      f"destination on `{Path(pulls['dest']).parent.parent}`, deleted in {pulls['cleanup_s']} s.\n")
        tt = res.get("ttfb")
        if tt:
            md.append(f"ttfb: pull of {tt['subjects']:,} subjects ({tt['objects']:,} tiny objects, {tt['page_delay_s']} s per "
                      f"page): first listing {fmt(tt['first_list_s'], 3)} s, first GET {fmt(tt['first_get_s'], 3)} s, first "
                      f"non-manifest GET {fmt(tt['first_data_get_s'], 3)} s after spawn ({tt['lists_before_first_get']:,} "
                      f"listings before it); SIGINT to its process group -> exit {tt['returncode']} after "
                      f"{fmt(tt['exit_after_sigint_s'], 2)} s" + (" (SIGKILLed after 60 s)" if tt["killed_after_60s"] else "")
                      + ".\n")
        md += ["#### Targets of issue 13\n", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
        for t in info["targets"]:
            md.append(f"| {t['target']} | {t['goal']} | {t['measured']} "
                      f"| {'n/a' if t['met'] is None else ('**met**' if t['met'] else '**missed**')} |")
        md.append("")
        self.data["issue13_targets"] = info["targets"]

    def profile(self) -> None:
        info = self.b.sections["profile"]
        self.data["sections"]["profile"] = info
        self.md += ["### Profiles of hcpsync (py-spy, whole run, default settings)\n"]
        for name, prof in info.items():
            self.md += [prof.get("markdown", f"{name}: {prof.get('error')}"), ""]

    # -- the sections of issue 12

    def https(self, section: str) -> None:
        info = self.b.sections[section]
        what = "4 x 1 GiB" if section.startswith("large") else "subject 100206"
        rows = self.table(section, f"{section}: {what} over HTTPS (nginx TLS, private CA; hcpsync --ca-bundle, "
                                   "s5cmd --no-verify-ssl, curl --cacert)")
        peer_labels = [r["variant"] for r in rows if r["tool"] != "hcpsync"]
        self.ratios(section, "hcpsync", peer_labels)
        if "hcpsync --no-verify" in [r["variant"] for r in rows]:
            self.ratios(section, "hcpsync --no-verify", peer_labels)
        self.data["sections"][section]["origin"] = info.get("origin")

    def verify(self, section: str) -> None:
        info = self.b.sections[section]
        cap = info["cap_bytes_per_s"]
        self.table(section, f"{section}: verification on vs `--no-verify`, S3-like origin capped at "
                            f"{cap / MB:,.0f} MB/s aggregate ({info['rate_per_request'] / MB:.2f} MB/s x 64 "
                            f"requests, {S3LIKE_FIRST_BYTE_MS} ms first byte), and md5sum over the same files")
        sec = self.data["sections"][section]
        recs = [r for r in self.b.records if r.workload == section and r.ok]
        on = {r.round: r for r in recs if r.variant == "hcpsync"}
        off = {r.round: r for r in recs if r.variant == "hcpsync --no-verify"}
        ref = {r.round: r for r in recs if r.variant == MD5SUM}
        vgb = info["verified_bytes"] / 1e9
        per_round = []
        for i in sorted(set(on) & set(off) & set(ref)):
            a, b, m = on[i], off[i], ref[i]
            md5_gb = m.cpu_s / (m.hashed_bytes / 1e9) if m.hashed_bytes else math.nan
            extra_gb = (a.cpu_s - b.cpu_s) / vgb if vgb else math.nan
            per_round.append({"round": i, "wall_ratio": a.wall_s / b.wall_s, "extra_cpu_s": a.cpu_s - b.cpu_s,
                              "extra_cpu_s_per_gb": extra_gb, "md5sum_cpu_s_per_gb": md5_gb,
                              "hash_cost_ratio": extra_gb / md5_gb if md5_gb else math.nan,
                              "verified": (a.report or {}).get("verified"), "unverified": (a.report or {}).get("unverified")})
        sec["per_round"] = per_round
        if not per_round:
            self.md.append("No round where all three ran fine.\n")
            return
        summ = {k: statistics.median(r[k] for r in per_round)
                for k in ("wall_ratio", "extra_cpu_s", "extra_cpu_s_per_gb", "md5sum_cpu_s_per_gb", "hash_cost_ratio")}
        sec["summary"] = summ
        h = self._row(section, "hcpsync")
        reach = (info["bytes"] / MB / h["wall_s"]) / (cap / MB) if h and h["wall_s"] else math.nan
        verified = [r["verified"] for r in per_round]
        off_row = self._row(section, "hcpsync --no-verify")
        bound = info.get("ideal", {}).get("bound_s")
        # the condition of the measure: without verification the pull is bound by the origin, not the CPUs
        off_frac = bound / off_row["wall_s"] if bound and off_row and off_row["wall_s"] else math.nan
        summ["no_verify_fraction_of_bound"] = off_frac
        link_bound = off_frac >= 0.8
        summ["link_bound"] = link_bound
        self.md += [
            "| round | wall on / off | extra CPU s (on - off) | extra CPU s / GB verified | md5sum CPU s / GB "
            "| hashing cost / md5sum | hcpsync verified / unverified files |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *[f"| {r['round']} | {r['wall_ratio']:.3f} | {r['extra_cpu_s']:.2f} | {r['extra_cpu_s_per_gb']:.2f} "
              f"| {r['md5sum_cpu_s_per_gb']:.2f} | {r['hash_cost_ratio']:.2f} | {r['verified']} / {r['unverified']} |"
              for r in per_round],
            f"| **median** | **{summ['wall_ratio']:.3f}** | {summ['extra_cpu_s']:.2f} | {summ['extra_cpu_s_per_gb']:.2f} "
            f"| {summ['md5sum_cpu_s_per_gb']:.2f} | **{summ['hash_cost_ratio']:.2f}** | |",
            "",
            f"Verified bytes: {info['verified_bytes'] / MB:,.0f} MB in {info['verified_files']:,} files (those the "
            f"`.xdlm` manifests list; hcpsync reported {', '.join(map(str, verified))} verified). hcpsync with "
            f"verification reaches {reach * 100:.0f} % of the {cap / MB:,.0f} MB/s cap on wall clock (start-up "
            "included). *Extra CPU* = client CPU with verification minus without, same round; md5sum hashes the "
            "same files from the page cache (one process at a time via xargs).",
            "",
            f"Lower bound of a pull at this cap (64 requests in flight, hcpsync's part layout, "
            f"{S3LIKE_FIRST_BYTE_MS} ms + size / {info['rate_per_request'] / MB:.2f} MB/s per request): "
            f"{fmt(bound)} s; `--no-verify` took {fmt(off_row['wall_s'] if off_row else None)} s = "
            f"{off_frac * 100:.0f} % of it. "
            + ("The origin, not the CPUs, bounds the pull: the wall ratio is the figure the target asks for."
               if link_bound else
               "**Below 80 %: the CPUs (this client and, on a shared machine, other jobs: see *other CPU s*), not "
               "the capped origin, bound the pull, so the wall ratio here overstates what verification costs "
               "behind a slower link.**"),
            "",
        ]

    def startup(self) -> None:
        info = self.b.sections["startup"]
        recs = [r for r in self.b.records if r.workload == "startup"]
        rows = []
        for label in info["labels"]:
            rs = [r for r in recs if r.variant == label]
            good = [r for r in rs if r.ok]
            walls = sorted(r.wall_s for r in good)
            rows.append({"variant": label, "runs": len(rs), "ok_runs": len(good), "wall_s": med(walls),
                         "wall_min": walls[0] if walls else math.nan, "wall_max": walls[-1] if walls else math.nan,
                         "cpu_s": med([r.cpu_s for r in good]), "peak_pss_mib": med([r.peak_pss_mib for r in good]),
                         "requests": med([float((r.report or {}).get("requests", 0)) for r in good])
                         if label.startswith("hcpsync pull") else None,
                         "walls": [r.wall_s for r in rs], "check": sorted({r.check[:60] for r in rs})})
        self.data["sections"]["startup"] = {**info, "rows": rows}
        self.md += [f"### startup: `--version` and a pull of one {info['bytes']:,}-byte object (`{info['object']}`), "
                    f"plain origin on loopback, {info['runs']} interleaved rounds\n",
                    "| command | wall s (median) | min | max | CPU s (median) | peak PSS MiB | hcpsync requests | check |",
                    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rows:
            self.md.append(f"| {r['variant']} | **{fmt(r['wall_s'], 3)}** | {fmt(r['wall_min'], 3)} "
                           f"| {fmt(r['wall_max'], 3)} | {fmt(r['cpu_s'], 3)} | {fmt(r['peak_pss_mib'], 0)} "
                           f"| {fmt(r['requests'], 0)} | {'; '.join(r['check'])} |")
        self.md.append("")
        for a, b in (("hcpsync pull (1 KiB)", "s5cmd cp (1 KiB)"), ("hcpsync --version", "s5cmd version")):
            r = paired_ratio(self.b.records, "startup", a, b)
            if r:
                self.data["sections"]["startup"].setdefault("ratios", {})[f"{a} / {b}"] = r
                self.md.append(f"{a} / {b}: **{r['wall_ratio']:.2f}x** wall (median of per-round ratios).\n")

    def memory(self) -> None:
        self.table("memory", "memory: subject at the defaults, hcpsync and s5cmd (peak PSS summed over processes)")

    def scaling(self, section: str) -> None:
        rows = self.table(section, f"{section}: hcpsync --workers 1 vs --workers 2")
        one = self._row(section, "hcpsync --workers 1")
        two = self._row(section, "hcpsync --workers 2")
        r = paired_ratio(self.b.records, section, "hcpsync --workers 2", "hcpsync --workers 1")
        sec = self.data["sections"][section]
        if not (one and two and r) or not rows:
            return
        speedup = r["throughput_ratio"]
        growth = two["cpu_s_per_gb"] / one["cpu_s_per_gb"] - 1
        sec["speedup"], sec["cpu_per_gb_growth"] = speedup, growth
        self.md.append(f"1 -> 2 workers: speed-up **{speedup:.2f}x** (median of the per-round speed-ups "
                       f"{', '.join(f'{1 / x:.2f}' for x in r['per_round'])}); CPU s/GB {one['cpu_s_per_gb']:.2f} -> "
                       f"{two['cpu_s_per_gb']:.2f} (**{growth * 100:+.1f} %**); CPU s/1k req "
                       f"{fmt(one['cpu_ms_per_req'], 3)} -> {fmt(two['cpu_ms_per_req'], 3)}.\n")

    def issue12_md(self) -> list[str]:
        """The targets of issue 12, one row each: the measured figure and met / missed (n/a: not run)."""
        secs = self.data["sections"]
        rows: list[tuple[str, str, str, bool | None]] = []

        def ratio(section: str, a: str, b: str) -> dict[str, Any] | None:
            return secs.get(section, {}).get("ratios", {}).get(f"{a} / {b}")

        def s5_labels(section: str) -> list[str]:
            return [r["variant"] for r in secs.get(section, {}).get("rows", []) if r["tool"] == "s5cmd"]

        def vs_s5cmd(section: str, goal: float, what: str) -> None:
            rs = {p: ratio(section, "hcpsync", p) for p in s5_labels(section)}
            rs = {p: r for p, r in rs.items() if r}
            if not rs:
                rows.append((f"{section}: hcpsync vs s5cmd ({what})", f">= {goal:.1f}x", "not run", None))
                return
            worst = min(rs, key=lambda p: rs[p]["throughput_ratio"])
            x = rs[worst]["throughput_ratio"]
            detail = "; ".join(f"{r['throughput_ratio']:.2f}x vs {p}" for p, r in rs.items())
            rows.append((f"{section}: hcpsync throughput vs s5cmd ({what})", f">= {goal:.1f}x (each s5cmd setting)",
                         f"{x:.2f}x ({detail})", x >= goal))

        vs_s5cmd("large", 1.2, "defaults, verification on")
        c = ratio("large", "hcpsync", "curl")
        rows.append(("large: hcpsync throughput vs 4 curls", ">= 0.9x",
                     f"{c['throughput_ratio']:.2f}x" if c else "not run", c["throughput_ratio"] >= 0.9 if c else None))
        r = ratio("subject", "hcpsync", "s5cmd")
        r256 = ratio("subject", "hcpsync", "s5cmd --numworkers 256")
        rows.append(("subject: hcpsync wall vs s5cmd (64 workers)", "<= 0.8x",
                     (f"{r['wall_ratio']:.2f}x" + (f" (vs 256 workers: {r256['wall_ratio']:.2f}x)" if r256 else ""))
                     if r else "not run", r["wall_ratio"] <= 0.8 if r else None))
        fa = secs.get("s3like-large", {}).get("fraction_of_allowed")
        rows.append(("s3like-large: hcpsync vs allowed aggregate (wall clock, start-up included)", ">= 95 %",
                     f"{fa * 100:.0f} %" if fa is not None else "not run", fa >= 0.95 if fa is not None else None))
        fb = secs.get("s3like-small", {}).get("fraction_of_bound")
        rows.append(("s3like-small: hcpsync vs latency bound (wall clock, start-up included)", ">= 90 %",
                     f"{fb * 100:.0f} %" if fb is not None else "not run", fb >= 0.90 if fb is not None else None))
        vs_s5cmd("large-https", 1.0, "HTTPS")
        vs_s5cmd("subject-https", 1.0, "HTTPS")
        st = {r["variant"]: r for r in secs.get("startup", {}).get("rows", [])}
        p = st.get("hcpsync pull (1 KiB)")
        rows.append(("start-up: hcpsync pull of one 1 KiB object, loopback", "<= 0.25 s wall (median)",
                     (f"{p['wall_s']:.3f} s (s5cmd cp {st['s5cmd cp (1 KiB)']['wall_s']:.3f} s; hcpsync --version "
                      f"{st['hcpsync --version']['wall_s']:.3f} s)" if "s5cmd cp (1 KiB)" in st and "hcpsync --version" in st
                      else f"{p['wall_s']:.3f} s") if p and p["ok_runs"] else "not run",
                     p["wall_s"] <= 0.25 if p and p["ok_runs"] else None))
        for name in ("subject", "large"):
            summ = secs.get(f"verify-{name}", {}).get("summary")
            cond = ""
            if summ and not summ.get("link_bound", True):
                cond = (f" (link-bound condition not met: --no-verify at "
                        f"{summ['no_verify_fraction_of_bound'] * 100:.0f} % of the origin's bound)")
            rows.append((f"verify on vs off, capped origin, {name}: wall", "<= 1.05x",
                         f"{summ['wall_ratio']:.3f}x{cond}" if summ else "not run",
                         summ["wall_ratio"] <= 1.05 if summ else None))
            rows.append((f"verify on vs off, capped origin, {name}: hashing CPU per byte vs md5sum", "<= 1.10x md5sum's",
                         f"{summ['hash_cost_ratio']:.2f}x ({summ['extra_cpu_s_per_gb']:.2f} vs "
                         f"{summ['md5sum_cpu_s_per_gb']:.2f} CPU s/GB)" if summ else "not run",
                         summ["hash_cost_ratio"] <= 1.10 if summ else None))
        mem = next((r for r in (self._row(n, "hcpsync") for n in ("subject", "memory") if n in secs) if r), None)
        s5m = next((r for r in (self._row(n, "s5cmd") for n in ("subject", "memory") if n in secs) if r), None)
        rows.append(("memory: peak PSS summed over processes, subject, defaults", "<= 200 MB",
                     (f"{mem['peak_pss_mib_max'] * MiB / MB:.0f} MB max of runs ({mem['peak_pss_mib'] * MiB / MB:.0f} MB "
                      f"median, {mem['max_procs']} processes)"
                      + (f"; s5cmd {s5m['peak_pss_mib'] * MiB / MB:.0f} MB" if s5m else "")) if mem else "not run",
                     mem["peak_pss_mib_max"] * MiB <= 200 * MB if mem else None))
        for name in ("subject", "large"):
            sc = secs.get(f"scaling-{name}", {})
            if "speedup" in sc:
                rows.append((f"scaling 1 -> 2 workers, {name}: CPU s/GB growth (speed-up reported)", "<= +10 %",
                             f"{sc['cpu_per_gb_growth'] * 100:+.1f} % (speed-up {sc['speedup']:.2f}x)",
                             sc["cpu_per_gb_growth"] <= 0.10))
            else:
                why = secs.get("scaling", {}).get("skipped", "not run")
                rows.append((f"scaling 1 -> 2 workers, {name}: CPU s/GB growth (speed-up reported)", "<= +10 %",
                             why, None))
        self.data["issue12_targets"] = [{"target": t, "goal": g, "measured": m, "met": ok} for t, g, m, ok in rows]
        out = ["## Targets of issue 12", "", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
        for t, g, m, ok in rows:
            out.append(f"| {t} | {g} | {m} | {'n/a' if ok is None else ('**met**' if ok else '**missed**')} |")
        return [*out, "", "Ratios are medians of per-round ratios (same round, interleaved); each section's table "
                "is under Results.", ""]

    def targets_md(self) -> None:
        md = self.md
        if not self.data["targets"]:
            return
        md += ["## Other checks (earlier issues' targets)", "", "| target | goal | measured | met |",
               "| --- | --- | --- | --- |"]
        for t in self.data["targets"]:
            met = "n/a" if t["met"] is None else ("**yes**" if t["met"] else "**NO**")
            md.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {met} |")
        md.append("")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MB:,.1f} MB"


def keep_analysis(new: str, old_path: Path) -> str:
    """Carry the hand-written analysis block of an existing RESULTS.md over into ``new``."""
    if not old_path.exists():
        return new
    old = old_path.read_text(encoding="utf-8")
    if ANALYSIS_BEGIN not in old or ANALYSIS_END not in old:
        return new
    block = old[old.index(ANALYSIS_BEGIN) : old.index(ANALYSIS_END) + len(ANALYSIS_END)]
    return new.replace(f"{ANALYSIS_BEGIN}\n{ANALYSIS_END}", block, 1)


# ------------------------------------------------------------------------------ CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)

    ap.add_argument("--workloads", type=measure.csv_choices(ALL_WORKLOADS), default=list(DEFAULT_WORKLOADS),
                    help=f"comma-separated, from {', '.join(ALL_WORKLOADS)} (default: all but memory)")
    ap.add_argument("--tools", type=measure.csv_choices(ALL_TOOLS), default=list(ALL_TOOLS))
    ap.add_argument("--runs", type=int, default=3, help="interleaved rounds per workload (default 3)")
    ap.add_argument("--quick", action="store_true", help="tiny workloads, 1 round: a smoke run")
    ap.add_argument("--s3like-large", default="large", choices=("large", "large-tiny"),
                    help="the big workload of s3like (default large)")
    ap.add_argument("--md5-check", choices=("first", "all", "none"), default="first",
                    help="MD5-check downloads: each variant's first run (default), all runs, none (size only)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="echo 1 > /proc/sys/vm/drop_caches before each run (then the source is re-read)")
    ap.add_argument("--kill-at", type=float, default=0.5, help="resume: kill at this fraction of bytes written")
    ap.add_argument("--verify-cap", type=parse_size, default=VERIFY_CAP,
                    help="verify: the origin's aggregate cap, split over 64 requests (default 250MB)")
    ap.add_argument("--startup-runs", type=int, default=15, help="startup: interleaved rounds (>= 10; default 15)")
    ap.add_argument("--profile", action="store_true", help="also profile hcpsync (py-spy) on subject and large")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per run before it is killed")
    ap.add_argument("--out", type=Path, default=None, help="where RESULTS.md and results.json go")
    ap.add_argument("--report-from", metavar="RESULTS_JSON", type=Path, default=None,
                    help="no run: write the report of a recorded results.json again (with this code) into --out")
    ap.add_argument("--hcpsync", metavar="CMD", default=None,
                    help="the hcpsync command to benchmark (default: the one beside this Python); the report's "
                         "commit line is then this checkout's, not that build's")
    ap.add_argument("--baseline", metavar="HCPSYNC", default=None,
                    help="another build's hcpsync command (e.g. a worktree's .venv/bin/hcpsync): its defaults run "
                         "as 'hcpsync (baseline)' in the same rounds of large and subject, with ratios")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = WORK / "quick" if args.quick else BENCH_DIR
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hcpsync:
        HCPSYNC_CMD[:] = shlex.split(args.hcpsync)
    started = time.monotonic()
    missing = [t for t in args.tools if t in ("s5cmd", "awscli", "boto3")
               and not peers.available({"awscli": "aws-cli"}.get(t, t))]
    if missing:
        print(f"missing peers: {', '.join(missing)}: run 'bash benchmarks/setup.sh' (or drop them with --tools)",
              file=sys.stderr)
        return 2
    if args.report_from:
        return report_from(args, started)
    bench = Bench(args)
    machine = machine_info()
    runners = {"large": bench.run_large, "subject": bench.run_subject, "s3like": bench.run_s3like,
               "resume": bench.run_resume, "scale": bench.run_scale,
               "large-https": lambda: bench.run_https("large-https"),
               "subject-https": lambda: bench.run_https("subject-https"),
               "verify": bench.run_verify, "startup": bench.run_startup, "memory": bench.run_memory,
               "scaling": bench.run_scaling}
    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        if any(w != "scale" for w in args.workloads):
            bench.warm_up()
        for name in args.workloads:
            bench.log(f"== {name}")
            runners[name]()
        if args.profile:
            bench.run_profile()
    finally:
        shutil.rmtree(bench.dest_root, ignore_errors=True)
    write_report(bench, machine, started)
    return 0


def report_from(args: argparse.Namespace, started: float) -> int:
    """``--report-from results.json``: the report of a recorded run again, with this code (no run)."""
    doc = json.loads(Path(args.report_from).read_text(encoding="utf-8"))
    bench = Bench(args)
    fields = set(RunRecord.__dataclass_fields__)
    bench.records = [RunRecord(**{k: v for k, v in r.items() if k in fields}) for r in doc.get("records", [])]
    bench.sections = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in doc.get("sections", {}).items()}
    bench.commands = doc.get("commands", {})
    write_report(bench, doc.get("machine", {}), started)
    return 0


def write_report(bench: Bench, machine: dict[str, Any], started: float) -> None:
    args = bench.args
    report = Report(bench, machine, started)
    text = report.build()
    args.out.mkdir(parents=True, exist_ok=True)
    md_path = args.out / "RESULTS.md"
    text = keep_analysis(text, md_path)
    md_path.write_text(text, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(report.data, indent=1, default=str) + "\n", encoding="utf-8")
    print(text)
    bench.log(f"wrote {md_path} and {args.out / 'results.json'} ({(time.monotonic() - started) / 60:.1f} min)")
