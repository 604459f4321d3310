"""Shared fixtures: a real S3 API (moto's threaded server on loopback) and helpers."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from faultproxy import FaultProxy

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAHCPSYNCTESTKEY01",
    "AWS_SECRET_ACCESS_KEY": "hcpsync/test/secret/do-not-print-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _aws_env() -> Iterator[None]:
    old = {k: os.environ.get(k) for k in [*FAKE_ENV, "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                                          "AWS_SHARED_CREDENTIALS_FILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(FAKE_ENV)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3(moto_url: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"hcp-test-{os.getpid()}-{next(_counter)}"
    s3.create_bucket(Bucket=name)
    return name


def put_objects(s3: Any, bucket: str, objects: dict[str, bytes], threads: int = 8) -> None:
    """Upload ``{key: bytes}`` to ``bucket`` (in parallel: moto serves ~150 requests/s)."""

    def put(item: tuple[str, bytes]) -> None:
        s3.put_object(Bucket=bucket, Key=item[0], Body=item[1])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, objects.items()))


def fast_put(bucket: str, objects: dict[str, bytes]) -> None:
    """Seed objects straight into the in-process moto backend that the threaded server serves
    (~100x faster than PUT requests); the objects are then read over real HTTP."""
    from moto.s3.models import s3_backends

    backend = s3_backends["123456789012"]["aws"]
    for key, data in objects.items():
        backend.put_object(bucket, key, data)


def det_bytes(n: int, seed: str) -> bytes:
    """Deterministic pseudo-random bytes (fast: SHA-256 blocks repeated with a counter)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest() * 128  # 4 KiB
    i = 0
    while len(out) < n:
        out += hashlib.sha256(block[:32] + i.to_bytes(8, "little")).digest() + block[32:]
        i += 1
    return bytes(out[:n])


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative POSIX path -> bytes), hcpsync's state excluded."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".hcpsync"):
            out[rel] = p.read_bytes()
    return out


def plan_doc(stdout: str) -> dict[str, Any]:
    """``hcpsync plan --json`` (JSON Lines) as one document: the summary line's fields, with
    ``objects`` (in key order) and ``rejected`` from their lines."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines and lines[-1]["type"] == "summary", stdout[-500:]
    assert all(d["type"] in ("object", "rejected") for d in lines[:-1])
    doc = {k: v for k, v in lines[-1].items() if k != "type"}
    doc["objects"] = sorted(({k: v for k, v in d.items() if k != "type"} for d in lines if d["type"] == "object"),
                            key=lambda o: o["key"])
    doc["rejected"] = [{k: v for k, v in d.items() if k != "type"} for d in lines if d["type"] == "rejected"]
    return doc


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    """The fault proxy in front of the moto server (no rule: it forwards and counts)."""
    from faultproxy import FaultProxy

    with FaultProxy(moto_url) as p:
        yield p


async def cancel_mid_hash(work: Any) -> float:
    """Run the coroutine ``work`` (hashing a large file) for 0.3 s and cancel it; the time it was
    cancelled (for :func:`hashing_threads_end`, once whatever owns the threads is closed)."""
    import asyncio
    import time

    task = asyncio.ensure_future(work)
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return t0


async def hashing_threads_end(since: float, within: float = 2.0) -> None:
    """Wait until no ``hcpsync-md5`` thread is left; fail if one outlives ``since + within`` seconds."""
    import asyncio
    import threading
    import time

    while any(t.name.startswith("hcpsync-md5") for t in threading.enumerate()):
        assert time.monotonic() - since < within, "hashing threads still running"
        await asyncio.sleep(0.01)
