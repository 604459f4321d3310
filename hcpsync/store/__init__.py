"""Storage: the :class:`ObjectStore` protocol the other stages use, and its S3 implementation.

``base`` (the protocols), ``options`` (:class:`StorageOptions`), ``s3`` (listing, HEAD, GET
orchestration), ``s3_api`` (ListObjectsV2, HEAD), ``s3_http`` (the signed requests, the fast GET),
``body`` (the streamed body and its checks), ``errors`` (translation into :mod:`hcpsync.errors`),
``retry`` (one policy for list, HEAD and GET), ``ratelimit`` (the bandwidth cap).

The names are imported on first use: ``from hcpsync.store import ObjectStore`` (a protocol) loads
no network stack.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .base import Body, ObjectStore, StorageStats
from .options import StorageOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import map_exceptions, translate, translate_code
    from .ratelimit import RateLimiter
    from .retry import RetryPolicy
    from .s3 import S3Storage

_LAZY = {
    **dict.fromkeys(("map_exceptions", "translate", "translate_code"), ".errors"),
    "RateLimiter": ".ratelimit",
    "RetryPolicy": ".retry",
    "S3Storage": ".s3",
}

__all__ = [
    "Body",
    "ObjectStore",
    "RateLimiter",
    "RetryPolicy",
    "S3Storage",
    "StorageOptions",
    "StorageStats",
    "map_exceptions",
    "translate",
    "translate_code",
]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
