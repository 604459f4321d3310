"""Selection -> Plan: the selection's filters (pure functions), the streaming lister, packages
(resolved through the subjects' manifests in :func:`.listing.plan_into`)."""

from .listing import build_plan
from .select import glob_filter, in_scope, minimal_paths, under_path

__all__ = [
    "build_plan",
    "glob_filter",
    "in_scope",
    "minimal_paths",
    "under_path",
]
