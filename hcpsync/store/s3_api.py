"""ListObjectsV2, HeadObject and HeadBucket on :class:`~.s3_http.FastGetter`'s session.

These are all hcpsync asked of aiobotocore's client, and building that client cost 0.1-0.2 s
at every start (S3's service model and the 1.2 MB endpoints JSON parsed, the endpoint rules
loaded, a second connection pool and its CA bundle), more than a small pull's whole work.
:class:`S3Api` answers as the client's methods did (same keyword arguments, same dictionaries),
so :class:`~.s3.S3Storage` keeps its pagination checks and retries; requests are signed with
botocore's SigV4 signer, and an error answer is raised as the :class:`HcpsyncError` it means.
"""

from __future__ import annotations

import zlib
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from ..errors import BadResponseError, CredentialsError, HcpsyncError, NotS3Error
from .body import is_encrypted
from .errors import CREDENTIALS_HINT, answer_error, where
from .s3_http import FastGetter, parse_error

#: a listing page is ~0.3 MB for S3's 1,000 keys; far more is no S3 answer
LISTING_LIMIT = 64 * 1024 * 1024
ERROR_BODY_LIMIT = 65536


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]  # without the namespace (S3's, or none from some S3 clones)


def _text(elem: ElementTree.Element, name: str) -> str | None:
    for child in elem:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def parse_listing(body: bytes, bucket: str, prefix: str) -> dict[str, Any]:
    """A ListObjectsV2 answer as botocore returns it (the fields hcpsync reads): ``Contents`` (``Key``,
    ``Size``, ``ETag``), ``CommonPrefixes`` (``Prefix``), ``IsTruncated``, ``NextContinuationToken``;
    keys and prefixes decoded when the answer says ``EncodingType`` url (botocore's ``unquote_plus``)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise NotS3Error(f"the endpoint's answer to the listing of {where(bucket, prefix or None)} is no S3 XML "
                         f"({exc}): it is not an S3 API; check --endpoint-url") from exc
    if _local(root.tag) != "ListBucketResult":
        raise NotS3Error(f"the endpoint answered the listing of {where(bucket, prefix or None)} with <{_local(root.tag)}>, "
                         "not S3's <ListBucketResult>: it is not an S3 API; check --endpoint-url")
    decode = unquote_plus if (_text(root, "EncodingType") or "").lower() == "url" else str
    contents: list[dict[str, Any]] = []
    prefixes: list[dict[str, str]] = []
    for elem in root:
        name = _local(elem.tag)
        if name == "Contents":
            key, size = _text(elem, "Key"), _text(elem, "Size")
            if key is None:
                raise BadResponseError(f"the listing of {where(bucket, prefix or None)} has an object without a <Key>")
            try:
                size_n = int(size or 0)
            except ValueError as exc:
                raise BadResponseError(f"the listing of {where(bucket, prefix or None)} gives {key!r} "
                                       f"the size {size!r}, not a number") from exc
            contents.append({"Key": decode(key), "Size": size_n, "ETag": _text(elem, "ETag") or ""})
        elif name == "CommonPrefixes":
            common = _text(elem, "Prefix")
            if common is not None:
                prefixes.append({"Prefix": decode(common)})
    resp: dict[str, Any] = {"IsTruncated": (_text(root, "IsTruncated") or "").strip().lower() == "true"}
    if contents:
        resp["Contents"] = contents
    if prefixes:
        resp["CommonPrefixes"] = prefixes
    token = _text(root, "NextContinuationToken")
    if token:
        resp["NextContinuationToken"] = token
    return resp


async def _read(resp: Any, limit: int) -> bytes:
    """The whole body, refused past ``limit`` bytes; inflated if a proxy compressed it anyway."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            raise BadResponseError(f"the answer from {resp.url.host} is over {limit} bytes: no S3 listing is that long")
    coding = resp.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("gzip", "deflate"):
        try:
            return zlib.decompress(bytes(body), 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
        except zlib.error as exc:
            raise BadResponseError(f"the answer from {resp.url.host} is not the {coding} data it says it is") from exc
    return bytes(body)


class S3Api:
    """The aiobotocore client's ``list_objects_v2``, ``head_object`` and ``head_bucket``, on ``http``."""

    def __init__(self, http: FastGetter, anonymous: bool) -> None:
        self.http = http
        self.anonymous = anonymous  # --no-sign-request: unsigned requests are meant

    async def _send(self, method: str, bucket: str, key: str | None, query: dict[str, str] | None = None,
                    where_key: str | None = None, listing: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request: ``(status, headers, body)`` of a 2xx answer, else the error it means, raised."""
        if self.http.credentials is None and not self.anonymous:
            raise CredentialsError(f"no AWS credentials found. {CREDENTIALS_HINT} (or --no-sign-request for public data)")
        resp = await self.http.send(method, bucket, key, {}, query)
        try:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            if resp.status >= 300:
                code, message = "", ""
                if method != "HEAD":
                    try:
                        code, message = parse_error(await _read(resp, ERROR_BODY_LIMIT))
                    except HcpsyncError:
                        pass
                raise answer_error(resp.status, code, message, headers, bucket, where_key, listing=listing)
            body = await _read(resp, LISTING_LIMIT) if method != "HEAD" else b""
            return resp.status, headers, body
        finally:
            resp.close()

    async def list_objects_v2(self, *, Bucket: str, Prefix: str = "", Delimiter: str | None = None,
                              ContinuationToken: str | None = None, **_: str) -> dict[str, Any]:
        """One page (``RequestPayer``: the session sends ``x-amz-request-payer`` when asked to)."""
        query = {"list-type": "2", "prefix": Prefix, "encoding-type": "url"}
        if Delimiter:
            query["delimiter"] = Delimiter
        if ContinuationToken:
            query["continuation-token"] = ContinuationToken
        answer = await self._send("GET", Bucket, None, query, where_key=Prefix or None, listing=True)
        return parse_listing(answer[2], Bucket, Prefix)

    async def head_object(self, *, Bucket: str, Key: str, **_: str) -> dict[str, Any]:
        headers = (await self._send("HEAD", Bucket, Key, where_key=Key))[1]
        try:
            length = int(headers["content-length"])
        except (KeyError, ValueError) as exc:
            raise BadResponseError(f"the HEAD answer for {where(Bucket, Key)} has no valid Content-Length") from exc
        return {"ContentLength": length, "ETag": headers.get("etag", ""), "Encrypted": is_encrypted(headers)}

    async def head_part(self, *, Bucket: str, Key: str, PartNumber: int, **_: str) -> dict[str, Any]:
        """HEAD of one part of a multipart upload (``?partNumber=``): its length and the parts count,
        when the server says (S3 does; a server that ignores the parameter gives no count)."""
        headers = (await self._send("HEAD", Bucket, Key, {"partNumber": str(PartNumber)}, where_key=Key))[1]
        count = headers.get("x-amz-mp-parts-count", "")
        try:
            return {"ContentLength": int(headers["content-length"]), "PartsCount": int(count) if count else None}
        except (KeyError, ValueError) as exc:
            raise BadResponseError(f"the HEAD answer for {where(Bucket, Key)} has no valid Content-Length") from exc

    async def head_bucket(self, *, Bucket: str) -> dict[str, Any]:
        status, headers, _ = await self._send("HEAD", Bucket, None)
        return {"ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}
