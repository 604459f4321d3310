"""Measuring one benchmark run: wall time, CPU and peak RSS of the client processes, the origin's
CPU, and what the origin served (from its access log).

* **Client cost** comes from ``os.wait4`` on each child: ``ru_utime + ru_stime`` of that child
  (and of any descendants it waited for).  **Peak RSS** comes from ``/usr/bin/time -f %M``
  wrapped around the command, not from ``wait4``'s ``ru_maxrss``: Python starts children with
  ``vfork`` + ``exec``, and Linux carries the *parent's* high-water RSS into the child's
  ``maxrss`` at ``exec``, so ``ru_maxrss`` of any child is at least the runner's own peak (100+
  MiB here).  ``time`` is small, so the floor it passes on is ~1 MiB.  Several children
  started together (the 4 parallel curls) are summed: an upper bound of their joint peak.
* **Peak PSS** (proportional set size: shared pages split between the processes mapping them,
  so a sum over processes counts each page once) of the whole process tree of a run: a thread
  reads ``/proc/<pid>/smaps_rollup`` of every process the command started (descendants
  included: worker processes, curl's siblings; the ``time`` wrapper excluded) every
  ``pss_interval`` (50 ms) and keeps the largest sum.
* **Origin CPU** is read from ``/proc/<pid>/stat`` of nginx (master and workers) and of the
  listing service, before and after the run.
* **Requests and bytes served** are parsed from the origin's access log
  (``Origin(..., access_log=True)``; format ``$msec $request_method "$request_uri" $status
  $body_bytes_sent $request_time "$http_range" $connection $connection_requests``).  nginx
  buffers the log (``buffer=64k flush=1s``): :meth:`AccessLog.read_new` waits for the flush.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

CLK_TCK = os.sysconf("SC_CLK_TCK")
TIME_BIN = "/usr/bin/time"  # GNU time (Debian package 'time'): peak RSS of the command itself

_LOG_RE = re.compile(
    r'^(?P<msec>\S+) (?P<method>\S+) "(?P<uri>[^"]*)" (?P<status>\d+) (?P<bytes>\d+) (?P<rtime>\S+) '
    r'"(?P<range>[^"]*)" (?P<conn>\d+) (?P<conn_req>\d+)$'
)
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class LogLine:
    t: float
    method: str
    uri: str
    status: int
    body_bytes: int
    range_start: int  # first byte of the body (0 without a Range header)
    connection: int

    @property
    def is_listing(self) -> bool:
        path = self.uri.split("?", 1)[0]
        return path.count("/") <= 2 and (path.count("/") < 2 or path.endswith("/"))

    @property
    def key_path(self) -> str:
        """``/<bucket>/<key>`` (URL-decoded, no query)."""
        return unquote(self.uri.split("?", 1)[0])


def parse_log_line(line: str) -> LogLine | None:
    m = _LOG_RE.match(line.strip())
    if not m:
        return None
    rng = _RANGE_RE.match(m.group("range"))
    return LogLine(
        float(m.group("msec")),
        m.group("method"),
        m.group("uri"),
        int(m.group("status")),
        int(m.group("bytes")),
        int(rng.group(1)) if rng else 0,
        int(m.group("conn")),
    )


class AccessLog:
    """Reads an nginx access log incrementally (by byte offset)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = 0

    def skip_to_end(self, settle: float = 1.3) -> None:
        if self.path is None:
            return
        time.sleep(settle)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read_new(self, settle: float = 1.3) -> list[LogLine]:
        """Lines written since the last call, after waiting ``settle`` s for nginx's flush."""
        if self.path is None:
            return []
        time.sleep(settle)
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        out = []
        for raw in data[:cut].decode("utf-8", "replace").splitlines():
            ll = parse_log_line(raw)
            if ll is not None:
                out.append(ll)
        return out


def summarize_log(lines: Sequence[LogLine]) -> dict[str, Any]:
    objects = [ln for ln in lines if not ln.is_listing]
    return {
        "requests": len(lines),
        "object_requests": len(objects),
        "listing_requests": len(lines) - len(objects),
        "connections": len({ln.connection for ln in lines}),
        "served_bytes": sum(ln.body_bytes for ln in lines),
        "object_bytes": sum(ln.body_bytes for ln in objects),
        "statuses": dict(Counter(str(ln.status) for ln in lines)),
        "methods": dict(Counter(ln.method for ln in lines)),
    }


# -------------------------------------------------------------------------------- origin CPU


def _proc_cpu_ticks(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a child started by a thread is listed under that thread)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


def process_tree(pids: Sequence[int]) -> list[int]:
    out: list[int] = []
    todo = list(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds (user + sys) used so far by ``pids`` and their descendants."""
    return sum(_proc_cpu_ticks(p) for p in process_tree(pids)) / CLK_TCK


def origin_pids(origin: Any) -> list[int]:
    """nginx master and listing-service PIDs of a running :class:`~benchmarks.origin.Origin`."""
    pids = []
    for attr in ("_nginx", "_listing"):
        proc = getattr(origin, attr, None)
        if proc is not None:
            pids.append(proc.pid)
    return pids


# -------------------------------------------------------------------------------- memory


def pss_kib(pid: int) -> int:
    """``Pss`` of ``pid`` in KiB from ``/proc/<pid>/smaps_rollup`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class PssSampler:
    """A thread summing the PSS of ``roots``' process trees every ``interval`` s; ``peak_kib``
    is the largest sum seen, ``max_procs`` the most processes seen at once.  ``exclude``: PIDs
    not counted themselves (a wrapper such as ``time``), their descendants still are."""

    def __init__(self, roots: Sequence[int], interval: float = 0.05, exclude: Sequence[int] = ()) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.exclude = set(exclude)
        self.peak_kib = 0
        self.max_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def sample(self) -> int:
        pids = [p for p in process_tree(self.roots) if p not in self.exclude]
        total = sum(pss_kib(p) for p in pids)
        self.peak_kib = max(self.peak_kib, total)
        self.max_procs = max(self.max_procs, len(pids))
        self.samples += 1
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> PssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -------------------------------------------------------------------------------- client runs


@dataclass
class ProcResult:
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int  # summed over the children of one run (0 when unknown: run with kill_when)
    killed: bool = False
    stdout: str = ""
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    peak_pss_kib: int = 0  # the largest sum of PSS over the run's process trees (PssSampler)
    max_procs: int = 0  # the most processes of the run alive at one sample

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def proc_io(pid: int) -> dict[str, int]:
    """``/proc/<pid>/io`` (``wchar``: bytes written by write/pwrite, all threads)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k.strip()] = int(v)
    except (OSError, ValueError):
        pass
    return out


def run_measured(
    argvs: Sequence[Sequence[str]],
    env: dict[str, str],
    log_dir: Path,
    *,
    timeout: float = 1800,
    kill_when: Callable[[list[subprocess.Popen[bytes]]], bool] | None = None,
    poll_s: float = 0.005,
    cwd: Path | None = None,
    pss_interval: float | None = 0.05,
) -> ProcResult:
    """Start every argv at once, wait for all, return wall time, summed CPU and peak RSS.

    ``kill_when(procs)`` is polled every ``poll_s`` while they run; when it returns True every
    process gets SIGKILL (``ProcResult.killed``); then the commands run unwrapped (no RSS), so
    the signal and ``/proc/<pid>/io`` reach the command itself.  stdout of the first process is
    captured.  ``pss_interval``: sample the summed PSS of the process trees that often (None: off).
    """
    timer = TIME_BIN if kill_when is None and os.access(TIME_BIN, os.X_OK) else None
    log_dir.mkdir(parents=True, exist_ok=True)
    outs: list[IO[bytes]] = []
    procs: list[subprocess.Popen[bytes]] = []
    sampler: PssSampler | None = None
    t0 = time.monotonic()
    try:
        for i, argv in enumerate(argvs):
            so = open(log_dir / f"stdout.{i}", "wb")  # noqa: SIM115 - closed below
            se = open(log_dir / f"stderr.{i}", "wb")  # noqa: SIM115
            outs += [so, se]
            wrapped = [timer, "-f", "%M", "-o", str(log_dir / f"rss.{i}"), *argv] if timer else list(argv)
            procs.append(subprocess.Popen(wrapped, stdout=so, stderr=se, env=env, cwd=cwd, start_new_session=True))
        if pss_interval:
            roots = [p.pid for p in procs]
            sampler = PssSampler(roots, pss_interval, exclude=roots if timer else ()).start()
        killed = False
        if kill_when is not None:
            deadline = t0 + timeout
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if kill_when(procs):
                    for p in procs:
                        _kill_group(p)
                    killed = True
                    break
                time.sleep(poll_s)
        rcs, user, sys_, rss = [], 0.0, 0.0, 0
        for p in procs:
            remaining = max(0.1, t0 + timeout - time.monotonic())
            waited = _wait4(p, remaining)
            if waited is None:
                _kill_group(p)
                waited = _wait4(p, 30)
                killed = True
            assert waited is not None
            status, ru = waited
            rcs.append(os.waitstatus_to_exitcode(status))
            user += ru.ru_utime
            sys_ += ru.ru_stime
        wall = time.monotonic() - t0
    finally:
        if sampler is not None:
            sampler.stop()
        for p in procs:
            if p.returncode is None and p.poll() is None:
                _kill_group(p)
                p.wait()
        for f in outs:
            f.close()
    if timer:
        rss = sum(_time_rss(log_dir / f"rss.{i}") for i in range(len(argvs)))
    rc = next((r for r in rcs if r != 0), 0)
    stdout = (log_dir / "stdout.0").read_text(errors="replace") if argvs else ""
    err = "\n".join(
        (log_dir / f"stderr.{i}").read_text(errors="replace").strip() for i in range(len(argvs))
    ).strip()
    return ProcResult(rc, wall, user, sys_, rss, killed, stdout, "\n".join(err.splitlines()[-8:]),
                      peak_pss_kib=sampler.peak_kib if sampler else 0, max_procs=sampler.max_procs if sampler else 0)


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole session (the command, and its wrapper and children)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _time_rss(path: Path) -> int:
    """The ``%M`` (KiB) GNU time wrote (its last line; a killed command adds a line before it)."""
    try:
        lines = path.read_text().split()
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0
    except OSError:
        return 0


def _wait4(p: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any] | None:
    """``os.wait4`` with a timeout (polling with WNOHANG); marks the Popen as reaped."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return status, ru
        if time.monotonic() > deadline:
            return None
        time.sleep(delay)
        delay = min(0.005, delay * 2)


def csv_choices(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type``: a comma-separated list of some of ``choices``."""

    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(bad)} (choose from {', '.join(choices)})")
        return items

    return parse
