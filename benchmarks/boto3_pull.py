"""The boto3 peer: download every object under ``s3://BUCKET/PREFIX`` into DEST, the plain boto3 way.

A thread pool of ``--concurrency`` files, each fetched with ``client.download_file`` (s3transfer:
ranged GETs of ``--part-size`` for big objects, ``--file-concurrency`` threads per file),
unsigned path-style requests.  Run with the peers' Python (it needs only boto3)::

    benchmarks/work/peers-venv/bin/python benchmarks/boto3_pull.py \\
        --endpoint-url URL --bucket hcp-openaccess --prefix HCP_1200/100206/ --dest DIR

Keys land at ``DEST/<key minus PREFIX>``, like ``aws s3 cp --recursive`` and s5cmd.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint-url", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--dest", required=True)
    ap.add_argument("--concurrency", type=int, default=16, help="files in flight")
    ap.add_argument("--file-concurrency", type=int, default=4, help="ranged GETs in flight per big file")
    ap.add_argument("--part-size", type=int, default=8 * 1024 * 1024, help="bytes per ranged GET")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--no-verify-ssl", action="store_true", help="HTTPS: do not check the certificate")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    cfg = Config(
        signature_version=UNSIGNED,
        s3={"addressing_style": "path"},
        max_pool_connections=args.concurrency * args.file_concurrency,
        retries={"max_attempts": 5, "mode": "standard"},
    )
    client: Any = boto3.session.Session().client(
        "s3", endpoint_url=args.endpoint_url, region_name=args.region, config=cfg,
        verify=False if args.no_verify_ssl else None,
    )
    tcfg = TransferConfig(
        multipart_threshold=args.part_size,
        multipart_chunksize=args.part_size,
        max_concurrency=args.file_concurrency,
        use_threads=args.file_concurrency > 1,
    )
    keys: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=args.prefix):
        keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
    t_list = time.monotonic() - t0

    def one(item: tuple[str, int]) -> int:
        key, size = item
        path = Path(args.dest) / key[len(args.prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(args.bucket, key, str(path), Config=tcfg)
        return size

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        nbytes = sum(pool.map(one, keys))
    wall = time.monotonic() - t0
    print(
        json.dumps(
            {"files": len(keys), "bytes": nbytes, "list_s": round(t_list, 3), "wall_s": round(wall, 3)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
