"""Every translation of botocore, aiohttp and socket exceptions, and of S3 error codes, into
:mod:`hcpsync.errors`, as two tables (in the spirit of httpcore's ``map_exceptions``):

* :data:`EXCEPTIONS`: exception classes -> a builder of the :class:`HcpsyncError`, first match wins
  (botocore's named: they are looked for once botocore is loaded, and none can exist before);
* :data:`S3_CODES` / :data:`HTTP_STATUSES`: an S3 error code or an HTTP status -> a :class:`_Kind`
  of error, the earliest kind matched by either winning.

Nothing outside :mod:`hcpsync.store` ever sees a transport exception.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

import aiohttp

from ..errors import (
    AccessDeniedError,
    CertificateError,
    CredentialsError,
    EndpointError,
    HcpsyncError,
    NoSuchBucketError,
    NoSuchKeyError,
    NotS3Error,
    ObjectChangedError,
    RedirectError,
    ShortReadError,
    StorageError,
    ThrottledError,
    TransientError,
    UsageError,
)

CREDENTIALS_HINT = (
    "HCP data needs the AWS keys from BALSA's HCP-YA page (ConnectomeDB's links are gone): store them with "
    "'aws configure --profile hcp', pass --profile hcp, and check them with 'hcpsync doctor --profile hcp'"
)

REDIRECTS = (301, 302, 303, 307, 308)


def where(bucket: str, key: str | None = None) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


# --- S3 error codes and HTTP statuses ----------------------------------------------------------


class _Kind(IntEnum):
    """What an S3 error answer means, in precedence order: when the code and the status name
    different kinds, the smaller one wins."""

    NO_BUCKET = 1
    NO_KEY = 2
    BAD_TOKEN = 3
    DENIED = 4
    PRECONDITION = 5
    BAD_RANGE = 6
    THROTTLED = 7
    SERVER = 8
    OTHER = 9


S3_CODES: dict[str, _Kind] = {
    "NoSuchBucket": _Kind.NO_BUCKET,
    **dict.fromkeys(("NoSuchKey", "404"), _Kind.NO_KEY),
    **dict.fromkeys(("ExpiredToken", "InvalidToken", "TokenRefreshRequired"), _Kind.BAD_TOKEN),  # S3 answers 400
    **dict.fromkeys(("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"),
                    _Kind.DENIED),
    **dict.fromkeys(("PreconditionFailed", "412"), _Kind.PRECONDITION),
    "InvalidRange": _Kind.BAD_RANGE,
    **dict.fromkeys(("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"),
                    _Kind.THROTTLED),
    **dict.fromkeys(("InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "BadGateway",
                     "GatewayTimeout", "503", "500", "502", "504"), _Kind.SERVER),
}

#: statuses that mean a kind whatever the code (404 only for a key: a bucket's 404 is its code's)
HTTP_STATUSES: dict[int, _Kind] = {
    404: _Kind.NO_KEY,
    403: _Kind.DENIED,
    412: _Kind.PRECONDITION,
    416: _Kind.BAD_RANGE,
    503: _Kind.THROTTLED,  # only with no code, or "503": a 503 with its own code is that code's
}


def _status_kind(status: int, code: str, key: str | None) -> _Kind:
    kind = HTTP_STATUSES.get(status)
    if (kind is _Kind.NO_KEY and not key) or (kind is _Kind.THROTTLED and code not in ("", "503")):
        kind = None
    if kind is None:
        kind = _Kind.SERVER if status >= 500 else _Kind.OTHER
    return kind


_Build = Callable[[str, str, str, str], HcpsyncError]  # (bucket, where, code or status, message)

_BUILDERS: dict[_Kind, _Build] = {
    _Kind.NO_BUCKET: lambda b, w, c, m: NoSuchBucketError(f"bucket {b!r} does not exist"),
    _Kind.NO_KEY: lambda b, w, c, m: NoSuchKeyError(f"{w} does not exist (deleted since it was listed?)"),
    _Kind.BAD_TOKEN: lambda b, w, c, m: CredentialsError(
        f"{c} on {w}: the AWS session token (AWS_SESSION_TOKEN) is expired or invalid; "
        f"refresh your temporary credentials. {CREDENTIALS_HINT}"
    ),
    _Kind.DENIED: lambda b, w, c, m: AccessDeniedError(
        f"{'access denied' if c in ('AccessDenied', '403', '') else c} to {w}: {CREDENTIALS_HINT}"
    ),
    _Kind.PRECONDITION: lambda b, w, c, m: ObjectChangedError(
        f"{w} changed on the server during the transfer (ETag no longer matches)"
    ),
    _Kind.BAD_RANGE: lambda b, w, c, m: ObjectChangedError(
        f"{w} is shorter than planned (invalid range): it changed on the server"
    ),
    _Kind.THROTTLED: lambda b, w, c, m: ThrottledError(f"throttled by S3 ({c}) on {w}"),
    _Kind.SERVER: lambda b, w, c, m: TransientError(f"server error {c} on {w}: {m}"),
    _Kind.OTHER: lambda b, w, c, m: StorageError(f"{c} on {w}: {m}"),
}


def translate_code(code: str, status: int, message: str, bucket: str, key: str | None = None) -> HcpsyncError:
    """Map an S3 error code and HTTP status to an :class:`HcpsyncError`."""
    kind = min(S3_CODES.get(code, _Kind.OTHER), _status_kind(status, code, key))
    return _BUILDERS[kind](bucket, where(bucket, key), code or str(status), message or code)


def redirect_error(status: int, headers: Any, bucket: str, key: str | None = None) -> RedirectError:
    """A 3xx answer, with where it points (the Location without its query) and what to do."""
    location = str(headers.get("location") or headers.get("Location") or "").partition("?")[0]
    region = headers.get("x-amz-bucket-region")
    fix = f"--region {region}" if region else "the bucket's --region (on AWS)"
    return RedirectError(
        f"the S3 endpoint answered {status} redirect for {where(bucket, key)}"
        f"{f' to {location}' if location else ''}: the bucket is served by another endpoint; "
        f"pass that endpoint with --endpoint-url, or {fix}"
    )


# --- exceptions --------------------------------------------------------------------------------


def answer_error(status: int, code: str, message: str, headers: Any, bucket: str, key: str | None = None,
                 listing: bool = False) -> HcpsyncError:
    """The error an S3 answer with ``status`` >= 300 means: its S3 error ``code`` (``""``: none in the
    body, as in any answer to a HEAD) and ``message``, its ``headers`` (a redirect's Location).  For the
    answer to a listing (``listing``), a 404 without an S3 code means the endpoint is no S3 API."""
    if status == 404 and code in ("", "404") and listing:
        # S3 names a listing's 404 (NoSuchBucket)
        return NotS3Error(f"the endpoint answered 404 without an S3 error code to the listing of {where(bucket, key)}: "
                          "it is not an S3 API; check --endpoint-url")
    if status in REDIRECTS:
        return redirect_error(status, headers, bucket, key)
    return translate_code(code or str(status), status, message, bucket, key)


def _client_error(exc: Any, bucket: str, key: str | None) -> HcpsyncError:
    """botocore's ClientError (``404``, the status, standing for the code when the body held none)."""
    err = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    return answer_error(int(meta.get("HTTPStatusCode", 0) or 0), str(err.get("Code", "")), str(err.get("Message", "")),
                        meta.get("HTTPHeaders", {}) or {}, bucket, key,
                        listing=getattr(exc, "operation_name", "") == "ListObjectsV2")


_BOTOCORE = "botocore.exceptions"


def _is_botocore(exc: BaseException) -> bool:
    bce = sys.modules.get(_BOTOCORE)
    return bce is not None and isinstance(exc, bce.BotoCoreError)


def _unreachable(exc: BaseException, bucket: str, key: str | None) -> HcpsyncError:
    url = getattr(exc, "kwargs", {}).get("endpoint_url") if _is_botocore(exc) else None
    return EndpointError(f"cannot connect to the S3 endpoint{f' {url}' if url else ''}: connection refused or unreachable")


def _tls(exc: BaseException, bucket: str, key: str | None) -> HcpsyncError:
    """A TLS failure: an unverifiable certificate names the options that mend it; another, the handshake."""
    inner = getattr(exc, "kwargs", {}).get("error", exc) if _is_botocore(exc) else exc  # aiobotocore wraps aiohttp's
    cert = getattr(inner, "certificate_error", inner)
    if isinstance(cert, ssl.SSLCertVerificationError):
        return CertificateError(
            f"the S3 endpoint's TLS certificate cannot be verified ({cert.verify_message or cert.reason}): "
            "pass --ca-bundle PATH (or set AWS_CA_BUNDLE) with the CA that signed it, or --no-verify-ssl to skip the check"
        )
    why = getattr(getattr(inner, "os_error", inner), "reason", None) or type(inner).__name__
    return CertificateError(f"the TLS handshake with the S3 endpoint failed ({why}): check the scheme of --endpoint-url")


_Builder = Callable[[Any, str, str | None], HcpsyncError]  # (exception, bucket, key)

#: exception classes -> builder, in order: the first entry the exception is an instance of wins; a name
#: is one of botocore's exceptions (anonymous requests to a plain-HTTP endpoint never import botocore)
EXCEPTIONS: tuple[tuple[tuple[type[BaseException] | str, ...], _Builder], ...] = (
    (("ClientError",), _client_error),
    # before the connection errors they also are; a TLS error mid-body stays a (retried) connection error
    (("SSLError", aiohttp.ClientSSLError, ssl.SSLCertVerificationError), _tls),
    (("NoCredentialsError", "PartialCredentialsError"), lambda e, b, k: CredentialsError(
        f"no AWS credentials found. {CREDENTIALS_HINT} (or --no-sign-request for public data)")),
    (("ProfileNotFound",), lambda e, b, k: CredentialsError(f"{e}. {CREDENTIALS_HINT}")),
    (("InvalidRegionError",), lambda e, b, k: UsageError(
        f"invalid region {e.kwargs.get('region_name')!r} (from --region, AWS_DEFAULT_REGION or the profile): "
        "a region name such as us-east-1 or eu-west-2")),
    (("NoRegionError",), lambda e, b, k: CredentialsError("no AWS region configured: pass --region us-east-1")),
    (("EndpointConnectionError", aiohttp.ClientConnectorError, ConnectionRefusedError), _unreachable),
    (("ReadTimeoutError", "ConnectTimeoutError", asyncio.TimeoutError, aiohttp.ServerTimeoutError),
     lambda e, b, k: TransientError(f"timed out on {where(b, k)}")),
    (("IncompleteReadError", aiohttp.ClientPayloadError),
     lambda e, b, k: ShortReadError(f"connection closed before the whole body of {where(b, k)} arrived")),
    (("ResponseStreamingError", "ConnectionClosedError", "HTTPClientError", aiohttp.ClientError, ConnectionError,
      EOFError), lambda e, b, k: TransientError(f"connection error on {where(b, k)}: {type(e).__name__}")),
    (("BotoCoreError",), lambda e, b, k: StorageError(f"{type(e).__name__} on {where(b, k)}: {e}")),
    ((OSError,), lambda e, b, k: TransientError(f"network error on {where(b, k)}: {e.strerror or type(e).__name__}")),
)


@functools.lru_cache(maxsize=2)
def _classes(with_botocore: bool) -> tuple[tuple[tuple[type[BaseException], ...], _Builder], ...]:
    """:data:`EXCEPTIONS` with botocore's names resolved, or left out (``with_botocore`` False)."""
    bce = sys.modules[_BOTOCORE] if with_botocore else None
    table = []
    for classes, build in EXCEPTIONS:
        resolved = tuple(c if not isinstance(c, str) else getattr(bce, c) for c in classes
                         if not isinstance(c, str) or bce is not None)
        if resolved:
            table.append((resolved, build))
    return tuple(table)


def translate(exc: BaseException, bucket: str, key: str | None = None) -> HcpsyncError:
    """Turn any S3/transport exception into an :class:`HcpsyncError` with a one-line message."""
    if isinstance(exc, HcpsyncError):
        return exc
    for classes, build in _classes(_BOTOCORE in sys.modules):
        if isinstance(exc, classes):
            return build(exc, bucket, key)
    return StorageError(f"unexpected {type(exc).__name__} on {where(bucket, key)}")


@contextmanager
def map_exceptions(bucket: str, key: str | None = None) -> Iterator[None]:
    """Raise whatever the block raises as an :class:`HcpsyncError` (:func:`translate`), chained."""
    try:
        yield
    except HcpsyncError:
        raise
    except Exception as exc:
        raise translate(exc, bucket, key) from exc
