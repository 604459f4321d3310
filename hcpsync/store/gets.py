"""The GET path alone: a signed GET, its answer checked, its body to stream.

:class:`~hcpsync.store.s3.S3Storage` delegates its ``get`` here, and worker processes use it
without an aiobotocore client or a credential chain: they sign with the keys the coordinator
hands them (:class:`StaticKeys`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from ..config import TransferConfig
from ..errors import CredentialsError
from .base import StorageStats
from .body import GetRequest, S3Body, SpeedFloor, check_answer
from .errors import CREDENTIALS_HINT, REDIRECTS, map_exceptions, redirect_error, translate_code
from .s3_http import FastGetter, parse_error, tls_context


class Keys(NamedTuple):
    """Frozen AWS credentials (what botocore's signer reads)."""

    access_key: str
    secret_key: str
    token: str | None


class StaticKeys:
    """Credentials that are what they were last set to (a worker's, updated by its coordinator)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def get_frozen_credentials(self) -> Keys:
        return self.keys


class Endpoint(NamedTuple):
    """Where GETs go and how they are sent: all a worker process needs besides its keys."""

    url: str | None
    region: str
    request_payer: bool
    ca_bundle: str | None
    verify_ssl: bool
    anonymous: bool

    def open(self, keys: Keys | None, config: TransferConfig) -> Getter:
        """A :class:`Getter` signing with ``keys`` (a worker's); close its ``fast`` when done."""
        fast = FastGetter(config, self.url, self.region, StaticKeys(keys) if keys else None, self.request_payer,
                          tls_context(self.ca_bundle, self.verify_ssl, self.url))
        return Getter(fast, config, StorageStats(), self.anonymous)


class Getter:
    """GETs through a :class:`FastGetter`, counted in ``stats``."""

    def __init__(self, fast: FastGetter, config: TransferConfig, stats: StorageStats, anonymous: bool) -> None:
        self.fast = fast
        self.config = config
        self.stats = stats
        self.anonymous = anonymous

    async def frozen_keys(self) -> Keys | None:
        creds = self.fast.credentials
        if creds is None:
            return None
        frozen = creds.get_frozen_credentials()
        if inspect.isawaitable(frozen):  # aiobotocore's credentials refresh asynchronously
            frozen = await frozen
        return Keys(frozen.access_key, frozen.secret_key, frozen.token)

    @asynccontextmanager
    async def get(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None, etag: str | None = None,
        total: int | None = None,
    ) -> AsyncIterator[S3Body]:
        """GET ``[start, end)`` of an object (the whole object when ``end`` is None and start 0).

        With ``etag`` the request is pinned (If-Match): a changed object fails with
        :class:`ObjectChangedError`.  The answer's Content-Range (ranged) or Content-Length
        is checked against what was asked; the body is a :class:`S3Body` to stream.
        """
        req = GetRequest(bucket, key, start, end, etag, total)
        self.stats.requests += 1
        if self.fast.credentials is None and not self.anonymous:
            raise CredentialsError(f"no AWS credentials found. {CREDENTIALS_HINT} (or --no-sign-request for public data)")
        with map_exceptions(bucket, key):
            resp = await self.fast.get(bucket, key, req.headers())
        try:
            await _refuse_error_answer(resp, req)
            want = check_answer(resp.status, resp.headers, req)
            yield S3Body(resp, bucket, key, want, SpeedFloor(self.config.low_speed_limit, self.config.low_speed_time))
        finally:
            resp.close()


async def _refuse_error_answer(resp: Any, req: GetRequest) -> None:
    """Raise the error a 3xx, 4xx or 5xx answer to a GET means."""
    if resp.status in REDIRECTS:
        raise redirect_error(resp.status, resp.headers, req.bucket, req.key)
    if resp.status >= 300:
        try:
            code, message = parse_error(await resp.content.read(65536))
        except Exception:
            code, message = "", ""
        raise translate_code(code, resp.status, message, req.bucket, req.key)

