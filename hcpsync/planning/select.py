"""The selection's filters, as pure functions on paths (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from ..models import Selection


def minimal_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """Drop paths inside another selected path (``T1w/xfms`` when ``T1w`` is selected)."""
    out: list[str] = []
    for p in sorted(set(paths)):
        if not any(p == q or p.startswith(q + "/") for q in out):
            out.append(p)
    return tuple(out)


def under_path(rel_to_subject: str, path: str) -> bool:
    """Segment-boundary match: ``T1w`` matches ``T1w`` and ``T1w/...``, never ``T1w_extra/``."""
    return rel_to_subject == path or rel_to_subject.startswith(path + "/")


def glob_filter(relpath: str, includes: tuple[str, ...], excludes: tuple[str, ...]) -> bool:
    """Whether ``relpath`` matches some include (or there are none) and no exclude."""
    if includes and not any(fnmatchcase(relpath, g) for g in includes):
        return False
    return not any(fnmatchcase(relpath, g) for g in excludes)


def in_scope(relpath: str, selection: Selection) -> bool:
    """Whether a release-relative path passes the selection's subjects, paths and globs."""
    subject, _, rest = relpath.partition("/")
    if subject not in selection.subjects:
        return False
    if selection.paths and not any(under_path(rest, p) for p in selection.paths):
        return False
    return glob_filter(relpath, selection.includes, selection.excludes)
