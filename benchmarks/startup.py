"""Start-up time of the ``hcpsync`` command: ``--version``, and a pull of one 1 KiB object.

    python -m benchmarks.startup                    # nginx origin (benchmarks/origin.py), 15 runs
    python -m benchmarks.startup --origin moto      # moto's server in a child process, fake keys
    python -m benchmarks.startup --runs 30 --compare ../base/.venv/bin/hcpsync   # another build, same rounds

Each run is a fresh process (wall clock from fork to exit, as a shell user sees it); a pull
goes into a fresh destination, so it lists, fetches, verifies and journals the one object.
Then ``python -X importtime`` of both commands: the modules that cost most (self time) and
the total.  The target (issue 12) is a pull <= 0.25 s, median of >= 10 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUCKET, KEY = "hcp-openaccess", "HCP_1200/100206/T1w/one.bin"
SOURCE = "s3://hcp-openaccess/HCP_1200/100206/"


@contextmanager
def nginx_origin(root: Path) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    from .origin import Origin

    with Origin(root) as origin:
        yield origin.url, ["--no-sign-request"], {}


@contextmanager
def moto_origin(root: Path) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """moto's server in a child process (not a thread here: it would share our CPU and GIL)."""
    code = ("import sys; from moto.server import ThreadedMotoServer as S; s = S(ip_address='127.0.0.1', port=0, "
            "verbose=False); s.start(); print('http://%s:%d' % s.get_host_and_port(), flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # (werkzeug logs every request there)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        keys = {"AWS_ACCESS_KEY_ID": "startup", "AWS_SECRET_ACCESS_KEY": "startup"}
        import boto3

        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="startup", aws_secret_access_key="startup")
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=(root / BUCKET / KEY).read_bytes())
        yield url, [], keys
    finally:
        proc.kill()
        proc.wait()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv``, from fork to exit (CPU: user + system, of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def importtime(python: str, argv: list[str], env: dict[str, str], top: int) -> dict[str, object]:
    """``python -X importtime``: the total, and the ``top`` modules and packages by self time."""
    # from a neutral folder: ``-m`` puts the working directory first on sys.path (a checkout's hcpsync)
    done = subprocess.run([python, "-X", "importtime", *argv], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, cum_us, name = line[len("import time:"):].split("|", 2)
            rows.append((int(self_us), int(cum_us), name.rstrip()))
    packages: dict[str, int] = {}  # self time summed by top-level package: who costs what
    for self_us, _, name in rows:
        top_name = name.strip().split(".")[0]
        packages[top_name] = packages.get(top_name, 0) + self_us
    biggest = sorted(packages.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_ms": round(sum(packages.values()) / 1000, 1),
        "top_self_ms": [(name.strip(), round(s / 1000, 1)) for s, _, name in sorted(rows, reverse=True)[:top]],
        "packages_ms": {name: round(cum / 1000, 1) for name, cum in biggest},
        "loaded": sorted({name.strip().split(".")[0] for _, _, name in rows}),
    }


def summary(runs: list[tuple[float, float]]) -> dict[str, float]:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return {"median_s": round(statistics.median(walls), 4), "min_s": round(min(walls), 4),
            "max_s": round(max(walls), 4), "cpu_median_s": round(statistics.median(cpus), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--origin", choices=("nginx", "moto"), default="nginx" if shutil.which("nginx") or
                    Path("/usr/sbin/nginx").exists() else "moto")
    ap.add_argument("--hcpsync", default=str(Path(sys.executable).with_name("hcpsync")), help="the command to time")
    ap.add_argument("--compare", metavar="HCPSYNC", help="another build's hcpsync, timed in the same rounds")
    ap.add_argument("--top", type=int, default=12, help="importtime rows to show")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    builds = {"hcpsync": args.hcpsync, **({"compare": args.compare} if args.compare else {})}

    scratch = Path(tempfile.mkdtemp(prefix="hcpsync-startup-"))
    result: dict[str, object] = {"origin": args.origin, "runs": args.runs}
    try:
        obj = scratch / "origin" / BUCKET / KEY
        obj.parent.mkdir(parents=True)
        obj.write_bytes(os.urandom(1024))
        # as users run it: no AWS settings of ours, and bytecode cached (a sandbox's PYTHONDONTWRITEBYTECODE
        # would compile hcpsync's sources in every run: ~70 ms)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        with (nginx_origin if args.origin == "nginx" else moto_origin)(scratch / "origin") as (url, flags, keys):
            env.update(keys)
            pull = ["pull", SOURCE, "--endpoint-url", url, *flags, "--no-progress", "-q"]
            times: dict[str, list[tuple[float, float]]] = {f"{b} {c}": [] for b in builds for c in ("version", "pull")}
            for build, exe in builds.items():
                timed([exe, *pull, str(scratch / f"warm-{build}")], env)  # page cache, bytecode
            for i in range(args.runs):  # interleaved, so that a noisy moment hits every command
                for build, exe in builds.items():
                    times[f"{build} version"].append(timed([exe, "--version"], env))
                    dest = scratch / f"{build}-{i}"
                    times[f"{build} pull"].append(timed([exe, *pull, str(dest)], env))
                    if not (dest / "100206/T1w/one.bin").is_file():
                        raise SystemExit(f"the pull did not write {dest}/100206/T1w/one.bin")
            for build, exe in builds.items():
                python = str(Path(exe).with_name("python"))
                result[build] = {
                    "command": exe, "version": summary(times[f"{build} version"]), "pull": summary(times[f"{build} pull"]),
                    "importtime_version": importtime(python, ["-m", "hcpsync", "--version"], env, args.top),
                    "importtime_pull": importtime(python, ["-m", "hcpsync", *pull, str(scratch / f"imp-{build}")],
                                                  env, args.top),
                }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"origin {args.origin}, {args.runs} runs of each command, interleaved; wall (CPU: user + system)")
    for build in builds:
        res = result[build]
        assert isinstance(res, dict)
        print(f"{build}: {res['command']}")
        for name in ("version", "pull"):
            s = res[name]
            print(f"  {name:<8} median {s['median_s']:.3f} s   min {s['min_s']:.3f} s   max {s['max_s']:.3f} s   "
                  f"(CPU median {s['cpu_median_s']:.3f} s)")
    for build in builds:
        res = result[build]
        assert isinstance(res, dict)
        for name in ("version", "pull"):
            imp = res[f"importtime_{name}"]
            print(f"\n{build}: python -X importtime -m hcpsync {name}: {imp['total_ms']} ms of imports")
            print("  by package: " + ", ".join(f"{n} {ms}" for n, ms in imp["packages_ms"].items()))
            print("  most self time: " + ", ".join(f"{n} {ms}" for n, ms in imp["top_self_ms"]))
            heavy = [m for m in ("aiohttp", "aiobotocore", "botocore", "sqlite3", "ssl", "tqdm") if m in imp["loaded"]]
            print(f"  loaded: {', '.join(heavy) or 'none of aiohttp, aiobotocore, botocore, sqlite3, ssl, tqdm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
