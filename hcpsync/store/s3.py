"""The only module that talks to S3.

:class:`S3Storage` wraps one aiobotocore client and exposes the four operations the engine
needs: list a prefix (paginated), HEAD an object, stream a (ranged) GET with its checks,
and fetch a small object whole.  Every botocore, aiohttp and socket exception is translated
here into the :mod:`hcpsync.errors` hierarchy (:func:`translate`).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from botocore import UNSIGNED
from botocore import exceptions as bce

from ..config import TransferConfig
from ..errors import (
    AccessDeniedError,
    BadResponseError,
    CredentialsError,
    EndpointError,
    HcpsyncError,
    NoSuchBucketError,
    NoSuchKeyError,
    ObjectChangedError,
    RangeMismatchError,
    RedirectError,
    ShortReadError,
    StorageError,
    ThrottledError,
    TransientError,
    UsageError,
)
from ..models import ObjectInfo
from .retry import pause, should_retry
from .s3_http import FastGetter, parse_error

CREDENTIALS_HINT = (
    "HCP data needs the AWS keys ConnectomeDB issues: store them with "
    "'aws configure --profile hcp' and pass --profile hcp"
)


@dataclass(frozen=True)
class StorageOptions:
    """Where and how to reach S3.  Credentials come from the standard AWS chain."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    no_sign_request: bool = False
    request_payer: bool = False

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@dataclass
class StorageStats:
    """Request counters, for reports and tests."""

    requests: int = 0
    lists: int = 0
    gets: int = 0
    heads: int = 0
    bytes_received: int = 0
    retries: int = 0
    by_error: dict[str, int] = field(default_factory=dict)


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "BadGateway",
    "GatewayTimeout",
    "503",
    "500",
    "502",
    "504",
}


def _where(bucket: str, key: str | None) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def translate_code(code: str, status: int, message: str, bucket: str, key: str | None = None) -> HcpsyncError:
    """Map an S3 error code and HTTP status to an :class:`HcpsyncError`."""
    where = _where(bucket, key)
    msg = message or code
    if code == "NoSuchBucket":
        return NoSuchBucketError(f"bucket {bucket!r} does not exist")
    if code in ("NoSuchKey", "404") or (status == 404 and key):
        return NoSuchKeyError(f"{where} does not exist (deleted since it was listed?)")
    if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):  # S3 answers 400 for these
        return CredentialsError(
            f"{code} on {where}: the AWS session token (AWS_SESSION_TOKEN) is expired or invalid; "
            f"refresh your temporary credentials. {CREDENTIALS_HINT}"
        )
    if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
        what = "access denied" if code in ("AccessDenied", "403", "") else f"{code}"
        return AccessDeniedError(f"{what} to {where}: {CREDENTIALS_HINT}")
    if code in ("PreconditionFailed", "412") or status == 412:
        return ObjectChangedError(f"{where} changed on the server during the transfer (ETag no longer matches)")
    if code == "InvalidRange" or status == 416:
        return ObjectChangedError(f"{where} is shorter than planned (invalid range): it changed on the server")
    if code in _THROTTLE_CODES or (status == 503 and code in ("", "503")):
        return ThrottledError(f"throttled by S3 ({code or status}) on {where}")
    if code in _TRANSIENT_CODES or status >= 500:
        return TransientError(f"server error {code or status} on {where}: {msg}")
    return StorageError(f"{code or status} on {where}: {msg}")


_REDIRECTS = (301, 302, 303, 307, 308)


def redirect_error(status: int, headers: Any, bucket: str, key: str | None = None) -> RedirectError:
    """A 3xx answer, with where it points (the Location without its query) and what to do."""
    location = str(headers.get("location") or headers.get("Location") or "").partition("?")[0]
    region = headers.get("x-amz-bucket-region")
    fix = f"--region {region}" if region else "the bucket's --region (on AWS)"
    return RedirectError(
        f"the S3 endpoint answered {status} redirect for {_where(bucket, key)}"
        f"{f' to {location}' if location else ''}: the bucket is served by another endpoint; "
        f"pass that endpoint with --endpoint-url, or {fix}"
    )


def translate(exc: BaseException, bucket: str, key: str | None = None) -> HcpsyncError:
    """Turn any S3/transport exception into an :class:`HcpsyncError` with a one-line message."""
    if isinstance(exc, HcpsyncError):
        return exc
    where = _where(bucket, key)
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(err.get("Code", "")) or str(meta.get("HTTPStatusCode", ""))
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        if status in _REDIRECTS:
            return redirect_error(status, meta.get("HTTPHeaders", {}) or {}, bucket, key)
        return translate_code(code, status, str(err.get("Message", "")), bucket, key)
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return CredentialsError(f"no AWS credentials found. {CREDENTIALS_HINT} (or --no-sign-request for public data)")
    if isinstance(exc, bce.ProfileNotFound):
        return CredentialsError(f"{exc}. {CREDENTIALS_HINT}")
    if isinstance(exc, bce.NoRegionError):
        return CredentialsError("no AWS region configured: pass --region us-east-1")
    if isinstance(exc, bce.EndpointConnectionError | aiohttp.ClientConnectorError | ConnectionRefusedError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url") if isinstance(exc, bce.BotoCoreError) else None
        return EndpointError(f"cannot connect to the S3 endpoint{f' {url}' if url else ''}: connection refused or unreachable")
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectTimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TransientError(f"timed out on {where}")
    if isinstance(exc, bce.IncompleteReadError | aiohttp.ClientPayloadError):
        return ShortReadError(f"connection closed before the whole body of {where} arrived")
    if isinstance(
        exc,
        bce.ResponseStreamingError
        | bce.ConnectionClosedError
        | bce.HTTPClientError
        | aiohttp.ClientError
        | ConnectionError
        | EOFError,
    ):
        return TransientError(f"connection error on {where}: {type(exc).__name__}")
    if isinstance(exc, bce.BotoCoreError):
        return StorageError(f"{type(exc).__name__} on {where}: {exc}")
    if isinstance(exc, OSError):
        return TransientError(f"network error on {where}: {exc.strerror or type(exc).__name__}")
    return StorageError(f"unexpected {type(exc).__name__} on {where}")


class _SpeedFloor:
    """curl's ``--speed-limit/--speed-time``: fails a body that arrives under ``limit`` bytes/s
    over ``period`` seconds of waiting on the network (time the caller spends elsewhere, on a
    bandwidth cap say, is not counted).  ``limit`` 0: never fails."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._waited = 0.0
        self._bytes = 0

    def add(self, waited: float, nbytes: int, where: str) -> None:
        if not self.limit:
            return
        self._waited += waited
        self._bytes += nbytes
        if self._waited < self.period:
            return
        rate = self._bytes / self._waited
        self._waited, self._bytes = 0.0, 0
        if rate < self.limit:
            raise TransientError(
                f"{where} arrives at {rate:.0f} B/s, under the low-speed limit of {self.limit} B/s "
                f"for {self.period:g} s (--low-speed-limit/--low-speed-time)"
            )


class Body:
    """A GET response body being streamed.  Iterate :meth:`chunks`; counts what it yields.

    ``etag_is_md5`` is False when the object is encrypted with SSE-KMS or SSE-C: S3 documents
    that such an object's ETag is not the MD5 of its bytes, even when it has 32 hex digits.
    """

    def __init__(self, raw: Any, bucket: str, key: str, length: int, stats: StorageStats,
                 floor: _SpeedFloor | None = None) -> None:
        self._raw = raw
        self._bucket = bucket
        self._key = key
        self.length = length
        self.received = 0
        self._stats = stats
        self._floor = floor or _SpeedFloor(0, 1.0)
        self.etag_is_md5 = not _encrypted(getattr(raw, "headers", {}))

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        content = self._raw.content if hasattr(self._raw, "content") else None
        read = content.read if content is not None else self._raw.read
        where = f"s3://{self._bucket}/{self._key}"
        try:
            while True:
                t0 = time.monotonic()
                data = await read(size)
                self._floor.add(time.monotonic() - t0, len(data), where)
                if not data:
                    break
                self.received += len(data)
                self._stats.bytes_received += len(data)
                if self.received > self.length:
                    raise RangeMismatchError(f"{where}: body longer than its headers said")
                yield data
        except HcpsyncError:
            raise
        except Exception as exc:
            raise translate(exc, self._bucket, self._key) from exc
        if self.received < self.length:
            raise ShortReadError(f"connection closed after {self.received} of {self.length} bytes of {where}")


def _encrypted(headers: Any) -> bool:
    """Whether response headers say SSE-KMS (``aws:kms``, ``aws:kms:dsse``) or SSE-C."""
    sse = str(headers.get("x-amz-server-side-encryption", "")).lower()
    return sse.startswith("aws:kms") or "x-amz-server-side-encryption-customer-algorithm" in headers


class _NoRedirects:
    """An aiohttp session whose requests never follow redirects (see :class:`_UnredirectedHTTP`)."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.request(*args, **{**kwargs, "allow_redirects": False})


class _UnredirectedHTTP(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, minus aiohttp's own redirect following.

    aiobotocore sends through ``aiohttp.ClientSession.request`` with aiohttp's default
    ``allow_redirects=True``: a 301/307 with a Location is followed to the other host (minus the
    Authorization header), and botocore only sees that host's answer ("NoSuchBucket", say).
    Unfollowed, the 3xx reaches botocore's S3 region redirector (which re-signs AWS's own
    cross-region redirects) and then :func:`translate`, which reports it.
    """

    async def _get_session(self, proxy_url: Any) -> Any:
        return _NoRedirects(await super()._get_session(proxy_url))


def _check_body_headers(headers: Any, where: str, expected: int | None) -> None:
    """Refuse answers that cannot carry the stored bytes as they are: no Content-Length
    (chunked), a body compressed in transit (Content-Encoding, and a length that is not the
    object's or range's), a weak ETag.  Each is a proxy or server misbehaving: another try
    would get the same, so :class:`BadResponseError` (not retried), with the true reason."""
    etag = str(headers.get("ETag", ""))
    if etag.startswith(("W/", "w/")):
        raise BadResponseError(f"{where}: weak ETag {etag[:60]}: a proxy is not serving the stored bytes")
    length = headers.get("Content-Length")
    if length is None or not str(length).strip().isdigit():
        how = "chunked transfer" if "chunked" in str(headers.get("Transfer-Encoding", "")).lower() else "none given"
        raise BadResponseError(f"{where}: the server sent no Content-Length ({how}); hcpsync needs the object's length")
    encoding = str(headers.get("Content-Encoding", "")).strip()
    if encoding.lower() not in ("", "identity") and expected is not None and int(length) != expected:
        raise BadResponseError(
            f"{where}: the body is compressed in transit (Content-Encoding: {encoding[:40]}, "
            f"{int(length)} bytes for {expected}); hcpsync needs the stored bytes"
        )


class S3Storage:
    """One S3 client with a connection pool sized to the transfer's concurrency."""

    def __init__(self, options: StorageOptions | None = None, config: TransferConfig | None = None) -> None:
        self.options = options or StorageOptions()
        self.config = config or TransferConfig()
        self.stats = StorageStats()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._fast: FastGetter | None = None

    async def __aenter__(self) -> S3Storage:
        opts = self.options
        try:
            session = AioSession(profile=opts.profile) if opts.profile else AioSession()
            # listings parse every LastModified with dateutil (~0.25 ms each, seconds per subject);
            # hcpsync never reads it, so keep timestamps as the raw strings
            session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
            region = opts.region or session.get_config_variable("region") or "us-east-1"
        except bce.BotoCoreError as exc:
            raise translate(exc, "-") from exc
        cfg = AioConfig(
            http_session_cls=_UnredirectedHTTP,
            max_pool_connections=self.config.concurrency,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            retries={"total_max_attempts": 1},  # hcpsync retries itself, resuming ranges
            signature_version=UNSIGNED if opts.no_sign_request else None,
            tcp_keepalive=True,
        )
        self._stack = AsyncExitStack()
        try:
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", region_name=region, endpoint_url=opts.resolved_endpoint(), config=cfg)
            )
            creds = None if opts.no_sign_request else await session.get_credentials()
            self._fast = FastGetter(self.config, opts.resolved_endpoint(), region, creds, opts.request_payer)
            self._stack.push_async_callback(self._fast.close)
        except Exception as exc:
            await self._stack.aclose()
            if isinstance(exc, ValueError) and "endpoint" in str(exc).lower():  # botocore's "Invalid endpoint: x"
                url = opts.resolved_endpoint()
                raise UsageError(f"invalid S3 endpoint URL {url!r}: expected http(s)://host[:port]") from exc
            raise translate(exc, "-") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    def _extra(self) -> dict[str, str]:
        return {"RequestPayer": "requester"} if self.options.request_payer else {}

    def _count_error(self, err: HcpsyncError) -> None:
        name = type(err).__name__
        self.stats.by_error[name] = self.stats.by_error.get(name, 0) + 1

    async def list_pages(self, bucket: str, prefix: str, delimiter: str | None = None) -> AsyncIterator[
        tuple[list[ObjectInfo], list[str]]
    ]:
        """Yield ``(objects, common_prefixes)`` one ListObjectsV2 page at a time."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **self._extra()}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            attempt = 0
            while True:
                self.stats.requests += 1
                self.stats.lists += 1
                try:
                    resp = await self._client.list_objects_v2(**kwargs)
                    break
                except Exception as exc:
                    err = translate(exc, bucket, prefix or None)
                    self._count_error(err)
                    if not should_retry(self.config, err, attempt):
                        raise err from exc
                attempt += 1
                self.stats.retries += 1
                await pause(self.config, attempt, err)
            objs = [
                ObjectInfo(key=o["Key"], size=int(o.get("Size", 0)), etag=str(o.get("ETag", "")).strip('"'))
                for o in resp.get("Contents", []) or []
            ]
            prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", []) or []]
            yield objs, prefixes
            token = self._next_token(resp, bucket, prefix, seen)
            if token is None:
                return

    def _next_token(self, resp: dict[str, Any], bucket: str, prefix: str, seen: set[str]) -> str | None:
        """The continuation token of a listing page; None on the last page.  A truncated page
        without a token, or a token seen before (a listing that would never end), is an error."""
        if not resp.get("IsTruncated"):
            return None
        where = _where(bucket, prefix or None)
        token = resp.get("NextContinuationToken")
        err: BadResponseError | None = None
        if not token:
            err = BadResponseError(
                f"the listing of {where} is truncated (IsTruncated) but has no continuation token: "
                "the server's listing is broken and the rest of it cannot be fetched"
            )
        elif token in seen:
            err = BadResponseError(
                f"the listing of {where} loops: the server sent continuation token {str(token)[:40]!r} twice "
                f"(after {len(seen)} pages); the server's listing is broken"
            )
        if err is not None:
            self._count_error(err)
            raise err
        seen.add(str(token))
        return str(token)

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        self.stats.requests += 1
        self.stats.heads += 1
        try:
            resp = await self._client.head_object(Bucket=bucket, Key=key, **self._extra())
        except Exception as exc:
            err = translate(exc, bucket, key)
            self._count_error(err)
            raise err from exc
        return ObjectInfo(key=key, size=int(resp["ContentLength"]), etag=str(resp.get("ETag", "")).strip('"'))

    @asynccontextmanager
    async def get(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None, etag: str | None = None,
        total: int | None = None,
    ) -> AsyncIterator[Body]:
        """GET ``[start, end)`` of an object (the whole object when ``end`` is None and start 0).

        With ``etag`` the request is pinned (If-Match): a changed object fails with
        :class:`ObjectChangedError`.  The answer's Content-Range (ranged) or Content-Length
        is checked against what was asked; the body is a :class:`Body` to stream.
        """
        headers: dict[str, str] = {}
        ranged = not (start == 0 and end is None)
        if ranged:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if etag:
            headers["If-Match"] = f'"{etag}"'
        self.stats.requests += 1
        self.stats.gets += 1
        if self._fast is None:
            raise StorageError("storage is not open")
        if self._fast.credentials is None and not self.options.no_sign_request:
            raise CredentialsError(f"no AWS credentials found. {CREDENTIALS_HINT} (or --no-sign-request for public data)")
        try:
            resp = await self._fast.get(bucket, key, headers)
        except Exception as exc:
            err = translate(exc, bucket, key)
            self._count_error(err)
            raise err from exc
        try:
            if resp.status in _REDIRECTS:
                raise redirect_error(resp.status, resp.headers, bucket, key)
            if resp.status >= 300:
                try:
                    code, message = parse_error(await resp.content.read(65536))
                except Exception:
                    code, message = "", ""
                raise translate_code(code, resp.status, message, bucket, key)
            want = self._check_answer(resp, bucket, key, start, end, total, etag)
            floor = _SpeedFloor(self.config.low_speed_limit, self.config.low_speed_time)
            yield Body(resp, bucket, key, want, self.stats, floor)
        except HcpsyncError as err:
            self._count_error(err)
            raise
        finally:
            resp.close()

    def _check_answer(self, resp: Any, bucket: str, key: str, start: int, end: int | None, total: int | None,
                      etag: str | None) -> int:
        """Check a 2xx answer's headers against what was asked; return the body length to read."""
        where = f"s3://{bucket}/{key}"
        ranged = not (start == 0 and end is None)
        stop = end if end is not None else total
        _check_body_headers(resp.headers, where, stop - start if stop is not None else None)
        length = int(resp.headers["Content-Length"])
        if ranged:
            if resp.status != 206:
                raise RangeMismatchError(f"{where}: asked for a range, got the whole object")
            self._check_range(bucket, key, resp.headers.get("Content-Range"), start, end, total)
            want = (end - start) if end is not None else length
        else:
            want = length
            if total is not None and length != total:
                raise ObjectChangedError(f"{where} is {length} bytes on the server, {total} were planned: it changed")
        if etag and resp.headers.get("ETag", "").strip('"') not in ("", etag):
            raise ObjectChangedError(f"{where} changed on the server (ETag differs)")
        if length != want:
            raise RangeMismatchError(f"{where}: Content-Length {length}, expected {want}")
        return want

    @staticmethod
    def _check_range(bucket: str, key: str, header: str | None, start: int, end: int | None, total: int | None) -> None:
        m = _CONTENT_RANGE.match(header or "")
        if not m:
            raise RangeMismatchError(f"s3://{bucket}/{key}: missing or malformed Content-Range {header!r}")
        first, last, size = int(m.group(1)), int(m.group(2)), m.group(3)
        if total is not None and size != "*" and int(size) != total:
            raise ObjectChangedError(f"s3://{bucket}/{key} is {size} bytes on the server, {total} were planned")
        if first != start or (end is not None and last != end - 1):
            raise RangeMismatchError(
                f"s3://{bucket}/{key}: asked for bytes {start}-{'' if end is None else end - 1}, got {first}-{last}"
            )

    async def get_bytes(self, bucket: str, key: str, limit: int = 64 * 1024 * 1024) -> bytes:
        """Fetch a small object whole (manifests).  Refuses objects over ``limit`` bytes."""
        async with self.get(bucket, key) as body:
            if body.length > limit:
                raise StorageError(f"s3://{bucket}/{key} is {body.length} bytes, over the {limit} limit")
            buf = bytearray()
            async for chunk in body.chunks(self.config.chunk_size):
                buf += chunk
            return bytes(buf)
