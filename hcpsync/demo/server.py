"""``hcpsync demo``: a local S3 endpoint (moto's server on loopback) seeded with a synthetic
HCP subject, pulled through the same code path as ``hcpsync pull``.  No credentials, no internet."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import warnings
from typing import Any, TextIO

from ..api import pull
from ..config import MiB, TransferConfig
from ..engine.progress import ProgressCallback
from ..errors import UsageError
from ..models import Selection
from ..store.s3 import StorageOptions
from ..text import say

DEMO_BUCKET = "hcp-openaccess"
DEMO_RELEASE = "HCP_1200"
DEMO_SUBJECT = "100307"
#: what ``hcpsync demo`` needs beyond hcpsync's own dependencies
DEMO_INSTALL = 'pip install "hcpsync[demo]"'


def require_demo_deps() -> None:
    """Raise a one-line :class:`UsageError` naming what to install if moto's server or boto3 is missing."""
    try:
        with warnings.catch_warnings():  # moto warns (on stderr) when its server extra is missing
            warnings.simplefilter("ignore")
            import boto3  # noqa: F401
            import moto.server  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "moto").split(".")[0]
        raise UsageError(f"hcpsync demo needs moto[server] and boto3, and {missing} is not installed: {DEMO_INSTALL}") from exc


class LocalS3:
    """moto's S3 server on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self) -> None:
        require_demo_deps()
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def __enter__(self) -> LocalS3:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="demo", aws_secret_access_key="demo",  # moto ignores signatures
        )


def seed_demo(server: LocalS3) -> tuple[int, int]:
    """Create the demo bucket with one synthetic subject; returns (objects, bytes)."""
    from .synth import seed_bucket, synth_subject

    files = synth_subject(DEMO_SUBJECT, DEMO_RELEASE)
    client = server.client()
    client.create_bucket(Bucket=DEMO_BUCKET)
    # public-read, like an open dataset, so the pull needs no credentials (--no-sign-request)
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{DEMO_BUCKET}", f"arn:aws:s3:::{DEMO_BUCKET}/*"]}]}
    client.put_bucket_policy(Bucket=DEMO_BUCKET, Policy=json.dumps(policy))
    seed_bucket(client, DEMO_BUCKET, files)
    return len(files), sum(f.size for f in files)


async def run_demo(dest: str | os.PathLike[str], progress: ProgressCallback | None = None,
                   out: TextIO = sys.stdout) -> Any:
    """Start the endpoint, seed it, pull subject 100307 to ``dest``; returns the PullReport."""
    with LocalS3() as server:
        n, size = await asyncio.to_thread(seed_demo, server)
        say(f"local S3 endpoint {server.url}: s3://{DEMO_BUCKET}/{DEMO_RELEASE}/{DEMO_SUBJECT}/ "
            f"seeded with {n} objects, {size / MiB:.1f} MiB (synthetic HCP subject)", out)
        say(f"pulling to {os.fspath(dest)} ...", out)
        # small parts so that the demo's larger files are fetched as concurrent byte ranges
        cfg = TransferConfig(concurrency=32, part_size=2 * MiB, multipart_threshold=4 * MiB)
        sel = Selection(subjects=(DEMO_SUBJECT,), bucket=DEMO_BUCKET, release=DEMO_RELEASE)
        report = await pull(sel, dest, config=cfg, storage=StorageOptions(endpoint_url=server.url, no_sign_request=True),
                            progress=progress)
        say(f"each file's MD5 was checked (against the .xdlm manifests, else the S3 ETag) before it reached its "
            f"final path; re-check the tree any time, offline: hcpsync verify --dest {os.fspath(dest)} --offline",
            out)
        return report

