"""Coverage: the files the subjects' ``.xdlm`` manifests list, within the selection (and the
shard), that the plan does not hold because S3 does not have them.

They are their own category in the reports of ``pull`` and ``plan``, per subject and package:
not failures (nothing could fetch them), and not silence either (HCP's manifests describe the
release as published; a file missing from the bucket is worth knowing about).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..journal.plan import PlanTable
from ..models import Absent, Selection
from ..shard import Shard
from ..verify.manifest import Manifest
from .select import in_scope


def absent_from_s3(manifests: Iterable[Manifest], selection: Selection, table: PlanTable,
                   shard: Shard | None = None) -> tuple[Absent, ...]:
    """The manifest entries within ``selection`` (its ``packages`` only, when it names some) and
    ``shard`` that ``table`` neither plans nor refused; each path once, under the first package
    listing it, in path order.  The plan is read one subject at a time."""
    prefix = selection.release_prefix
    subjects = set(shard.subjects(selection.subjects) if shard is not None else selection.subjects)
    held: tuple[str, set[str]] = ("", set())  # one subject's plan at a time: memory bounded by a subject
    out: dict[str, Absent] = {}
    for m in sorted(manifests, key=lambda m: m.subject):
        if selection.packages and m.package not in selection.packages:
            continue
        for e in m.entries:
            subject = e.uri.partition("/")[0]
            if e.uri in out or subject not in subjects or not in_scope(e.uri, selection):
                continue
            if shard is not None and not shard.has_key(prefix + e.uri):
                continue
            if held[0] != subject:
                held = (subject, _held(table, prefix, subject))
            if e.uri not in held[1]:
                out[e.uri] = Absent(e.uri, subject, m.package)
    return tuple(sorted(out.values(), key=lambda a: a.path))


def _held(table: PlanTable, prefix: str, subject: str) -> set[str]:
    """The release-relative paths of one subject the plan holds, or refused (a refusal is a failure)."""
    refused = {k[len(prefix):] for k in table.rejected_keys_of(f"{prefix}{subject}/")}
    return table.relpaths_of(subject) | refused
