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


#: a filter rule: (True for include, the glob, what it is matched against: "release", "subject" or "key")
Rule = tuple[bool, str, str]
_GLOB_CHARS = frozenset("*?[")


def pattern_target(pattern: str, selection: Selection) -> str:
    """What ``pattern`` is matched against, read from its first segment: the full key when it
    starts with the release (``HCP_1200/100307/*``); the key relative to the subject folder when
    its first segment is a plain name that is no selected subject (``T1w/*``, as ``--path``);
    else the key relative to the release (``100307/T1w/*``, ``*.nii.gz``).  A pattern of the
    first two kinds could match no release-relative key, so no pattern changes meaning."""
    first = pattern.split("/", 1)[0]
    if first in selection.subjects or _GLOB_CHARS & set(first):
        return "release"
    if selection.release and pattern.startswith(selection.release + "/"):
        return "key"
    return "subject"


def compile_filters(selection: Selection) -> tuple[Rule, ...]:
    """The selection's filters in the order they apply (``includes`` and ``excludes`` first)."""
    return tuple((kind == "include", g, pattern_target(g, selection)) for kind, g in selection.rules())


def rules_filter(relpath: str, rules: tuple[Rule, ...], release: str) -> bool:
    """aws-cli's rule: filters apply in order and the last one matching the key decides.
    A key matching none is kept unless some filter is an include (``--include`` alone narrows)."""
    forms = {"release": relpath, "subject": relpath.partition("/")[2],
             "key": f"{release}/{relpath}" if release else relpath}
    keep = not any(include for include, _, _ in rules)
    for include, glob, target in rules:
        if fnmatchcase(forms[target], glob):
            keep = include
    return keep


def in_scope(relpath: str, selection: Selection) -> bool:
    """Whether a release-relative path passes the selection's subjects, paths and globs."""
    subject, _, rest = relpath.partition("/")
    if subject not in selection.subjects:
        return False
    if selection.paths and not any(under_path(rest, p) for p in selection.paths):
        return False
    return rules_filter(relpath, compile_filters(selection), selection.release)
