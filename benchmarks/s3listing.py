"""The bucket-level half of the benchmark S3 origin: a small threaded HTTP service (stdlib only).

nginx (:mod:`benchmarks.origin`) serves objects itself and proxies every *bucket-level*
request (``/``, ``/<bucket>``, ``/<bucket>/``) here:

* ``GET /?...``                               ListBuckets
* ``HEAD /<bucket>``                          HeadBucket (``x-amz-bucket-region: us-east-1``)
* ``GET /<bucket>?location``                  GetBucketLocation (us-east-1)
* ``GET /<bucket>?list-type=2&...``           ListObjectsV2: ``prefix``, ``delimiter``,
  ``max-keys`` (<= 1000), ``continuation-token``, ``start-after``, ``encoding-type=url``,
  ``fetch-owner``; ``IsTruncated``, ``NextContinuationToken``, ``KeyCount``, ``CommonPrefixes``
* ``GET /<bucket>?...`` (no list-type)        ListObjects (v1): ``marker``, ``NextMarker``
* other bucket sub-resources (``?acl``, ...)  501 NotImplemented, S3 error XML

Each top-level directory of ``--root`` is a bucket; every regular file below it (dot files
included) is an object whose key is its path relative to the bucket directory.  The tree is
scanned once at start: key order is Unicode code point order, which is S3's UTF-8 byte order.
``ETag`` and ``Size`` come from ``stat`` so they are exactly what nginx sends for the file
(``"<mtime hex>-<size hex>"``).

With ``--delay-ms`` every request first sleeps that long (the s3like first-byte delay for
listings).  With ``--accel-prefix`` it also answers object ``GET``/``HEAD`` requests by
sleeping and then handing the file back to nginx with ``X-Accel-Redirect`` (the fallback
first-byte-delay mechanism when nginx's echo module is not installed).

Run by :class:`benchmarks.origin.Origin` as ``python s3listing.py --root DIR --port-file F``:
it binds 127.0.0.1 on a free port and writes the port number to ``F``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
REGION = "us-east-1"
MAX_KEYS = 1000
_XML_QUOTE = {'"': "&quot;"}


def nginx_etag(mtime: int, size: int) -> str:
    """The ETag nginx sends for a static file: ``"<mtime hex>-<size hex>"`` (quotes included)."""
    return f'"{mtime:x}-{size:x}"'


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Bucket:
    name: str
    created: float
    keys: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)

    def etag(self, i: int) -> str:
        return nginx_etag(self.mtimes[i], self.sizes[i])


def scan(root: Path) -> dict[str, Bucket]:
    """Every top-level directory of ``root`` is a bucket of the regular files below it."""
    buckets: dict[str, Bucket] = {}
    with os.scandir(root) as it:
        tops = sorted((e for e in it if e.is_dir()), key=lambda e: e.name)
    for top in tops:
        entries: list[tuple[str, int, int]] = []
        stack = [(top.path, "")]
        while stack:
            path, rel = stack.pop()
            with os.scandir(path) as it:
                for e in it:
                    if e.is_dir():
                        stack.append((e.path, f"{rel}{e.name}/"))
                    elif e.is_file():
                        st = e.stat()
                        entries.append((f"{rel}{e.name}", st.st_size, int(st.st_mtime)))
        entries.sort()
        b = Bucket(top.name, top.stat().st_mtime)
        b.keys = [k for k, _, _ in entries]
        b.sizes = [s for _, s, _ in entries]
        b.mtimes = [m for _, _, m in entries]
        buckets[b.name] = b
    return buckets


def _successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix`` (non-empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def encode_token(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(token: str) -> tuple[str, str]:
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect") from exc
    if kind not in ("k", "p"):
        raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect")
    return kind, value


@dataclass
class Page:
    contents: list[int]
    prefixes: list[str]
    truncated: bool
    last: tuple[str, str] | None  # ("k", key) or ("p", common prefix): where the next page starts


def list_page(b: Bucket, prefix: str, delimiter: str, start: int, max_keys: int) -> Page:
    """Up to ``max_keys`` keys and common prefixes under ``prefix`` from index ``start`` on."""
    keys = b.keys
    n = len(keys)
    i = max(start, bisect.bisect_left(keys, prefix))
    contents: list[int] = []
    prefixes: list[str] = []
    last: tuple[str, str] | None = None
    while i < n and len(contents) + len(prefixes) < max_keys:
        key = keys[i]
        if not key.startswith(prefix):
            break
        if delimiter:
            j = key.find(delimiter, len(prefix))
            if j >= 0:
                cp = key[: j + len(delimiter)]
                prefixes.append(cp)
                last = ("p", cp)
                i = bisect.bisect_left(keys, _successor(cp), i)
                continue
        contents.append(i)
        last = ("k", key)
        i += 1
    truncated = i < n and keys[i].startswith(prefix) and max_keys > 0
    return Page(contents, prefixes, truncated, last)


def start_index(b: Bucket, marker: tuple[str, str] | None) -> int:
    if marker is None:
        return 0
    kind, value = marker
    if kind == "p" and value:
        return bisect.bisect_left(b.keys, _successor(value))
    return bisect.bisect_right(b.keys, value)


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, resource: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.resource = resource


def error_xml(err: S3Error, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(err.code)}</Code><Message>{escape(err.message)}</Message>"
        f"<Resource>{escape(err.resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


def _el(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value), _XML_QUOTE)}</{tag}>"


def v2_head(name: str, q: dict[str, str], max_keys: int, keys: int, truncated: bool,
            next_token: str | None) -> list[str]:
    """The elements of a ListObjectsV2 answer before its ``<Contents>``: what the request ``q``
    asked (prefix, delimiter, start-after, encoding: url-encoded when asked), the key count, the
    truncation and the next token."""
    et = q.get("encoding-type", "")

    def e(s: str) -> str:
        return quote(s, safe="/") if et == "url" else s

    head = [_el("Name", name), _el("Prefix", e(q.get("prefix", "")))]
    if q.get("delimiter"):
        head.append(_el("Delimiter", e(q["delimiter"])))
    if q.get("start-after"):
        head.append(_el("StartAfter", e(q["start-after"])))
    head.append(_el("MaxKeys", max_keys))
    if et:
        head.append(_el("EncodingType", et))
    head.append(_el("KeyCount", keys))
    if q.get("continuation-token") is not None:
        head.append(_el("ContinuationToken", q["continuation-token"]))
    head.append(_el("IsTruncated", "true" if truncated else "false"))
    if truncated and next_token is not None:
        head.append(_el("NextContinuationToken", next_token))
    return head


class Service:
    """The listing logic, independent of HTTP: returns ``(status, headers, body)``."""

    def __init__(self, root: Path, delay_ms: float = 0.0, accel_prefix: str | None = None) -> None:
        self.root = root
        self.buckets = scan(root)
        self.delay = delay_ms / 1000.0
        self.accel_prefix = accel_prefix

    def bucket(self, name: str) -> Bucket:
        b = self.buckets.get(name)
        if b is None:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", f"/{name}")
        return b

    def handle(self, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        q = {k: v[0] for k, v in query.items()}
        segs = path.lstrip("/").split("/", 1)
        bucket = segs[0]
        key = segs[1] if len(segs) > 1 else ""
        if method not in ("GET", "HEAD"):
            raise S3Error(
                405, "MethodNotAllowed", "The specified method is not allowed against this resource"
            )
        if not bucket:
            return 200, {}, self.list_buckets()
        b = self.bucket(bucket)
        if key:
            return self.accel(b, key)
        if method == "HEAD":
            return 200, {}, b""
        if "location" in q:
            return (
                200,
                {},
                f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{S3_NS}"/>'.encode(),
            )
        if q.get("list-type") == "2":
            return 200, {}, self.list_v2(b, q)
        unsupported = [
            k for k in q if k not in ("prefix", "delimiter", "marker", "max-keys", "encoding-type")
        ]
        if unsupported:
            raise S3Error(501, "NotImplemented", f"bucket sub-resource {unsupported[0]!r} is not implemented")
        return 200, {}, self.list_v1(b, q)

    def accel(self, b: Bucket, key: str) -> tuple[int, dict[str, str], bytes]:
        if self.accel_prefix is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", f"/{b.name}/{key}")
        uri = f"{self.accel_prefix}/{quote(b.name)}/{quote(key, safe='/')}"
        return 200, {"X-Accel-Redirect": uri}, b""

    def list_buckets(self) -> bytes:
        items = "".join(
            f"<Bucket>{_el('Name', b.name)}{_el('CreationDate', iso8601(b.created))}</Bucket>"
            for b in self.buckets.values()
        )
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="{S3_NS}">'
            f"<Owner><ID>hcpsync-bench</ID><DisplayName>hcpsync-bench</DisplayName></Owner>"
            f"<Buckets>{items}</Buckets></ListAllMyBucketsResult>"
        ).encode()

    @staticmethod
    def _max_keys(q: dict[str, str]) -> int:
        raw = q.get("max-keys", str(MAX_KEYS))
        try:
            n = int(raw)
        except ValueError as exc:
            raise S3Error(
                400, "InvalidArgument", "Provided max-keys not an integer or within integer range"
            ) from exc
        if n < 0:
            raise S3Error(400, "InvalidArgument", "max-keys cannot be negative")
        return min(n, MAX_KEYS)

    @staticmethod
    def _encoder(q: dict[str, str]) -> tuple[bool, str]:
        et = q.get("encoding-type", "")
        if et not in ("", "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
        return et == "url", et

    def _contents_xml(self, b: Bucket, page: Page, enc: bool, owner: bool) -> str:
        out: list[str] = []
        own = "<Owner><ID>hcpsync-bench</ID><DisplayName>hcpsync-bench</DisplayName></Owner>" if owner else ""
        for i in page.contents:
            key = quote(b.keys[i], safe="/") if enc else b.keys[i]
            out.append(
                f"<Contents>{_el('Key', key)}{_el('LastModified', iso8601(b.mtimes[i]))}"
                f"{_el('ETag', b.etag(i))}{_el('Size', b.sizes[i])}{own}"
                f"<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for cp in page.prefixes:
            out.append(
                f"<CommonPrefixes>{_el('Prefix', quote(cp, safe='/') if enc else cp)}</CommonPrefixes>"
            )
        return "".join(out)

    def list_v2(self, b: Bucket, q: dict[str, str]) -> bytes:
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        start_after = q.get("start-after", "")
        token = q.get("continuation-token")
        max_keys = self._max_keys(q)
        enc, _ = self._encoder(q)
        start = start_index(b, ("k", start_after)) if start_after else 0
        if token is not None:
            start = max(start, start_index(b, decode_token(token)))
        page = list_page(b, prefix, delimiter, start, max_keys)

        head = v2_head(b.name, q, max_keys, len(page.contents) + len(page.prefixes), page.truncated,
                       encode_token(*page.last) if page.last is not None else None)
        body = self._contents_xml(b, page, enc, q.get("fetch-owner") == "true")
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{S3_NS}">'
            f"{''.join(head)}{body}</ListBucketResult>"
        ).encode()

    def list_v1(self, b: Bucket, q: dict[str, str]) -> bytes:
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        marker = q.get("marker", "")
        max_keys = self._max_keys(q)
        enc, et = self._encoder(q)
        start = 0
        if marker:
            rolled = bool(delimiter) and marker.startswith(prefix) and marker.endswith(delimiter)
            start = start_index(b, ("p" if rolled else "k", marker))
        page = list_page(b, prefix, delimiter, start, max_keys)

        def e(s: str) -> str:
            return quote(s, safe="/") if enc else s

        head = [
            _el("Name", b.name),
            _el("Prefix", e(prefix)),
            _el("Marker", e(marker)),
            _el("MaxKeys", max_keys),
        ]
        if delimiter:
            head.append(_el("Delimiter", e(delimiter)))
        if et:
            head.append(_el("EncodingType", et))
        head.append(_el("IsTruncated", "true" if page.truncated else "false"))
        if page.truncated and delimiter and page.last is not None:
            head.append(_el("NextMarker", e(page.last[1])))
        body = self._contents_xml(b, page, enc, True)
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{S3_NS}">'
            f"{''.join(head)}{body}</ListBucketResult>"
        ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle the body waited for
    # nginx's delayed ACK of the headers, 40 ms on every listing after a connection's first
    disable_nagle_algorithm = True
    server_version = "hcpsync-bench-listing"
    sys_version = ""
    service: Service  # set on the subclass made by serve()
    verbose = False

    def _respond(self) -> None:
        rid = uuid.uuid4().hex[:16].upper()
        if self.service.delay:
            time.sleep(self.service.delay)
        try:
            status, headers, body = self.service.handle(self.command, self.path)
            ctype = "application/xml"
        except S3Error as err:
            status, headers, body, ctype = err.status, {}, error_xml(err, rid), "application/xml"
        self.send_response(status)
        self.send_header("x-amz-request-id", rid)
        self.send_header("x-amz-bucket-region", REGION)
        for k, v in headers.items():
            self.send_header(k, v)
        if "X-Accel-Redirect" not in headers:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond()

    def do_HEAD(self) -> None:
        self._respond()

    def log_message(self, format: str, *args: object) -> None:
        if self.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def make_server(service: Service, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> Server:
    handler = type("BoundHandler", (Handler,), {"service": service, "verbose": verbose})
    return Server((host, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Bucket-level S3 API (listings) for the benchmark origin.")
    ap.add_argument("--root", type=Path, required=True, help="directory whose subdirectories are buckets")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="sleep this long before answering")
    ap.add_argument("--accel-prefix", default=None, help="answer object GET/HEAD with X-Accel-Redirect here")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    service = Service(args.root.resolve(), args.delay_ms, args.accel_prefix)
    server = make_server(service, port=args.port, verbose=args.verbose)
    port = server.server_address[1]
    nkeys = sum(len(b.keys) for b in service.buckets.values())
    print(
        f"listing service on 127.0.0.1:{port}: {len(service.buckets)} bucket(s), {nkeys} keys",
        file=sys.stderr,
    )
    return serve(server, args.port_file)


def serve(server: ThreadingHTTPServer, port_file: Path | None) -> int:
    """Write the bound port to ``port_file`` (atomically), serve until SIGTERM or SIGINT, close."""
    if port_file:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{server.server_address[1]}\n", encoding="utf-8")
        tmp.replace(port_file)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
