"""S3 on one aiohttp session: :mod:`.s3_api`'s listings and HEADs, :mod:`.s3_http`'s fast GET path.

:class:`S3Storage` is the :class:`~hcpsync.store.base.ObjectStore` the other stages use: list a
prefix (paginated), HEAD an object, stream a (ranged) GET with its checks (:mod:`.body`), and
fetch a small object whole.  Errors are translated by :mod:`.errors`; listing and HEAD retry with
:mod:`.retry`'s policy (the pool retries its GETs itself, resuming from the last byte written).
botocore's session supplies the configuration (region, CA bundle) and the credentials, and its
signer signs; no botocore client is built (see :mod:`.s3_api`), and anonymous requests to a
plain-HTTP endpoint (a local mirror) need no botocore at all.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..config import TransferConfig
from ..errors import BadResponseError, HcpsyncError, StorageError, UsageError
from ..models import ObjectInfo
from .base import GET_BYTES_LIMIT, ObjectStore, StorageStats
from .body import S3Body
from .errors import CREDENTIALS_HINT, map_exceptions, redirect_error, translate, translate_code, where
from .gets import Endpoint, Getter, Keys
from .options import StorageOptions
from .retry import RetryPolicy
from .s3_api import S3Api
from .s3_http import FastGetter, tls_context

log = logging.getLogger("hcpsync.store")

__all__ = [
    "CREDENTIALS_HINT",
    "BucketProbe",
    "S3Body",
    "S3Storage",
    "StorageOptions",
    "StorageStats",
    "redirect_error",
    "translate",
    "translate_code",
]

T = TypeVar("T")

#: botocore's checks of a region name and of an endpoint's host name (``botocore.utils``)
_REGION = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{,63}(?<!-)$")
_HOST = re.compile(r"^((?!-)[A-Z\d-]{1,63}(?<!-)\.)*((?!-)[A-Z\d-]{1,63}(?<!-))$", re.IGNORECASE)


@dataclass(frozen=True)
class BucketProbe:
    """What a HeadBucket answer tells ``hcpsync doctor``: the bucket's region and the server's clock."""

    region: str | None  # x-amz-bucket-region (None when the endpoint does not say)
    server_date: str | None  # the Date header, as sent


class S3Storage:
    """One S3 client with a connection pool sized to the transfer's concurrency."""

    def __init__(self, options: StorageOptions | None = None, config: TransferConfig | None = None) -> None:
        self.options = options or StorageOptions()
        self.config = config or TransferConfig()
        self.retry = RetryPolicy.from_config(self.config)
        self.stats = StorageStats()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._getter: Getter | None = None
        self.region: str | None = None  # resolved when opened
        self.credential_source: str | None = None  # botocore's name of where the keys came from ("env"...)
        self.ca_bundle: str | None = None  # the CA bundle in use (--ca-bundle, AWS_CA_BUNDLE, the profile's)

    async def __aenter__(self) -> S3Storage:
        opts = self.options
        endpoint = opts.resolved_endpoint()
        if endpoint is not None and not _valid_endpoint(endpoint):
            raise UsageError(f"invalid S3 endpoint URL {endpoint!r}: expected http(s)://host[:port]")
        session: Any = None
        if not opts.needs_botocore():
            # anonymous requests to a plain-HTTP endpoint: no credentials to find, no TLS to configure,
            # and the region names nothing there; botocore (~0.1 s to import and set up) is not needed
            region = opts.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            bundle = opts.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
        else:
            from aiobotocore.session import AioSession
            from botocore import exceptions as bce

            try:
                session = AioSession(profile=opts.profile) if opts.profile else AioSession()
                region = opts.region or session.get_config_variable("region") or "us-east-1"
                bundle = opts.ca_bundle or session.get_config_variable("ca_bundle")
            except bce.BotoCoreError as exc:
                raise translate(exc, "-") from exc
        if not _REGION.match(region):
            raise UsageError(f"invalid region {region!r} (from --region, AWS_DEFAULT_REGION or the profile): "
                             "a region name such as us-east-1 or eu-west-2")
        tls = tls_context(bundle, opts.verify_ssl, endpoint)  # listings and GETs trust the same CAs
        self.ca_bundle = bundle
        self._stack = AsyncExitStack()
        try:
            creds = None if session is None or opts.no_sign_request else await session.get_credentials()
            self.region, self.credential_source = region, getattr(creds, "method", None)
            fast = FastGetter(self.config, endpoint, region, creds, opts.request_payer, tls)
            self._stack.push_async_callback(fast.close)
            self._getter = Getter(fast, self.config, self.stats, opts.no_sign_request)
            self._client = S3Api(fast, anonymous=opts.no_sign_request)
        except Exception as exc:
            await self._stack.aclose()
            raise translate(exc, "-") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    def _extra(self) -> dict[str, str]:
        return {"RequestPayer": "requester"} if self.options.request_payer else {}

    async def _request(self, op: Callable[[], Awaitable[T]], bucket: str, key: str | None) -> T:
        """One aiobotocore call, counted, translated, and retried under the policy."""

        def attempt() -> Awaitable[T]:
            self.stats.requests += 1
            name = getattr(getattr(op, "func", op), "__name__", "request")  # list_objects_v2, head_object
            log.debug("%s s3://%s/%s", name, bucket, key or "")
            return op()

        return await self.retry.call(attempt, lambda exc: translate(exc, bucket, key), self._retried)

    def _retried(self, err: HcpsyncError) -> None:
        self.stats.retries += 1

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
            resp = await self._request(partial(self._client.list_objects_v2, **kwargs), bucket, prefix or None)
            objs = [
                ObjectInfo(key=o["Key"], size=int(o.get("Size", 0)), etag=str(o.get("ETag", "")).strip('"'))
                for o in resp.get("Contents", []) or []
            ]
            prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", []) or []]
            yield objs, prefixes
            token = _next_token(resp, bucket, prefix, seen)
            if token is None:
                return

    async def probe_bucket(self, bucket: str) -> BucketProbe:
        """HeadBucket: the bucket's region and the server's Date (one attempt, no retries)."""
        self.stats.requests += 1
        with map_exceptions(bucket):
            resp = await self._client.head_bucket(Bucket=bucket)
        headers = (resp.get("ResponseMetadata", {}) or {}).get("HTTPHeaders", {}) or {}
        return BucketProbe(region=headers.get("x-amz-bucket-region"), server_date=headers.get("date"))

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        resp = await self._request(partial(self._client.head_object, Bucket=bucket, Key=key, **self._extra()), bucket, key)
        return ObjectInfo(key=key, size=int(resp["ContentLength"]), etag=str(resp.get("ETag", "")).strip('"'),
                          encrypted=bool(resp.get("Encrypted", False)))

    async def part_size(self, bucket: str, key: str) -> int | None:
        """The size of part 1 of a multipart upload (one HEAD ``?partNumber=1``), or None when the
        server does not say (no parts count in its answer: not S3, or not a multipart object)."""
        resp = await self._request(partial(self._client.head_part, Bucket=bucket, Key=key, PartNumber=1, **self._extra()),
                                   bucket, key)
        return int(resp["ContentLength"]) if resp.get("PartsCount") else None

    def get(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None, etag: str | None = None,
        total: int | None = None,
    ) -> AbstractAsyncContextManager[S3Body]:
        """GET ``[start, end)`` of an object (the whole object when ``end`` is None and start 0):
        see :meth:`hcpsync.store.gets.Getter.get`."""
        if self._getter is None:
            raise StorageError("storage is not open")
        return self._getter.get(bucket, key, start=start, end=end, etag=etag, total=total)

    def endpoint(self) -> Endpoint:
        """Where this store's GETs go, for worker processes."""
        opts = self.options
        return Endpoint(opts.resolved_endpoint(), self.region or "us-east-1", opts.request_payer, self.ca_bundle,
                        opts.verify_ssl, opts.no_sign_request)

    async def frozen_keys(self) -> Keys | None:
        """The access key, secret and session token requests are signed with now (None: anonymous),
        for worker processes, which sign their own GETs without a credential chain of their own."""
        return await self._getter.frozen_keys() if self._getter is not None else None

    async def get_bytes(self, bucket: str, key: str, limit: int = GET_BYTES_LIMIT) -> bytes:
        """Fetch a small object whole (manifests).  Refuses objects over ``limit`` bytes."""
        async with self.get(bucket, key) as body:
            if body.length > limit:
                raise StorageError(f"s3://{bucket}/{key} is {body.length} bytes, over the {limit} limit")
            buf = bytearray()
            async for chunk in body.chunks(self.config.chunk_size):
                buf += chunk
            return bytes(buf)


def _valid_endpoint(url: str) -> bool:
    """An http(s) URL with a valid host name or IP address (botocore's check, and the scheme)."""
    if set(url) & {"\t", "\n", "\r"}:
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    host = parts.hostname
    if parts.scheme.lower() not in ("http", "https") or not host or len(host) > 255:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST.match(host.removesuffix(".")) is not None


def _next_token(resp: dict[str, Any], bucket: str, prefix: str, seen: set[str]) -> str | None:
    """The continuation token of a listing page; None on the last page.  A truncated page
    without a token, or a token seen before (a listing that would never end), is an error."""
    if not resp.get("IsTruncated"):
        return None
    place = where(bucket, prefix or None)
    token = resp.get("NextContinuationToken")
    if not token:
        raise BadResponseError(
            f"the listing of {place} is truncated (IsTruncated) but has no continuation token: "
            "the server's listing is broken and the rest of it cannot be fetched"
        )
    if token in seen:
        raise BadResponseError(
            f"the listing of {place} loops: the server sent continuation token {str(token)[:40]!r} twice "
            f"(after {len(seen)} pages); the server's listing is broken"
        )
    seen.add(str(token))
    return str(token)


if TYPE_CHECKING:
    _conforms: type[ObjectStore] = S3Storage  # mypy checks that S3Storage is an ObjectStore
