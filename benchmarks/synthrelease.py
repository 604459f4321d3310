"""A generated S3 release: a whole HCP-sized release served from a template subject (stdlib only).

The scale benchmark (:mod:`benchmarks.scale`) needs an S3 endpoint holding millions of objects
(HCP_1200 holds ~14.3 M over 1,113 subjects) with S3's per-page latency, on a machine that cannot
hold that many files.  This service answers for a bucket (default ``hcp-openaccess``) whose release
prefix (default ``HCP_1200/``) holds ``--subjects N`` synthetic subjects ``200000``, ``200001``,
... (or ``--objects M``: ceil(M / keys per subject) subjects, the last one cut so the total is
exactly M).  Each holds the keys of the real subject 100206 (``shared/workloads/HCP_1200-100206-keys.txt``,
12,863 keys) with ``100206`` replaced by the synthetic ID everywhere in the key (``T1w/100206/``,
``100206_3T_...``), as the old ``scale.py`` did.

It holds **no list of all keys**: a subject's keys are computed when asked for, sorted per
subject after the replacement (the sort is kept as a permutation of the template keys, 2 bytes
per key, in an LRU of ``--cache-subjects`` subjects; identical permutations are shared).  A
cut subject holds the first keys of its sorted list.

Requests (path-style, unsigned requests accepted, any signature ignored):

* ``GET /``                                   ListBuckets
* ``HEAD /<bucket>``                          HeadBucket (``x-amz-bucket-region: us-east-1``)
* ``GET /<bucket>?location``                  GetBucketLocation (us-east-1)
* ``GET /<bucket>?list-type=2&...``           ListObjectsV2: ``prefix``, ``delimiter``,
  ``max-keys`` (<= 1000), ``continuation-token``, ``start-after``, ``encoding-type=url``;
  ``IsTruncated``, ``NextContinuationToken``, ``KeyCount``, ``CommonPrefixes``, in UTF-8 byte
  order across subject boundaries.  ``--page-delay S``: each listing sleeps S s first (in its
  own thread: concurrent listings overlap).
* ``GET``/``HEAD /<bucket>/<key>``            the object: ``--sizes zero`` (0 bytes) or ``tiny``
  (1..64 bytes derived from a hash of the key); ``ETag`` = quoted MD5 of the content,
  ``Content-Length``, ``Last-Modified`` (2020-01-01T00:00:01Z), ``If-Match`` (412),
  ``Range: bytes=a-b`` / ``a-`` / ``-n`` (206 + ``Content-Range``; 416).  ``--get-delay S``.
* ``GET /__stats``                            JSON: requests counted by kind (``list``,
  ``get``, ``head``, ``get_manifest`` = GETs of ``.xdlm/`` keys, ...), ``first_list``,
  ``first_get`` and ``first_get_manifest`` (``time.time()`` of the first one; ``get`` counts
  only the non-manifest GETs), ``lists_in_flight_max`` and
  ``gets_in_flight_max`` (the most requests of that kind being answered at once).
* ``POST /__reset``                           zeroes the statistics.

Run ``python -m benchmarks.synthrelease --objects 1000000 --port-file F``: it binds 127.0.0.1 on
a free port (``--port`` to choose) and writes the port number to ``F`` once listening.
"""

from __future__ import annotations

import argparse
import array
import bisect
import hashlib
import json
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, overload
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from .s3listing import (
    _XML_QUOTE,
    MAX_KEYS,
    REGION,
    S3_NS,
    S3Error,
    _el,
    _successor,
    decode_token,
    encode_token,
    error_xml,
    serve,
    v2_head,
)
from .s3listing import Handler as ListingHandler
from .s3listing import Server as ListingServer
from .workloads import default_keys_file, read_keys

TEMPLATE_SUBJECT = "100206"
TEMPLATE_RELEASE = "HCP_1200/"
FIRST_ID = 200000
BUCKET = "hcp-openaccess"
RELEASE = "HCP_1200/"
MTIME = 1_577_836_801  # 2020-01-01T00:00:01Z, as the workloads' files
LAST_MODIFIED_XML = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(MTIME))
LAST_MODIFIED_HTTP = formatdate(MTIME, usegmt=True)
SIZES = ("zero", "tiny")
TINY_MAX = 64
MANIFEST_DIR = "/.xdlm/"
END = (-1, -1)  # the position after the last key

Pos = tuple[int, int]  # (subject index, index in that subject's sorted keys); END past the last


def default_template(keys_file: Path | None = None) -> list[str]:
    """The template subject's keys relative to the release (``100206/...``), from the shared key list."""
    keys = read_keys(keys_file or default_keys_file())
    head = f"{TEMPLATE_RELEASE}{TEMPLATE_SUBJECT}/"
    return [k[len(TEMPLATE_RELEASE):] for k in keys if k.startswith(head)]


def content_of(key: str, sizes: str) -> bytes:
    """The object's bytes: empty (``zero``), or 1..64 bytes from a BLAKE2 hash of the key (``tiny``)."""
    if sizes == "zero":
        return b""
    h = hashlib.blake2b(key.encode("utf-8"), digest_size=32).digest()
    return (h + h)[: 1 + h[0] % TINY_MAX]


def etag_of(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


EMPTY_ETAG = etag_of(b"")


class SubjectKeys(Sequence[str]):
    """One subject's keys in sorted order, computed on access (``bisect`` works on it)."""

    def __init__(self, release: str, rests: Sequence[str], sid: str, perm: array.array[int], n: int) -> None:
        self.release, self.rests, self.sid, self.perm, self.n = release, rests, sid, perm, n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, j: int) -> str: ...
    @overload
    def __getitem__(self, j: slice) -> list[str]: ...
    def __getitem__(self, j: int | slice) -> str | list[str]:
        if isinstance(j, slice):
            return [self[x] for x in range(*j.indices(self.n))]
        if not 0 <= j < self.n:
            raise IndexError(j)
        return self.release + self.rests[self.perm[j]].replace(TEMPLATE_SUBJECT, self.sid)

    def __iter__(self) -> Iterator[str]:
        for j in range(self.n):
            yield self[j]


class _UpperBounds(Sequence[str]):
    """Subject ``i``'s exclusive upper bound ``<release><id>0`` ('0' follows '/'): bisected to find
    the first subject that can hold a key >= some string."""

    def __init__(self, rel: Release) -> None:
        self.rel = rel

    def __len__(self) -> int:
        return self.rel.subjects

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[x] for x in range(*i.indices(len(self)))]
        return f"{self.rel.release}{FIRST_ID + i}0"


@dataclass
class Page:
    contents: list[str]
    prefixes: list[str]
    truncated: bool
    last: tuple[str, str] | None  # ("k", key) or ("p", common prefix): where the next page starts


class Release:
    """The generated release: ``subjects`` subjects of ``len(rests)`` keys, the last one holding
    ``last_count``.  Keys are computed per subject; only sort permutations are cached."""

    def __init__(
        self,
        rests: Sequence[str],
        *,
        subjects: int | None = None,
        objects: int | None = None,
        bucket: str = BUCKET,
        release: str = RELEASE,
        sizes: str = "zero",
        cache_subjects: int = 4096,
    ) -> None:
        if not rests or not all(r.startswith(f"{TEMPLATE_SUBJECT}/") for r in rests):
            raise ValueError(f"template keys must all start with {TEMPLATE_SUBJECT}/")
        if len(set(rests)) != len(rests):
            raise ValueError("duplicate template keys")
        if (subjects is None) == (objects is None):
            raise ValueError("give subjects or objects")
        per = len(rests)
        if objects is not None:
            if objects < 1:
                raise ValueError("objects must be >= 1")
            subjects = -(-objects // per)
            self.last_count = objects - (subjects - 1) * per
        else:
            assert subjects is not None
            self.last_count = per
        if not 1 <= subjects <= 999_999 - FIRST_ID + 1:
            raise ValueError("subjects must be 1..800000 (six-digit IDs)")
        if sizes not in SIZES:
            raise ValueError(f"sizes: one of {SIZES}")
        self.rests = list(rests)
        self.subjects = subjects
        self.bucket = bucket
        self.release = release if not release or release.endswith("/") else release + "/"
        self.sizes = sizes
        self.total = (subjects - 1) * per + self.last_count
        self._uppers = _UpperBounds(self)
        self._cache: OrderedDict[str, array.array[int]] = OrderedDict()
        self._interned: dict[bytes, array.array[int]] = {}
        self._cache_max = max(1, cache_subjects)
        self._lock = threading.Lock()
        self.sorts = 0  # subjects sorted so far (cache misses)

    # -- subjects and keys

    def sid(self, i: int) -> str:
        return str(FIRST_ID + i)

    def subject_prefix(self, i: int) -> str:
        return f"{self.release}{FIRST_ID + i}/"

    def count(self, i: int) -> int:
        return self.last_count if i == self.subjects - 1 else len(self.rests)

    def _perm(self, sid: str) -> array.array[int]:
        with self._lock:
            perm = self._cache.get(sid)
            if perm is not None:
                self._cache.move_to_end(sid)
                return perm
        replaced = [r.replace(TEMPLATE_SUBJECT, sid) for r in self.rests]
        if len(set(replaced)) != len(replaced):
            raise ValueError(f"two template keys give the same key for subject {sid}")
        order = sorted(range(len(replaced)), key=replaced.__getitem__)
        new = array.array("H" if len(order) <= 0x10000 else "I", order)
        with self._lock:
            perm = self._interned.setdefault(new.tobytes(), new)
            self._cache[sid] = perm
            self.sorts += 1
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
            if len(self._interned) > self._cache_max:  # only when subjects really sort differently
                self._interned = {p.tobytes(): p for p in self._cache.values()}
        return perm

    def keys(self, i: int) -> SubjectKeys:
        sid = self.sid(i)
        return SubjectKeys(self.release, self.rests, sid, self._perm(sid), self.count(i))

    def iter_keys(self) -> Iterator[str]:
        """Every key in order (tests and small releases only)."""
        for i in range(self.subjects):
            yield from self.keys(i)

    def find(self, key: str) -> bool:
        """Whether ``key`` is an object of the release."""
        rel = self.release
        if not key.startswith(rel) or key[len(rel) + 6 : len(rel) + 7] != "/":
            return False
        sid = key[len(rel) : len(rel) + 6]
        if not sid.isdigit() or not 0 <= int(sid) - FIRST_ID < self.subjects:
            return False
        ks = self.keys(int(sid) - FIRST_ID)
        j = bisect.bisect_left(ks, key)
        return j < len(ks) and ks[j] == key

    def content(self, key: str) -> bytes:
        return content_of(key, self.sizes)

    def meta(self, key: str) -> tuple[str, int]:
        """``(ETag, size)`` of an object."""
        if self.sizes == "zero":
            return EMPTY_ETAG, 0
        data = content_of(key, self.sizes)
        return etag_of(data), len(data)

    # -- positions

    def seek(self, lower: str, inclusive: bool) -> Pos:
        """The position of the first key ``>= lower`` (``inclusive``) or ``> lower``."""
        i = bisect.bisect_right(self._uppers, lower)
        if i >= self.subjects:
            return END
        if lower <= self.subject_prefix(i):  # every key of subject i is longer than its prefix: > lower
            return (i, 0)
        ks = self.keys(i)
        j = bisect.bisect_left(ks, lower) if inclusive else bisect.bisect_right(ks, lower)
        if j < len(ks):
            return (i, j)
        return (i + 1, 0) if i + 1 < self.subjects else END

    def advance(self, pos: Pos) -> Pos:
        i, j = pos
        if j + 1 < self.count(i):
            return (i, j + 1)
        return (i + 1, 0) if i + 1 < self.subjects else END

    def after_marker(self, kind: str, value: str) -> Pos:
        """Where a listing resumes after a token's last entry (a key, or a common prefix)."""
        if kind == "p":
            return self.seek(_successor(value), True) if value else (0, 0)
        return self.seek(value, False)

    def _subject_relation(self, i: int, prefix: str) -> str:
        """``all``: every key of subject ``i`` starts with ``prefix``; ``none``: no key does;
        ``some``: it depends on the key."""
        sp = self.subject_prefix(i)
        if sp.startswith(prefix):
            return "all"
        return "some" if prefix.startswith(sp) else "none"

    def _rollup_of_subject(self, i: int, prefix: str, delimiter: str) -> str | None:
        """The common prefix every key of subject ``i`` rolls up into, when the delimiter falls
        within the subject's folder name (then no key needs computing)."""
        if not delimiter or self._subject_relation(i, prefix) != "all":
            return None
        sp = self.subject_prefix(i)
        d = sp.find(delimiter, len(prefix))  # a match within sp comes first in each of its keys
        return sp[: d + len(delimiter)] if d >= 0 else None

    def _starts(self, pos: Pos, prefix: str) -> bool:
        """Whether the key at ``pos`` (not END) starts with ``prefix``."""
        i, j = pos
        rel = self._subject_relation(i, prefix)
        if rel != "some":
            return rel == "all"
        return self.keys(i)[j].startswith(prefix)

    def list_page(self, prefix: str, delimiter: str, start: Pos, max_keys: int) -> Page:
        """Up to ``max_keys`` keys and common prefixes under ``prefix``, from ``start`` on."""
        lo = self.seek(prefix, True)
        pos = END if END in (start, lo) else max(start, lo)
        contents: list[str] = []
        prefixes: list[str] = []
        last: tuple[str, str] | None = None
        room = max_keys
        while pos != END and room > 0:
            i, j = pos
            cp = self._rollup_of_subject(i, prefix, delimiter) if j == 0 else None
            if cp is None:
                relation = self._subject_relation(i, prefix)
                if relation == "none":
                    break
                ks = self.keys(i)
                n = len(ks)
                while j < n and room > 0:
                    key = ks[j]
                    if relation == "some" and not key.startswith(prefix):
                        return Page(contents, prefixes, False, last)  # keys under a prefix are contiguous
                    d = key.find(delimiter, len(prefix)) if delimiter else -1
                    if d >= 0:
                        cp = key[: d + len(delimiter)]
                        break
                    contents.append(key)
                    last = ("k", key)
                    room -= 1
                    j += 1
                if cp is None:
                    pos = (i, j) if j < n else ((i + 1, 0) if i + 1 < self.subjects else END)
                    continue
            prefixes.append(cp)
            last = ("p", cp)
            room -= 1
            pos = self.seek(_successor(cp), True)
        truncated = pos != END and max_keys > 0 and self._starts(pos, prefix)
        return Page(contents, prefixes, truncated, last)


# ------------------------------------------------------------------------------ statistics


class Stats:
    """Request counters (thread-safe); ``*_in_flight_max``: the most requests of a kind being
    answered at once (from arrival, delay included, to the last byte written)."""

    KINDS = ("list", "get", "head", "get_manifest", "head_bucket", "location", "list_buckets", "other", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.counts = dict.fromkeys(self.KINDS, 0)
            self.bytes_sent = 0
            self.first: dict[str, float | None] = {"list": None, "get": None, "get_manifest": None}
            self.in_flight = {"list": 0, "get": 0}
            self.in_flight_max = {"list": 0, "get": 0}
            self.since = time.time()

    def begin(self, kind: str) -> None:
        now = time.time()
        with self._lock:
            self.counts[kind] += 1
            if kind in self.first and self.first[kind] is None:
                self.first[kind] = now
            if kind in self.in_flight:
                self.in_flight[kind] += 1
                self.in_flight_max[kind] = max(self.in_flight_max[kind], self.in_flight[kind])

    def end(self, kind: str, nbytes: int, error: bool) -> None:
        with self._lock:
            if kind in self.in_flight:
                self.in_flight[kind] -= 1
            self.bytes_sent += nbytes
            if error:
                self.counts["errors"] += 1

    def count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.counts,
                "bytes_sent": self.bytes_sent,
                "first_list": self.first["list"],
                "first_get": self.first["get"],
                "first_get_manifest": self.first["get_manifest"],
                "lists_in_flight": self.in_flight["list"],
                "gets_in_flight": self.in_flight["get"],
                "lists_in_flight_max": self.in_flight_max["list"],
                "gets_in_flight_max": self.in_flight_max["get"],
                "since": self.since,
                "now": time.time(),
            }


# ------------------------------------------------------------------------------ S3 answers

Answer = tuple[int, dict[str, str], bytes]


def _max_keys(q: dict[str, str]) -> int:
    raw = q.get("max-keys", str(MAX_KEYS))
    try:
        n = int(raw)
    except ValueError as exc:
        raise S3Error(400, "InvalidArgument", "Provided max-keys not an integer or within integer range") from exc
    if n < 0:
        raise S3Error(400, "InvalidArgument", "max-keys cannot be negative")
    return min(n, MAX_KEYS)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` -> (first, last) inclusive; None: ignore the header (not a
    single byte range); S3Error 416 when unsatisfiable."""
    spec = header.strip()
    if not spec.startswith("bytes=") or "," in spec:
        return None
    a, sep, b = spec[6:].strip().partition("-")
    if not sep or not (a.isdigit() or b.isdigit()) or (a and not a.isdigit()) or (b and not b.isdigit()):
        return None
    if not a:
        n = int(b)
        if n == 0 or size == 0:
            raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
        return max(0, size - n), size - 1
    first, last = int(a), (int(b) if b else size - 1)
    if b and last < first:
        return None
    if first >= size:
        raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
    return first, min(last, size - 1)


class Service:
    """The S3 logic, independent of HTTP: ``handle`` returns ``(status, headers, body)``."""

    def __init__(self, rel: Release, page_delay: float = 0.0, get_delay: float = 0.0) -> None:
        self.rel = rel
        self.page_delay = page_delay
        self.get_delay = get_delay
        self.stats = Stats()

    @staticmethod
    def kind_of(method: str, target: str) -> str:
        """How a request is counted: ``list``, ``get``, ``get_manifest``, ``head``, ..."""
        if method not in ("GET", "HEAD"):
            return "other"
        parts = urlsplit(target)
        segs = unquote(parts.path).lstrip("/").split("/", 1)
        if not segs[0]:
            return "list_buckets"
        if len(segs) > 1 and segs[1]:
            if method == "HEAD":
                return "head"
            return "get_manifest" if MANIFEST_DIR in f"/{segs[1]}" else "get"
        if method == "HEAD":
            return "head_bucket"
        q = parse_qs(parts.query, keep_blank_values=True)
        if "location" in q:
            return "location"
        return "list" if q.get("list-type") == ["2"] else "other"

    def handle(self, method: str, target: str, headers: dict[str, str] | None = None) -> Answer:
        parts = urlsplit(target)
        path = unquote(parts.path)
        q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        bucket, _, key = path.lstrip("/").partition("/")
        if method not in ("GET", "HEAD"):
            raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource")
        if not bucket:
            return 200, {}, self.list_buckets()
        if bucket != self.rel.bucket:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", f"/{bucket}")
        if key:
            return self.get_object(method, key, headers or {})
        if method == "HEAD":
            return 200, {}, b""
        if "location" in q:
            return 200, {}, f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{S3_NS}"/>'.encode()
        if q.get("list-type") == "2":
            return 200, {"Content-Type": "application/xml"}, self.list_v2(q)
        raise S3Error(501, "NotImplemented", "only ListObjectsV2 (list-type=2) is implemented here")

    def list_buckets(self) -> bytes:
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="{S3_NS}">'
            "<Owner><ID>hcpsync-bench</ID><DisplayName>hcpsync-bench</DisplayName></Owner>"
            f"<Buckets><Bucket>{_el('Name', self.rel.bucket)}{_el('CreationDate', LAST_MODIFIED_XML)}</Bucket>"
            "</Buckets></ListAllMyBucketsResult>"
        ).encode()

    def get_object(self, method: str, key: str, headers: dict[str, str]) -> Answer:
        rel = self.rel
        if not rel.find(key):
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", f"/{rel.bucket}/{key}")
        data = rel.content(key)
        etag = etag_of(data)
        want = headers.get("if-match")
        if want is not None and want.strip() not in (etag, "*"):
            raise S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
        out = {"ETag": etag, "Last-Modified": LAST_MODIFIED_HTTP, "Accept-Ranges": "bytes",
               "Content-Type": "application/octet-stream"}
        status = 200
        rng = parse_range(headers["range"], len(data)) if "range" in headers and data else None
        if rng is not None:
            first, last = rng
            out["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            data, status = data[first : last + 1], 206
        if method == "GET" and self.get_delay:
            time.sleep(self.get_delay)
        return status, out, data

    def list_v2(self, q: dict[str, str]) -> bytes:
        rel = self.rel
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        start_after = q.get("start-after", "")
        token = q.get("continuation-token")
        max_keys = _max_keys(q)
        et = q.get("encoding-type", "")
        if et not in ("", "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
        start = rel.seek(start_after, False) if start_after else (0, 0)
        if token is not None:
            kind, value = decode_token(token)
            resume = rel.after_marker(kind, value)
            start = END if END in (start, resume) else max(start, resume)
        if self.page_delay:
            time.sleep(self.page_delay)
        page = rel.list_page(prefix, delimiter, start, max_keys)

        def e(s: str) -> str:  # url-encoded text needs no XML escaping
            return quote(s, safe="/") if et else escape(s, _XML_QUOTE)

        head = v2_head(rel.bucket, q, max_keys, len(page.contents) + len(page.prefixes), page.truncated,
                       encode_token(*page.last) if page.last is not None else None)
        body = []
        for k in page.contents:
            etag, size = rel.meta(k)
            body.append(f"<Contents><Key>{e(k)}</Key><LastModified>{LAST_MODIFIED_XML}</LastModified>"
                        f"<ETag>{escape(etag, _XML_QUOTE)}</ETag><Size>{size}</Size>"
                        "<StorageClass>STANDARD</StorageClass></Contents>")
        body += [f"<CommonPrefixes><Prefix>{e(cp)}</Prefix></CommonPrefixes>" for cp in page.prefixes]
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{S3_NS}">'
            f"{''.join(head)}{''.join(body)}</ListBucketResult>"
        ).encode()


# ------------------------------------------------------------------------------ HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes (see s3listing.Handler)
    server_version = "hcpsync-bench-synthrelease"
    sys_version = ""
    service: Service  # set on the subclass made by make_server()
    verbose = False

    def _send(self, status: int, headers: dict[str, str], body: bytes, rid: str) -> None:
        self.send_response(status)
        self.send_header("x-amz-request-id", rid)
        self.send_header("x-amz-bucket-region", REGION)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _respond(self) -> None:
        rid = uuid.uuid4().hex[:16].upper()
        svc = self.service
        kind = svc.kind_of(self.command, self.path)
        svc.stats.begin(kind)
        status, body = 500, b""
        try:
            try:
                status, headers, body = svc.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            except S3Error as err:
                status, headers, body = err.status, {"Content-Type": "application/xml"}, error_xml(err, rid)
            self._send(status, headers, body, rid)
        finally:
            svc.stats.end(kind, len(body) if self.command != "HEAD" else 0, status >= 400)

    def _control(self) -> bool:
        """``GET /__stats`` and ``POST /__reset``: True when this request was one of them."""
        path = self.path.split("?", 1)[0]
        if path == "/__stats" and self.command == "GET":
            body = json.dumps(self.service.stats.snapshot()).encode()
            self._send(200, {"Content-Type": "application/json"}, body, "STATS")
            return True
        if path == "/__reset" and self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            self.service.stats.reset()
            self._send(200, {"Content-Type": "application/json"}, b"{}", "RESET")
            return True
        return False

    def do_GET(self) -> None:
        if not self._control():
            self._respond()

    def do_HEAD(self) -> None:
        self._respond()

    def do_POST(self) -> None:
        if not self._control():
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            self._respond()

    def do_PUT(self) -> None:
        self.do_POST()

    def do_DELETE(self) -> None:
        self._respond()

    log_message = ListingHandler.log_message


class Server(ListingServer):
    request_queue_size = 1024  # 64+ clients connecting at once


def make_server(service: Service, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> Server:
    handler = type("BoundHandler", (Handler,), {"service": service, "verbose": verbose})
    return Server((host, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synthrelease", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group(required=True)
    size.add_argument("--subjects", type=int, help="this many synthetic subjects (200000, 200001, ...)")
    size.add_argument("--objects", type=int, help="exactly this many objects (the last subject cut)")
    ap.add_argument("--bucket", default=BUCKET)
    ap.add_argument("--release", default=RELEASE, help=f"release prefix (default {RELEASE})")
    ap.add_argument("--sizes", choices=SIZES, default="zero", help="zero: empty objects; tiny: 1..64 bytes")
    ap.add_argument("--page-delay", type=float, default=0.0, help="seconds each listing sleeps before answering")
    ap.add_argument("--get-delay", type=float, default=0.0, help="seconds each object GET sleeps before answering")
    ap.add_argument("--keys-file", type=Path, default=None, help="key list holding the template subject 100206")
    ap.add_argument("--cache-subjects", type=int, default=4096, help="subjects whose sort order is cached")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    try:
        rel = Release(default_template(args.keys_file), subjects=args.subjects, objects=args.objects,
                      bucket=args.bucket, release=args.release, sizes=args.sizes, cache_subjects=args.cache_subjects)
    except (ValueError, OSError) as exc:
        ap.error(str(exc))
    server = make_server(Service(rel, args.page_delay, args.get_delay), port=args.port, verbose=args.verbose)
    port = server.server_address[1]
    print(f"synthetic release on 127.0.0.1:{port}: s3://{rel.bucket}/{rel.release} {rel.subjects} subjects, "
          f"{rel.total} objects ({args.sizes}), page delay {args.page_delay} s", file=sys.stderr)
    return serve(server, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
