"""Profile an ``hcpsync pull`` from the local origin with py-spy, and summarize where the CPU goes.

    python -m benchmarks.profile subject            # -> benchmarks/work/profiles/subject.txt (+ summary)
    python -m benchmarks.profile large -- --part-size 32MiB
    python -m benchmarks.profile large --tls        # over HTTPS

py-spy (``pip install py-spy``; ``benchmarks/setup.sh`` does not install it, the runner looks in
the peers venv, then PATH) samples every thread at ``--rate`` Hz without pausing the process
(``--nonblocking``); idle threads (blocked in ``select``/``epoll`` or a lock) are not sampled,
so the samples are where CPU is spent.  The raw collapsed stacks are kept in
``benchmarks/work/profiles/<workload>.txt`` (``flamegraph.pl`` or speedscope read them); the
summary lists the top functions by self and by inclusive samples, and self samples by package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import peers, workloads
from .origin import Origin
from .workloads import Workload

PROFILES = workloads.DEFAULT_WORK_DIR / "profiles"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    cand = peers.PEERS_VENV / "bin" / "py-spy"
    return str(cand) if os.access(cand, os.X_OK) else shutil.which("py-spy")


def _where(file: str) -> str:
    """A package-ish name for a frame's file (py-spy already shortens paths: ``aiohttp/client.py``)."""
    f = file.replace("\\", "/")
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.10/", "lib/python3.12/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    if f.startswith("hcpsync/"):
        return f
    head = f.split("/", 1)[0]
    return head.removesuffix(".py") if "/" in f or f.endswith(".py") else f


def _leaf(frame: str, with_line: bool) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    line = f":{m.group('line')}" if with_line and m.group("line") else ""
    return f"{m.group('func')} ({m.group('file')}{line})"


def _is_idle(frame: str) -> bool:
    return frame.startswith(("select (selectors.py", "EpollSelector.select", "Condition.wait", "wait (threading.py"))


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """py-spy ``--idle --threads`` raw stacks -> the main thread's wall time by leaf, package and
    hcpsync function (inclusive), and the other threads' sample counts."""
    leaf: Counter[str] = Counter()
    leaf_fn: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    other_leaf: Counter[str] = Counter()
    main = total = 0
    rows: list[tuple[str, list[str], int]] = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        tid = "?"
        if frames[0].startswith("thread ("):
            tid = frames[0][len("thread (") :].split(")", 1)[0]
            frames = frames[1:]
        rows.append((tid, frames, int(n)))
    # the main thread's id is the process id, the smallest (its name shows only once threading is imported)
    tids = sorted({t for t, _, _ in rows if t.isdigit()}, key=int)
    main_tid = tids[0] if tids else "?"
    for tid, frames, count in rows:
        total += count
        threads["main" if tid == main_tid else tid] += count
        if not frames:
            continue
        if tid != main_tid:
            other_leaf[f"{tid}: {_leaf(frames[-1], False)}"] += count
            continue
        main += count
        if _is_idle(frames[-1]):
            leaf["(idle: waiting in epoll)"] += count
            leaf_fn["(idle: waiting in epoll)"] += count
            pkg["(idle)"] += count
        else:
            leaf[_leaf(frames[-1], True)] += count
            leaf_fn[_leaf(frames[-1], False)] += count
            m = _FRAME.match(frames[-1])
            pkg[_where(m.group("file")) if m else "?"] += count
        for f in {_leaf(f, False) for f in frames if "hcpsync/" in f}:
            incl[f] += count
    return {
        "samples": total,
        "main_samples": main,
        "leaf_lines": leaf.most_common(top),
        "leaf_functions": leaf_fn.most_common(top),
        "inclusive": incl.most_common(top),
        "packages": pkg.most_common(top),
        "threads": threads.most_common(8),
        "other_threads": other_leaf.most_common(5),
    }


def to_markdown(title: str, s: dict[str, Any], cmd: str, wall: float, rate: int, elapsed: float | None) -> str:
    total = max(1, s["main_samples"])
    own = f", hcpsync's own elapsed {elapsed:.1f} s" if elapsed is not None else ""
    out = [f"**{title}** - `{cmd}` ({wall:.1f} s wall under py-spy{own}; {s['main_samples']} samples of the "
           f"event-loop thread at {rate} Hz, idle included: the shares below are of its wall time)\n",
           "| main thread by package (leaf frame) | % |", "| --- | ---: |"]
    out += [f"| {p} | {c / total * 100:.1f} |" for p, c in s["packages"][:8]]
    out += ["", "| main thread: leaf lines | % |", "| --- | ---: |"]
    out += [f"| `{f}` | {c / total * 100:.1f} |" for f, c in s["leaf_lines"][:10]]
    out += ["", "| hcpsync functions (inclusive) | % |", "| --- | ---: |"]
    out += [f"| `{f}` | {c / total * 100:.1f} |" for f, c in s["inclusive"][:10]]
    others = "; ".join(f"{name} ({c})" for name, c in s["other_threads"])
    if others:
        out += ["", f"Other threads (samples, idle included): {others}."]
    return "\n".join(out) + "\n"


def profile_pull(
    wl: Workload, dest_root: Path, scratch: Path, extra: Sequence[str] = (), rate: int = 200, tls: bool = False
) -> dict[str, Any]:
    """Pull ``wl`` once under py-spy from a fresh plain origin (``tls``: over HTTPS); returns the
    summary (+ markdown).  ``--subprocesses``: worker processes are sampled too."""
    from .runner import Target, Variant, build, child_env, drop_dest, settle

    spy = py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    PROFILES.mkdir(parents=True, exist_ok=True)
    raw = PROFILES / f"{wl.name}{'-https' if tls else ''}.txt"
    dest = dest_root / wl.name
    drop_dest(dest)
    settle(False)
    wl.warm()
    dest.mkdir(parents=True)
    with Origin(wl.root, tls=tls) as origin:
        argvs, env = build(Variant("hcpsync", "hcpsync", tuple(extra)), Target(wl, origin.url, ca_bundle=origin.ca_bundle),
                           dest, scratch)
        argv = [spy, "record", "--idle", "--threads", "--subprocesses", "--rate", str(rate), "--nonblocking",
                "--format", "raw",
                "--output", str(raw),
                "--", *argvs[0]]
        t0 = time.monotonic()
        res = subprocess.run(argv, env=child_env(env), capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
    drop_dest(dest)
    if res.returncode != 0 or not raw.exists():
        return {"error": f"py-spy exit {res.returncode}: {res.stderr[-800:]}"}
    try:
        report, _ = json.JSONDecoder().raw_decode(res.stdout[res.stdout.index("{") :])
    except ValueError:
        report = None
    s = summarize(raw, 15)
    cmd = "hcpsync pull ... " + " ".join(extra) if extra else "hcpsync pull (defaults)"
    elapsed = float(report["elapsed_seconds"]) if report and "elapsed_seconds" in report else None
    s["markdown"] = to_markdown(f"{wl.name}{' (HTTPS)' if tls else ''}", s, cmd, wall, rate, elapsed)
    s["raw"] = str(raw)
    s["report"] = report
    return s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", help="subject, large, subject-tiny, large-tiny")
    ap.add_argument("extra", nargs="*", help="extra hcpsync pull arguments (after --)")
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--tls", action="store_true", help="pull from the origin over HTTPS (hcpsync --ca-bundle)")
    args = ap.parse_args(argv)
    wl = workloads.ensure(args.workload, log=True)
    work = workloads.DEFAULT_WORK_DIR
    res = profile_pull(wl, work / "dest" / "profile", work / "scratch" / "profile", args.extra, args.rate,
                       tls=args.tls)
    print(res.get("markdown") or res.get("error"))
    return 0 if "markdown" in res else 1


if __name__ == "__main__":
    sys.exit(main())
