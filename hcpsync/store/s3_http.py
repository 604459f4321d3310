"""Every S3 request on one plain aiohttp session: object GETs (the hot path), and the listings,
HEADs and HeadBucket of :mod:`.s3_api`.

botocore spends about 2 ms of CPU on each request (event hooks, user-agent strings,
endpoint rules, response parsing, date parsing).  For a subject of 12,000 mostly small
files that, not the network, bounds a pull.  GETs are simple enough to send directly: the
URL is built once per key, the request is signed with botocore's own SigV4 signer (when
not anonymous), and the response's status and headers are all hcpsync reads.  The few
other requests hcpsync sends go the same way: building aiobotocore's client for them cost
0.1-0.2 s at every start (S3's service model, the endpoints JSON, the endpoint rules).
"""

from __future__ import annotations

import inspect
import logging
import re
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ..config import TransferConfig
from ..errors import UsageError
from .options import is_plain_http

log = logging.getLogger("hcpsync.store")
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]{0,300})</Message>")


#: a bucket name that can be a host name label under AWS's wildcard certificate (botocore's ``check_dns_name``)
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _aws(region: str, bucket: str) -> tuple[str, str]:
    """``(origin, path prefix)`` of a bucket on AWS: virtual-hosted, or path-style for a name that cannot
    be a host (``openneuro.org``: the dot would fail the ``*.s3.REGION.amazonaws.com`` certificate), as
    botocore addresses them."""
    if _DNS_BUCKET.match(bucket) and "--" not in bucket:
        return f"https://{bucket}.s3.{region}.amazonaws.com", ""
    return f"https://s3.{region}.amazonaws.com", f"/{quote(bucket, safe='')}"


def object_url(endpoint: str | None, region: str, bucket: str, key: str) -> str:
    """Path-style on a custom endpoint, virtual-hosted style on AWS (path-style for a dotted bucket)."""
    path = quote(key, safe="/~")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{path}"
    origin, prefix = _aws(region, bucket)
    return f"{origin}{prefix}/{path}"


def bucket_url(endpoint: str | None, region: str, bucket: str) -> str:
    """The URL of a bucket-level request (listing, HeadBucket), as botocore sends it."""
    if endpoint:
        return f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}"
    origin, prefix = _aws(region, bucket)
    return f"{origin}{prefix or '/'}"


def query_string(params: dict[str, str]) -> str:
    """``params`` as SigV4 canonicalizes them: sorted, each name and value percent-encoded (RFC 3986)."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


def parse_error(body: bytes) -> tuple[str, str]:
    """``(Code, Message)`` of an S3 XML error body (empty strings when absent)."""
    code = _ERROR_CODE.search(body)
    msg = _ERROR_MESSAGE.search(body)
    return (code.group(1).decode(errors="replace") if code else "", msg.group(1).decode(errors="replace") if msg else "")


def tls_context(ca_bundle: str | None, verify: bool, endpoint: str | None = None) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl``: False (``--no-verify-ssl``), a context trusting ``ca_bundle``, or True (the default CAs).

    An ``http://`` endpoint gets no context of its own (loading a CA bundle costs tens of ms): True, aiohttp's
    default, which only a proxy reached over TLS would use; the bundle is only checked to be readable."""
    if not verify:
        return False
    if not ca_bundle:
        return True
    try:
        if is_plain_http(endpoint):
            with open(ca_bundle, "rb"):
                return True
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "not a PEM file of certificates"
        raise UsageError(f"cannot use the CA bundle {ca_bundle!r} (--ca-bundle or AWS_CA_BUNDLE): {why}") from exc


class FastGetter:
    """Signed (or anonymous) requests over one connection pool of ``concurrency`` connections."""

    def __init__(self, config: TransferConfig, endpoint: str | None, region: str, credentials: Any,
                 request_payer: bool, tls: ssl.SSLContext | bool = True) -> None:
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials  # botocore credentials, or None for anonymous requests
        self.request_payer = request_payer
        self._regions: dict[str, str] = {}  # bucket -> region learnt from a redirect
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}  # origin -> its proxy
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=0, ttl_dns_cache=300,
                                           keepalive_timeout=30, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _headers(self, url: str, extra: dict[str, str], region: str, method: str = "GET") -> dict[str, str]:
        headers = dict(extra)
        if self.request_payer:
            headers["x-amz-request-payer"] = "requester"
        if self.credentials is None:
            return headers
        from botocore.auth import S3SigV4Auth  # here: anonymous requests load no botocore
        from botocore.awsrequest import AWSRequest

        frozen = self.credentials.get_frozen_credentials()
        if inspect.isawaitable(frozen):  # aiobotocore's credentials refresh asynchronously
            frozen = await frozen
        req = AWSRequest(method=method, url=url, headers=headers)
        S3SigV4Auth(frozen, "s3", region).add_auth(req)
        return dict(req.headers.items())

    def _proxy(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy HTTP(S)_PROXY / NO_PROXY give for ``url``'s origin, looked up once per origin (as botocore
        does for the listings; aiohttp's ``trust_env`` would look on every request, and add ~/.netrc logins)."""
        origin = f"{url.scheme}://{url.host}:{url.port}"
        if origin not in self._proxies:
            try:
                self._proxies[origin] = get_env_proxy_for_url(url)
            except LookupError:
                self._proxies[origin] = (None, None)
        return self._proxies[origin]

    async def get(self, bucket: str, key: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """Send the GET; the caller reads and closes the response.  Raises aiohttp errors as they come."""
        return await self.send("GET", bucket, key, headers)

    async def send(self, method: str, bucket: str, key: str | None, headers: dict[str, str],
                   query: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """Send one request on the object ``key`` (None: on the bucket), with ``query``; the caller reads and
        closes the response.  Raises aiohttp errors as they come.

        On AWS, a bucket in another region than the configured one answers 301/400 with
        ``x-amz-bucket-region``: the request is sent again there, and the region is remembered.
        """
        for _ in range(2):
            region = self._regions.get(bucket, self.region)
            url = object_url(self.endpoint, region, bucket, key) if key is not None else bucket_url(self.endpoint, region, bucket)
            if query:
                url = f"{url}?{query_string(query)}"
            signed = await self._headers(url, headers, region, method)
            # encoded=True: send the very path that was signed (yarl would re-quote it: '%3D' -> '=',
            # ';' left bare...), or S3 refuses the signature and servers may cut the key at ';'
            target = URL(url, encoded=True)
            proxy, proxy_auth = self._proxy(target)
            resp = await self._session.request(method, target, headers=signed, allow_redirects=False, proxy=proxy,
                                               proxy_auth=proxy_auth)
            log.debug("%s %s%s -> %d", method, url, f" Range: {headers['Range']}" if "Range" in headers else "", resp.status)
            moved = resp.headers.get("x-amz-bucket-region")
            if self.endpoint is None and resp.status in (301, 307, 400) and moved and moved != region:
                resp.close()
                self._regions[bucket] = moved
                continue
            return resp
        return resp
