"""Start-up time of the ``hcpsync`` command: ``--version``, and a pull of one 1 KiB object.

    python -m benchmarks.startup                    # nginx origin (benchmarks/origin.py), 15 runs
    python -m benchmarks.startup --origin moto      # moto's server in a child process, fake keys
    python -m benchmarks.startup --runs 30 --hcpsync ../base/.venv/bin/hcpsync --json

Each run is a fresh process (wall clock from fork to exit, as a shell user sees it); a pull
goes into a fresh destination, so it lists, fetches, verifies and journals the one object.
Then ``python -X importtime`` of both commands: the modules that cost most (self time) and
the total.  The target (issue 12) is a pull <= 0.25 s, median of >= 10 runs.
"""

from __future__ import annotations

import argparse
import json
import os
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
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall


def importtime(argv: list[str], env: dict[str, str], top: int) -> dict[str, object]:
    """``python -X importtime``: the total, and the ``top`` modules and packages by self time."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
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


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "max_s": round(max(times), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--origin", choices=("nginx", "moto"), default="nginx" if shutil.which("nginx") or
                    Path("/usr/sbin/nginx").exists() else "moto")
    ap.add_argument("--hcpsync", default=str(Path(sys.executable).with_name("hcpsync")), help="the command to time")
    ap.add_argument("--top", type=int, default=12, help="importtime rows to show")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="hcpsync-startup-"))
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
            version = [args.hcpsync, "--version"]
            pull = [args.hcpsync, "pull", SOURCE, "--endpoint-url", url, *flags, "--no-progress", "-q"]
            timed(pull + [str(scratch / "warm")], env)  # page cache, pyc files
            v_times, p_times = [], []
            for i in range(args.runs):  # interleaved, so that a noisy moment hits both
                v_times.append(timed(version, env))
                p_times.append(timed(pull + [str(scratch / f"dest{i}")], env))
                if not (scratch / f"dest{i}" / "100206/T1w/one.bin").is_file():
                    raise SystemExit(f"the pull did not write {scratch}/dest{i}/100206/T1w/one.bin")
            module = ["-m", "hcpsync"]
            result = {
                "origin": args.origin, "runs": args.runs, "hcpsync": args.hcpsync,
                "version": summary(v_times), "pull": summary(p_times),
                "importtime_version": importtime([*module, "--version"], env, args.top),
                "importtime_pull": importtime([*module, *pull[1:], str(scratch / "imp")], env, args.top),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"origin {args.origin}, {args.runs} runs of each, {args.hcpsync}")
    for name in ("version", "pull"):
        s = result[name]
        assert isinstance(s, dict)
        print(f"  hcpsync {name:<8} median {s['median_s']:.3f} s   min {s['min_s']:.3f} s   max {s['max_s']:.3f} s")
    for name in ("version", "pull"):
        imp = result[f"importtime_{name}"]
        assert isinstance(imp, dict)
        print(f"\npython -X importtime -m hcpsync {name}: {imp['total_ms']} ms of imports")
        print("  by package: " + ", ".join(f"{n} {ms}" for n, ms in imp["packages_ms"].items()))
        print("  most self time: " + ", ".join(f"{n} {ms}" for n, ms in imp["top_self_ms"]))
        heavy = [m for m in ("aiohttp", "aiobotocore", "botocore", "sqlite3", "ssl", "tqdm") if m in imp["loaded"]]
        print(f"  loaded: {', '.join(heavy) or 'none of aiohttp, aiobotocore, botocore, sqlite3, ssl, tqdm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
