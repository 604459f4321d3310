"""Storage: the :class:`ObjectStore` protocol the other stages use, and its S3 implementation.

``base`` (the protocols), ``options`` (:class:`StorageOptions`), ``s3`` (listing, HEAD, GET
orchestration), ``s3_api`` (ListObjectsV2, HEAD), ``s3_http`` (the signed requests, the fast GET),
``body`` (the streamed body and its checks), ``errors`` (translation into :mod:`hcpsync.errors`),
``retry`` (one policy for list, HEAD and GET), ``ratelimit`` (the bandwidth cap).

The names are imported on first use: ``from hcpsync.store import ObjectStore`` (a protocol) loads
no network stack.
"""

from __future__ import annotations

import importlib
import sys

from .base import Body, ObjectStore, StorageStats
from .options import StorageOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def import_in_background(options: StorageOptions | None = None) -> None:
    """Start importing aiohttp, and botocore's session if ``options`` need it, in a thread, so that
    a command's own start-up overlaps them.

    aiohttp's import builds two default TLS contexts, loading the system CA bundle twice (20-50 ms
    each, without the GIL), and a pull opens its journal (SQLite, disk waits) before botocore's
    session: work the thread does while this one waits or another core is free.  The thread is not
    a daemon (the interpreter never stops mid-import); an import that fails there fails again, with
    its message, where it is needed."""
    wanted = ["aiohttp", *(["aiobotocore.session"] if options is not None and options.needs_botocore() else [])]
    names = [name for name in wanted if name not in sys.modules]
    if names:
        import threading

        threading.Thread(target=_import_quietly, args=(names,), name="hcpsync-import").start()


def _import_quietly(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # reported by the import that needs it
            return


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
