"""A fault-injecting HTTP reverse proxy for S3-style (path addressed) endpoints, for tests.

``FaultProxy`` sits in front of an S3 API (moto's server in the tests) and forwards every request
unchanged -- method, raw path and query, headers (``Host`` as sent, ``Authorization``, ``Range``...)
and body -- streaming the response back chunk by chunk with its status and headers untouched
(``Content-Length``, ``Content-Range``, ``ETag``; no decompression, no re-encoding).  It runs its
own asyncio event loop in a daemon thread, so synchronous test code and subprocesses can use it::

    with FaultProxy(moto_url) as proxy:          # or proxy.start() ... proxy.stop()
        proxy.add_rule(Rule("slowdown", probability=0.2, seed=7))
        proxy.add_rule(Rule("reset", key_contains="big", after_bytes=65536, times=1))
        run_the_downloader(endpoint_url=proxy.url)
        assert proxy.counts["get"] >= 10 and proxy.faults["reset"] == 1

Requests are classified (path-style ``/<bucket>/<key...>``) as ``list``, ``get``, ``head``,
``put`` or ``other``; rules select requests by kind and key substring and inject one of the
faults in :data:`FAULTS` (see :class:`Rule`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import hashlib
import random
import re
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, get_args
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

RequestKind = Literal["list", "get", "head", "put", "other"]
FaultKind = Literal[
    "slowdown", "internal", "reset", "short", "stall", "wrong_range", "mutate", "list_fail", "delay", "denied",
    "list_loop", "list_no_token", "fake_etag", "chunked", "gzip", "weak_etag", "redirect", "drip", "hold",
    "corrupt",
]
KINDS: tuple[str, ...] = get_args(RequestKind)
FAULTS: tuple[str, ...] = get_args(FaultKind)

#: (method, kind, key, Range header) for every request the proxy received.
LogEntry = tuple[str, str, str, str | None]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Query parameters of a bucket-level GET that still make it a listing (ListObjects / V2).
_LIST_PARAMS = frozenset(
    {
        "list-type", "prefix", "delimiter", "marker", "max-keys", "continuation-token",
        "encoding-type", "start-after", "fetch-owner", "x-id",
    }
)
# Query parameters that turn a GET of a key into some other operation than GetObject.
_OBJECT_SUBRESOURCES = frozenset(
    {"acl", "tagging", "torrent", "uploadid", "attributes", "retention", "legal-hold", "restore"}
)
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$")
_CHUNK = 256 * 1024
#: faults on listings only (their default kinds)
_LIST_FAULTS = frozenset({"list_fail", "list_loop", "list_no_token", "redirect", "hold"})
#: faults that buffer the whole upstream body and send a rewritten one
_BODY_FAULTS = frozenset({"list_loop", "list_no_token", "fake_etag", "gzip"})
#: the continuation token a ``list_loop`` listing always answers
LOOP_TOKEN = "faultproxy-loop"
_TRUNCATED_RE = re.compile(r"<IsTruncated>\s*\w*\s*</IsTruncated>")
_NEXT_TOKEN_RE = re.compile(r"<NextContinuationToken>[^<]*</NextContinuationToken>")
_ETAG_XML_RE = re.compile(r"<ETag>([^<]*)</ETag>")


def fake_etag(etag: str) -> str:
    """A 32-hex ETag that is not the object's MD5 (as SSE-KMS/SSE-C objects have), from its real one."""
    real = etag.replace("&quot;", "").replace("&#34;", "").strip().strip('"')
    return hashlib.md5(b"faultproxy:" + real.encode()).hexdigest()


def classify(method: str, path: str, query: str) -> tuple[RequestKind, str, str]:
    """Return ``(kind, bucket, key)`` of a path-style S3 request (``path`` already URL-decoded)."""
    bucket, _, key = path.lstrip("/").partition("/")
    params = {k.lower() for k, _ in parse_qsl(query, keep_blank_values=True)}
    method = method.upper()
    if method == "HEAD":
        return "head", bucket, key
    if method == "PUT":
        return "put", bucket, key
    if method != "GET" or not bucket:
        return "other", bucket, key
    if not key:
        if "list-type" in params or params <= _LIST_PARAMS:
            return "list", bucket, key
        return "other", bucket, key
    if params & _OBJECT_SUBRESOURCES:
        return "other", bucket, key
    return "get", bucket, key


def s3_error_body(code: str, message: str) -> bytes:
    """S3's XML error document."""
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()


@dataclass
class Rule:
    """One fault-injection rule.

    A request *matches* when its kind is in ``kinds`` (default ``("list",)`` for ``list_fail``,
    ``("get",)`` for every other fault), its key (a listing's prefix) contains ``key_contains`` (if set) and the
    fault applies to it (``wrong_range`` needs a ``Range: bytes=a-[b]`` header).  A matching
    request makes the rule *fire* when more than ``after_requests`` matching requests were seen,
    the rule fired fewer than ``times`` times, and a roll of the rule's own
    ``random.Random(seed)`` is below ``probability``.  The first rule (in insertion order) that
    fires is applied; the others are not consulted (nor their random generators advanced).

    Faults:

    * ``slowdown`` -- 503 ``SlowDown`` XML error, upstream not contacted.
    * ``internal`` -- 500 ``InternalError`` XML error, upstream not contacted.
    * ``list_fail`` -- same as ``internal``, meant for ``list`` requests.
    * ``denied`` -- 403 ``AccessDenied`` XML error (a bucket policy's Deny), upstream not contacted.
    * ``reset`` -- forward, send headers and ``after_bytes`` (default 0) body bytes, then abort
      the TCP connection with an RST.
    * ``short`` -- forward, send headers (true ``Content-Length``) and ``after_bytes`` (default
      half the body) bytes, then close the connection cleanly.
    * ``stall`` -- forward, send headers and ``after_bytes`` (default 0) bytes, then send nothing
      for ``stall_seconds`` (ends early when the proxy stops) and abort.
    * ``wrong_range`` -- rewrite ``Range: bytes=a-b`` to ``bytes=(a+shift)-b`` before forwarding.
    * ``mutate`` -- overwrite the object upstream with ``new_body`` (plain PUT), then forward.
    * ``delay`` -- sleep ``delay_seconds`` before forwarding (first-byte latency).
    * ``list_loop`` -- a listing that never ends: the request's ``continuation-token`` is dropped
      (upstream sends the first page again) and the answer says ``IsTruncated`` true with the
      continuation token :data:`LOOP_TOKEN`, every time.
    * ``list_no_token`` -- the listing answer says ``IsTruncated`` true but has no
      ``NextContinuationToken``.
    * ``fake_etag`` -- every ETag in the answer (listing XML, GET/HEAD header) replaced by
      :func:`fake_etag`, a 32-hex value that is not the MD5, plus ``add_headers`` (e.g.
      ``x-amz-server-side-encryption: aws:kms``); the request's ``If-Match`` is dropped (upstream
      does not know the fake ETags).  Default kinds: list, get, head.
    * ``chunked`` -- the answer without its ``Content-Length`` (sent with chunked encoding).
    * ``gzip`` -- the body gzip-compressed, with ``Content-Encoding: gzip`` and the compressed length.
    * ``weak_etag`` -- the answer's ``ETag`` made weak: ``W/"..."``.
    * ``redirect`` -- ``redirect_status`` (301) with ``Location: location`` (``{path}`` is replaced
      by the request's raw path and query), upstream not contacted.  Default kinds: list.
    * ``drip`` -- forward, sending the body at ``drip_rate`` bytes/s (ends early when the proxy stops).
    * ``hold`` -- wait until the proxy has received a GET (then forward), or ``stall_seconds``
      passed (then forward, counted in ``faults['hold_timeout']``).  Default kinds: list.
    * ``corrupt`` -- forward, with one byte of the body flipped (the first byte of its first
      chunk): same length, same headers, other bytes, as a corruption in transit.
    """

    fault: FaultKind
    kinds: tuple[str, ...] | None = None
    key_contains: str | None = None
    probability: float = 1.0
    times: int | None = None
    seed: int | str | None = 0
    after_requests: int = 0
    after_bytes: int | None = None
    stall_seconds: float = 60.0
    shift: int = 1
    new_body: bytes | None = None
    delay_seconds: float = 0.0
    add_headers: dict[str, str] = field(default_factory=dict)
    redirect_status: int = 301
    location: str = "http://127.0.0.1:9{path}"
    drip_rate: float = 1.0
    #: Matching requests seen so far (runtime state).
    seen: int = field(default=0, init=False)
    #: Times this rule fired so far (runtime state).
    fired: int = field(default=0, init=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")
        if isinstance(self.kinds, str):
            self.kinds = (self.kinds,)
        if self.kinds is None:
            self.kinds = _default_kinds(self.fault)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown request kinds {sorted(unknown)}; expected some of {KINDS}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.fault == "mutate" and self.new_body is None:
            raise ValueError("the 'mutate' fault needs new_body")
        if self.drip_rate <= 0:
            raise ValueError("drip_rate must be positive")
        self._rng = random.Random(self.seed)

    def applies_to(self, kind: str, key: str, range_header: str | None) -> bool:
        assert self.kinds is not None
        if kind not in self.kinds:
            return False
        if self.key_contains is not None and self.key_contains not in key:
            return False
        return not (self.fault == "wrong_range" and (range_header is None or not _RANGE_RE.match(range_header)))

    def roll(self) -> bool:
        """Count one matching request and decide whether the rule fires for it."""
        self.seen += 1
        if self.seen <= self.after_requests:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


def _default_kinds(fault: str) -> tuple[str, ...]:
    if fault in _LIST_FAULTS:
        return ("list",)
    return ("list", "get", "head") if fault == "fake_etag" else ("get",)


class FaultProxy:
    """Fault-injecting reverse proxy running on its own event loop in a daemon thread."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", shutdown_timeout: float = 2.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        self.url = ""
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._faults: collections.Counter[str] = collections.Counter()
        self._bytes_sent = 0
        self._log: list[LogEntry] = []
        self._peers: set[object] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None
        self._got_get: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start serving; return the proxy's base URL ``http://127.0.0.1:<port>``."""
        if self._thread is not None:
            return self.url
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"FaultProxy({self.upstream})", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            port = asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://{self.host}:{port}"
        return self.url

    def stop(self) -> None:
        """Stop serving: stalled/delayed requests end at once, connections are closed."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if not loop.is_closed():
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(
                    timeout=self.shutdown_timeout * 2 + 10
                )
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _astart(self) -> int:
        self._got_get = asyncio.Event()
        self._stopping = asyncio.Event()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            read_bufsize=_CHUNK,
        )
        server = web.Server(self._handle, access_log=None, auto_decompress=False)
        self._runner = web.ServerRunner(server, shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=512)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    async def _astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ----------------------------------------------------------------- rules and counters
    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._faults.clear()
            self._bytes_sent = 0
            self._log.clear()
            self._peers.clear()

    @property
    def counts(self) -> dict[str, int]:
        """Requests received, by kind (``list``, ``get``, ``head``, ``put``, ``other``)."""
        with self._lock:
            return dict(self._counts)

    @property
    def bytes_sent(self) -> int:
        """Object bytes (response bodies from upstream) sent to clients for ``get`` requests."""
        with self._lock:
            return self._bytes_sent

    @property
    def faults(self) -> collections.Counter[str]:
        """Faults injected, by fault kind."""
        with self._lock:
            return collections.Counter(self._faults)

    @property
    def requests_log(self) -> list[LogEntry]:
        """``(method, kind, key, Range header or None)`` of every request, in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def connections(self) -> int:
        """Distinct client TCP connections that sent at least one request (keep-alive check)."""
        with self._lock:
            return len(self._peers)

    def _pick_rule(self, kind: str, key: str, range_header: str | None) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.applies_to(kind, key, range_header) and rule.roll():
                    self._faults[rule.fault] += 1
                    return rule
        return None

    def _add_bytes(self, n: int) -> None:
        with self._lock:
            self._bytes_sent += n

    # ----------------------------------------------------------------- request handling
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        kind, _bucket, key = classify(request.method, request.path, request.query_string)
        range_header = request.headers.get("Range")
        with self._lock:
            self._counts[kind] += 1
            self._log.append((request.method, kind, key, range_header))
            transport = request.transport
            if transport is not None:
                self._peers.add((id(transport), transport.get_extra_info("peername")))
        if kind == "get" and self._got_get is not None:
            self._got_get.set()
        # a listing is matched by its prefix (``key_contains``)
        rule = self._pick_rule(kind, request.query.get("prefix", "") if kind == "list" else key, range_header)
        fault = rule.fault if rule is not None else None
        if rule is not None and fault == "hold":
            await self._hold(rule.stall_seconds)

        if fault == "slowdown":
            return self._error(503, "SlowDown", "Please reduce your request rate.")
        if fault in ("internal", "list_fail"):
            return self._error(500, "InternalError", "We encountered an internal error. Please try again.")
        if fault == "denied":
            return self._error(403, "AccessDenied", "Access Denied")
        if rule is not None and fault == "redirect":
            location = rule.location.replace("{path}", request.raw_path)
            return web.Response(status=rule.redirect_status, headers={"Location": location})
        if rule is not None and fault == "delay" and await self._sleep(rule.delay_seconds):
            _abort(request)
            return web.StreamResponse()
        if rule is not None and fault == "mutate":
            await self._mutate(request, rule)
        return await self._forward(request, kind, rule)

    async def _hold(self, seconds: float) -> None:
        """Wait for the first GET (``hold``), at most ``seconds``."""
        if self._got_get is None:
            self._got_get = asyncio.Event()
        try:
            await asyncio.wait_for(self._got_get.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            with self._lock:
                self._faults["hold_timeout"] += 1

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.Response(status=status, body=s3_error_body(code, message), content_type="application/xml")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True if the proxy is stopping."""
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    def _upstream_url(self, raw_path: str) -> URL:
        return URL(self.upstream + raw_path, encoded=True)

    async def _mutate(self, request: web.BaseRequest, rule: Rule) -> None:
        assert self._session is not None and rule.new_body is not None
        path = request.raw_path.partition("?")[0]
        headers = {
            "Authorization": request.headers.get(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAFAULTPROXY000000/20240101/us-east-1/s3/aws4_request, "
                "SignedHeaders=host, Signature=0",
            ),
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "Content-Type": "application/octet-stream",
        }
        async with self._session.put(self._upstream_url(path), data=rule.new_body, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"mutate: upstream PUT {path} -> {resp.status}: {body[:300]!r}")

    def _request_headers(self, request: web.BaseRequest, rule: Rule | None) -> CIMultiDict[str]:
        connection_tokens = {
            t.strip().lower() for t in request.headers.get("Connection", "").split(",") if t.strip()
        }
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            low = name.lower()
            if low in _HOP_BY_HOP or low in connection_tokens or low == "expect":
                continue
            headers.add(name, value)
        if rule is not None and rule.fault == "wrong_range":
            m = _RANGE_RE.match(request.headers.get("Range", ""))
            assert m is not None
            headers["Range"] = f"bytes={int(m.group(1)) + rule.shift}-{m.group(2)}"
        if rule is not None and rule.fault == "fake_etag":
            headers.popall("If-Match", None)
        return headers

    @staticmethod
    def _upstream_path(request: web.BaseRequest, rule: Rule | None) -> str:
        """The raw path and query to forward (``list_loop`` drops the continuation token)."""
        if rule is None or rule.fault != "list_loop":
            return request.raw_path
        path, _, query = request.raw_path.partition("?")
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() != "continuation-token"]
        return f"{path}?{urlencode(kept)}" if kept else path

    async def _send_rewritten(self, request: web.BaseRequest, resp: web.StreamResponse,
                              upstream: aiohttp.ClientResponse, rule: Rule, count: bool) -> web.StreamResponse:
        """Send the whole upstream body, rewritten by ``rule`` (:func:`_rewrite_body`)."""
        body = _rewrite_body(await upstream.read(), rule)
        resp.headers["Content-Length"] = str(len(body))
        if rule.fault == "gzip":
            resp.headers["Content-Encoding"] = "gzip"
        await resp.prepare(request)
        if count:
            self._add_bytes(len(body))
        await resp.write(body)
        await resp.write_eof()
        return resp

    async def _drip(self, resp: web.StreamResponse, chunk: bytes, rate: float) -> bool:
        """Write ``chunk`` at ``rate`` bytes/s; False if the proxy is stopping."""
        interval = max(0.1, 1 / rate)
        piece = max(1, round(rate * interval))
        for i in range(0, len(chunk), piece):
            await resp.write(chunk[i:i + piece])
            if await self._sleep(interval):
                return False
        return True

    async def _forward(self, request: web.BaseRequest, kind: str, rule: Rule | None) -> web.StreamResponse:
        assert self._session is not None
        headers = self._request_headers(request, rule)
        data = None
        if request.body_exists:
            if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
            data = request.content
        try:
            upstream = await self._session.request(
                request.method,
                self._upstream_url(self._upstream_path(request, rule)),
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError) as exc:
            return self._error(502, "BadGateway", f"faultproxy: upstream unreachable: {exc}")

        async with upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            connection_tokens = {
                t.strip().lower() for t in upstream.headers.get("Connection", "").split(",") if t.strip()
            }
            for name, value in upstream.headers.items():
                low = name.lower()
                if low not in _HOP_BY_HOP and low not in connection_tokens:
                    resp.headers.add(name, value)
            fault = rule.fault if rule is not None else None
            count = kind == "get"
            if rule is not None:
                _rewrite_headers(resp.headers, rule)
                if _rewrites_body(rule.fault, kind, request.method) and upstream.status < 300:
                    try:
                        return await self._send_rewritten(request, resp, upstream, rule, count)
                    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                        _abort(request, rst=True)
                        return resp
            limit: int | None = None
            if rule is not None and fault in ("reset", "short", "stall"):
                limit = rule.after_bytes
                if limit is None:
                    length = upstream.content_length
                    limit = length // 2 if fault == "short" and length is not None else 0
            try:
                writer = await resp.prepare(request)
                if limit is None:
                    flip = fault == "corrupt"
                    async for chunk in upstream.content.iter_any():
                        if count:  # counted before the write so a client never sees uncounted bytes
                            self._add_bytes(len(chunk))
                        if flip and chunk:
                            chunk, flip = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                        if rule is None or fault != "drip":
                            await resp.write(chunk)
                        elif not await self._drip(resp, chunk, rule.drip_rate):
                            _abort(request, rst=True)
                            return resp
                    await resp.write_eof()
                    return resp
                remaining = limit
                while remaining > 0:
                    chunk = await upstream.content.read(min(remaining, _CHUNK))
                    if not chunk:
                        break
                    if count:
                        self._add_bytes(len(chunk))
                    await resp.write(chunk)
                    remaining -= len(chunk)
                if writer is not None:
                    writer.send_headers()  # headers go out even when no body byte is sent
            except (aiohttp.ClientError, asyncio.TimeoutError):
                # Upstream failed mid-body: make sure the client sees an error, not a short body.
                _abort(request, rst=True)
                return resp
            except ConnectionError:
                return resp  # the client went away

        assert rule is not None
        if fault == "short":
            await _flush(request)
            if request.transport is not None:
                request.transport.close()
        elif fault == "reset":
            await _flush(request)
            _abort(request, rst=True)
        else:  # stall
            await _flush(request)
            await self._sleep(rule.stall_seconds)
            _abort(request, rst=True)
        return resp


def _rewrites_body(fault: str, kind: str, method: str) -> bool:
    if method.upper() == "HEAD" or fault not in _BODY_FAULTS:
        return False
    return kind == "list" if fault != "gzip" else True


def _rewrite_headers(headers: CIMultiDict[str], rule: Rule) -> None:
    """The header side of ``fake_etag``, ``weak_etag`` and ``chunked``."""
    etag = headers.get("ETag")
    if rule.fault == "fake_etag":
        if etag is not None:
            headers["ETag"] = f'"{fake_etag(etag)}"'
        headers.update(rule.add_headers)
    elif rule.fault == "weak_etag" and etag is not None:
        headers["ETag"] = f"W/{etag}"
    elif rule.fault == "chunked":
        headers.popall("Content-Length", None)


def _rewrite_body(body: bytes, rule: Rule) -> bytes:
    """The body side of ``gzip``, and of ``fake_etag``, ``list_loop``, ``list_no_token`` on listings."""
    if rule.fault == "gzip":
        return gzip.compress(body)
    text = body.decode()
    if rule.fault == "fake_etag":
        return _ETAG_XML_RE.sub(lambda m: f"<ETag>&quot;{fake_etag(m.group(1))}&quot;</ETag>", text).encode()
    token = f"<NextContinuationToken>{LOOP_TOKEN}</NextContinuationToken>" if rule.fault == "list_loop" else ""
    text = _NEXT_TOKEN_RE.sub("", text)
    return _TRUNCATED_RE.sub(lambda _: "<IsTruncated>true</IsTruncated>" + token, text, count=1).encode()


async def _flush(request: web.BaseRequest, timeout: float = 2.0) -> None:
    """Wait (bounded) until what was written reached the peer: asyncio's buffer, then the kernel's.

    Needed before an RST (``SO_LINGER`` 0), which discards whatever is still queued for sending.
    The kernel part uses Linux's ``TIOCOUTQ``; elsewhere only asyncio's buffer is waited for.
    """
    transport = request.transport
    if transport is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sock = transport.get_extra_info("socket")
    while not transport.is_closing() and loop.time() < deadline:
        if transport.get_write_buffer_size() == 0 and not _kernel_unsent(sock):
            return
        await asyncio.sleep(0.002)


def _kernel_unsent(sock: socket.socket | None) -> int:
    """Bytes still in the socket's send queue (not yet acknowledged), or 0 if unknown."""
    try:
        import fcntl
        import termios
    except ImportError:  # not POSIX
        return 0
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return 0
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    unsent: int = struct.unpack("i", buf)[0]
    return unsent


def _abort(request: web.BaseRequest, rst: bool = False) -> None:
    transport = request.transport
    if transport is None:
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
