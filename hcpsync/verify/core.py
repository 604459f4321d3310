"""Compatibility: the names of the old ``verify.py``, now in modules with one job each
(:mod:`.manifests`, :mod:`.checker`, :mod:`.tree`, :mod:`.packages`, :mod:`.cache`).

``plan_for`` / ``resolve_packages`` / ``in_scope`` moved to :mod:`hcpsync.planning` and
``prepare_pull`` / ``PreparedPull`` to :mod:`hcpsync.prepare`; they are looked up there on
first use (verify does not import them).  Import from the new homes; this module goes once
the issue-10 branches are merged.
"""

from __future__ import annotations

import importlib

from . import *  # noqa: F403  (every name the package exports)
from . import __all__ as _package_all
from .checker import ManifestLoader
from .manifests import MANIFEST_CONCURRENCY, MANIFEST_MAX_BYTES
from .tree import STATUSES, Status, VerifyProgress, check_dest, discover_subjects

_MOVED_UP = {
    "plan_for": "hcpsync.planning",
    "resolve_packages": "hcpsync.planning",
    "in_scope": "hcpsync.planning",
    "prepare_pull": "hcpsync.prepare",
    "PreparedPull": "hcpsync.prepare",
}


def __getattr__(name: str) -> object:
    module = _MOVED_UP.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    *_package_all,
    "MANIFEST_CONCURRENCY",
    "MANIFEST_MAX_BYTES",
    "STATUSES",
    "ManifestLoader",
    "Status",
    "VerifyProgress",
    "check_dest",
    "discover_subjects",
]
