"""Selection -> Plan: the selection's filters (pure functions), the S3 listing, packages."""

from .listing import build_plan
from .packages import plan_for, resolve_packages
from .select import glob_filter, in_scope, minimal_paths, under_path

__all__ = [
    "build_plan",
    "glob_filter",
    "in_scope",
    "minimal_paths",
    "plan_for",
    "resolve_packages",
    "under_path",
]
