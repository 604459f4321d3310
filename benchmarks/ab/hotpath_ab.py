"""Issue 12 (lean hot path): A/B of hcpsync builds or settings, interleaved, by CPU cost.

    python benchmarks/ab/hotpath_ab.py large --runs 5 \\
        base=/work/base-hotpath/.venv/bin/hcpsync new=.venv/bin/hcpsync [name=BIN:ENV=VAL,ENV2=VAL ...]

Each variant is ``label=HCPSYNC_BIN`` (optionally ``:K=V,K=V`` extra environment).  Every round runs
each variant once, the order rotated every round, each run from a deleted destination with the
workload warm in the page cache (as ``python -m benchmarks`` does).  Per run: wall, user and system
CPU (``wait4``), minor page faults, voluntary/involuntary context switches, and the GETs the origin
served (its access log).  The summary gives per variant the medians of CPU-s per GB, CPU-s per
1,000 requests, and per round the ratio to the first variant (same round, similar noise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import measure, workloads
from benchmarks.measure import AccessLog
from benchmarks.origin import Origin
from benchmarks.runner import WORK, Target, Variant, build, child_env


def run_one(argv: list[str], env: dict[str, str], out: Path) -> dict[str, float]:
    t0 = time.monotonic()
    with open(out, "wb") as so:
        p = subprocess.Popen(argv, env=env, stdout=so, stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {p.returncode}: {err[-2000:]}")
    return {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "cpu": ru.ru_utime + ru.ru_stime,
            "minflt": ru.ru_minflt, "maxrss_mib": ru.ru_maxrss / 1024, "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw}


def _med(rs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("variants", nargs="+", help="label=BIN[:K=V,K=V]")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--args", default="", help="extra hcpsync pull arguments for every variant")
    ap.add_argument("--json", type=Path, help="append every run as a JSON line here")
    ap.add_argument("--verify", action="store_true", help="MD5-check each variant's first run")
    ap.add_argument("--url", help="an origin already serving the workload (e.g. https://...; add --ca-bundle to "
                    "--args): requests and bytes then come from hcpsync's JSON report")
    args = ap.parse_args()
    wl = workloads.ensure(args.workload, WORK, log=True)
    variants: list[tuple[str, str, dict[str, str]]] = []
    for spec in args.variants:
        label, _, rest = spec.partition("=")
        binary, _, envs = rest.partition(":")
        env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
        variants.append((label, binary, env))
    dest_root = WORK / "dest" / "ab"
    rows: dict[str, list[dict[str, float]]] = {v[0]: [] for v in variants}
    with contextlib.ExitStack() as stack:
        origin = None if args.url else stack.enter_context(Origin(wl.root, access_log=True))
        alog = AccessLog(origin.access_log_path if origin is not None else None)
        t = Target(wl, args.url or (origin.url if origin is not None else ""))
        for rnd in range(args.runs):
            k = rnd % len(variants)
            for label, binary, extra_env in variants[k:] + variants[:k]:
                dest = dest_root / label
                if dest.exists():
                    shutil.rmtree(dest)
                os.sync()
                wl.warm()
                dest.mkdir(parents=True)
                v = Variant(label, "hcpsync", tuple(args.args.split()), argv0=(binary,))
                argvs, env = build(v, t, dest, WORK / "scratch")
                alog.skip_to_end(settle=0)
                out = WORK / "scratch" / f"ab-{label}.json"
                res = run_one(argvs[0], child_env({**env, **extra_env}), out)
                if origin is not None:
                    log = measure.summarize_log(alog.read_new())
                    res["requests"], res["bytes"] = log["object_requests"], log["object_bytes"]
                else:
                    report = json.loads(out.read_text())
                    res["requests"], res["bytes"] = report["requests"], report["transferred"]["bytes"]
                res["round"] = rnd
                if args.verify and rnd < len(variants):
                    vr = workloads.verify(wl, dest / t.subject, strip_prefix=wl.prefix, check_md5=True)
                    if not vr.ok:
                        raise SystemExit(f"{label}: {vr.summary()}")
                rows[label].append(res)
                gb = res["bytes"] / 1e9
                print(f"r{rnd} {label:10s} wall {res['wall']:6.2f}  user {res['user']:5.2f} sys {res['sys']:5.2f}  "
                      f"cpu/GB {res['cpu'] / gb:5.3f}  cpu/1k req {1000 * res['cpu'] / max(1, res['requests']):6.3f}  "
                      f"minflt/GB {res['minflt'] / gb:8.0f}  rss {res['maxrss_mib']:5.0f} MiB  req {res['requests']}", flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps({"workload": wl.name, "label": label, "binary": binary, "env": extra_env,
                                            "args": args.args, **res}) + "\n")
                shutil.rmtree(dest)
    base = variants[0][0]
    print(f"\n{wl.name}: medians of {args.runs} rounds; ratios = median of per-round ratios to {base}")
    print("| variant | wall s | user s | sys s | CPU-s/GB | CPU-s/1k req | minflt/GB | peak RSS MiB | wall ratio | CPU ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, _, _ in variants:
        rs = rows[label]
        per_gb = statistics.median(r["cpu"] / (r["bytes"] / 1e9) for r in rs)
        per_kreq = statistics.median(1000 * r["cpu"] / max(1, r["requests"]) for r in rs)
        flt = statistics.median(r["minflt"] / (r["bytes"] / 1e9) for r in rs)
        wr = statistics.median(a["wall"] / b["wall"] for a, b in zip(rs, rows[base], strict=True))
        cr = statistics.median(a["cpu"] / b["cpu"] for a, b in zip(rs, rows[base], strict=True))
        print(f"| {label} | {_med(rs, 'wall'):.2f} | {_med(rs, 'user'):.2f} | {_med(rs, 'sys'):.2f} "
              f"| {per_gb:.3f} | {per_kreq:.3f} "
              f"| {flt:.0f} | {_med(rs, 'maxrss_mib'):.0f} | {wr:.3f} | {cr:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
