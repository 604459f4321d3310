"""``s3://BUCKET/PREFIX/`` as aws-cli and s5cmd users type it -> bucket, release, subject, path.

An HCP-shaped prefix (in ``hcp-openaccess``, or starting with ``HCP_``) reads as
``<release>/<subject>/<path inside the subject>``: ``s3://hcp-openaccess/HCP_1200/100307/T1w/``
is release ``HCP_1200``, subject ``100307``, path ``T1w``.  Any other prefix is one "subject"
folder, its last segment, inside a "release", its parent (empty at the bucket's top):
``s3://openneuro.org/ds000001/`` is release ``""``, subject ``ds000001``.  Either way keys land
at ``DEST/<key minus the release>``: ``DEST/100307/T1w/...``, ``DEST/ds000001/sub-01/...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError
from .models import DEFAULT_BUCKET

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class S3Source:
    bucket: str
    release: str
    subject: str
    path: str  # inside the subject folder; "" for all of it


def is_uri(text: str) -> bool:
    """Whether ``text`` looks like a URI (``s3://...``, ``https://...``) rather than a local path."""
    return bool(_SCHEME.match(text))


def parse_s3_uri(uri: str) -> S3Source:
    """The selection an ``s3://BUCKET/PREFIX/`` names (see the module's docstring)."""
    if not uri.startswith("s3://"):
        raise UsageError(f"expected an S3 URI such as s3://{DEFAULT_BUCKET}/HCP_1200/100307/, got {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    segments = prefix.strip("/").split("/") if prefix.strip("/") else []
    if not bucket or not segments:
        raise UsageError(f"{uri!r} names no prefix: give the folder to pull, e.g. s3://{bucket or 'BUCKET'}/PREFIX/")
    if any(s in ("", ".", "..") for s in segments):
        raise UsageError(f"{uri!r}: empty, '.' or '..' segments are not supported")
    if bucket == DEFAULT_BUCKET or segments[0].startswith("HCP_"):
        if len(segments) == 1:
            raise UsageError(f"{uri!r} is a whole release: name one subject, s3://{bucket}/{segments[0]}/SUBJECT/, "
                             f"or give --release {segments[0]} with --subjects-file FILE")
        return S3Source(bucket, segments[0], segments[1], "/".join(segments[2:]))
    return S3Source(bucket, "/".join(segments[:-1]), segments[-1], "")
