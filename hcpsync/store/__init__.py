"""Storage: the :class:`ObjectStore` protocol the other stages use, and its S3 implementation.

``base`` (the protocols), ``s3`` (listing, HEAD, GET orchestration), ``s3_http`` (the fast GET),
``body`` (the streamed body and its checks), ``errors`` (translation into :mod:`hcpsync.errors`),
``retry`` (one policy for list, HEAD and GET), ``ratelimit`` (the bandwidth cap).
"""

from .base import Body, ObjectStore, StorageStats
from .errors import map_exceptions, translate, translate_code
from .ratelimit import RateLimiter
from .retry import RetryPolicy
from .s3 import S3Storage, StorageOptions

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
