"""One renderer for every result the CLI prints: ``render(result, as_json)``.

JSON goes to stdout as plain ASCII (``ensure_ascii``: control, bidi and all non-ASCII characters
come out as ``\\u`` escapes); text goes line by line through :func:`hcpsync.text.say`, escaped.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import singledispatch
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

from ..models import Absent, ChecksumCounts, PullReport, Selection, coverage_counts
from ..text import human, say

if TYPE_CHECKING:  # each is imported by the command that makes it: rendering imports none of them
    from ..doctor import DoctorReport
    from ..journal import JournalStatus
    from ..planfile import Plan
    from ..repair import RepairReport
    from ..verify.packages import PackagesReport
    from ..verify.report import VerifyReport

Result: TypeAlias = "Plan | PullReport | VerifyReport | RepairReport | JournalStatus | PackagesReport | DoctorReport"


def render(result: Result, as_json: bool, out: TextIO | None = None) -> None:
    """Print ``result`` as JSON or as text, on ``out`` (default: stdout)."""
    out = out or sys.stdout
    if as_json:
        json.dump(result.to_json(), out, indent=1, ensure_ascii=True)
        out.write("\n")
        return
    for line in text_lines(result):
        say(line, out)


@singledispatch
def text_lines(result: object) -> Iterator[str]:
    """The text form of ``result``, line by line (unescaped: :func:`render` escapes)."""
    lines = _BY_NAME.get(f"{type(result).__module__}.{type(result).__qualname__}")
    if lines is None:
        raise TypeError(f"no text form for {type(result).__name__}")
    return lines(result)


#: the text form of a plan lists subjects one a line up to this many, then the largest ones
_SUBJECT_LINES = 50


def _plan(plan: Plan) -> Iterator[str]:
    sel = plan.selection
    yield f"{sel.release_uri}: {plan.files} files, {human(plan.total_bytes)} ({plan.total_bytes} bytes)"
    subjects = plan.per_subject()
    shown = list(subjects.items())
    if len(shown) > _SUBJECT_LINES:
        yield f"  {len(shown)} subjects; the {_SUBJECT_LINES} largest:"
        shown = sorted(shown, key=lambda kv: -kv[1][1])[:_SUBJECT_LINES]
    for subject, (n, b) in shown:
        yield f"  {subject}: {n} files, {human(b)}"
    top = plan.top_folders()
    if top:
        yield "  largest folders (across subjects):"
        for folder, n, b in top:
            yield f"    {folder}: {n} files, {human(b)}"
    rejected = plan.rejected
    for r in rejected[:50]:
        yield f"  refused '{r.key}': {r.reason}"
    if len(rejected) > 50:
        yield f"  ... and {len(rejected) - 50} more refused (see --json)"
    for note in plan.notes:
        yield f"  note: {note}"
    if plan.absent is None:
        yield "  coverage: not compared with the .xdlm manifests (hcpsync plan --coverage does: one GET a manifest)"
    else:
        yield from _absent_lines(plan.absent)


def _absent_lines(absent: Sequence[Absent]) -> Iterator[str]:
    """Files the manifests list that S3 does not have: counts per subject and package, then the first paths."""
    yield f"{'absent':<12} {len(absent):>8} files  listed in the .xdlm manifests, not on S3 (not failures)"
    for subject, packages in coverage_counts(absent).items():
        yield f"  {subject}: " + ", ".join(f"{pkg} {n}" for pkg, n in packages.items())
    for a in absent[:20]:
        yield f"  ABSENT {a.path} ({a.package})"
    if len(absent) > 20:
        yield f"  ... and {len(absent) - 20} more absent from S3 (see --json)"


def _checksum_line(c: ChecksumCounts) -> str:
    return (f"{'checksum':<12} {c.hashed:>8} files  {human(c.bytes):>11} hashed; {c.differed} differed (fetched "
            f"again), {c.unverifiable} unverifiable (kept)")


@text_lines.register
def _pull(report: PullReport) -> Iterator[str]:
    rows = [
        ("planned", report.planned_files, report.planned_bytes),
        ("transferred", report.transferred_files, report.transferred_bytes),
        ("skipped", report.skipped_files, report.skipped_bytes),
    ]
    for label, n, b in rows:
        yield f"{label:<12} {n:>8} files  {human(b):>11}"
    yield f"{'failed':<12} {len(report.failed):>8} files"
    if report.verified_files or report.unverified_files:
        yield f"{'verified':<12} {report.verified_files:>8} files  ({report.unverified_files} size-checked only)"
    if report.checksum is not None:
        yield _checksum_line(report.checksum)
    yield (f"elapsed {report.elapsed:.2f} s, mean rate {human(report.rate)}/s, "
           f"{report.requests} requests, {report.retries} retries")
    for f in report.failed[:10]:
        yield f"  FAILED {f.key}: {f.reason}"
    if len(report.failed) > 10:
        yield f"  ... and {len(report.failed) - 10} more (see --json)"
    if report.absent:
        yield from _absent_lines(report.absent)
    for note in report.notes[:20]:
        yield f"  note: {note}"
    if report.dest:
        yield f"destination {report.dest}"
        yield f"journal     {report.journal or 'none (--no-journal): only complete files are kept for a re-run'}"
    if report.failed:
        yield retry_hint(report)


def retry_hint(report: PullReport) -> str:
    """What to do after a pull with failures."""
    return f"run the same command again to retry the {len(report.failed)} failed (complete files are skipped)"


def _verify(report: VerifyReport) -> Iterator[str]:
    c = report.counts
    yield f"{report.dest} against {report.source}: {len(report.subjects)} subject(s)"
    for status in c:
        yield f"{status:<15} {c[status]:>8} files"
    yield (f"hashed {report.hashed_files} files, {human(report.hashed_bytes)} in {report.hash_seconds:.2f} s "
           f"({report.rate / 1e6:.1f} MB/s, {report.jobs} threads); {report.cached_files} from the checksum cache")
    by_etag = report.ok_by_etag
    if by_etag:
        multipart = sum("multipart" in c.detail for c in by_etag)
        yield f"ok by their S3 ETag (no manifest lists them): {len(by_etag)} files, {multipart} of them multipart"
    for chk in report.by_status("mismatched")[:50]:
        why = chk.detail or f"expected {chk.expected}, got {chk.actual}"
        yield f"  MISMATCHED {chk.relpath}: {why}"
    for status in ("refused", "missing", "unlisted", "unverifiable"):
        items = [chk for chk in report.checks if chk.status == status]
        for chk in items[:20]:
            yield f"  {status.upper()} {chk.relpath}{': ' + chk.detail if chk.detail else ''}"
        if len(items) > 20:
            yield f"  ... and {len(items) - 20} more {status} (see --json)"
    yield from _coverage(report)
    for problem in report.problems[:20]:
        yield f"  problem: {problem}"
    for note in report.notes:
        yield f"  note: {note}"


def _coverage(report: VerifyReport) -> Iterator[str]:
    """The files a manifest lists that S3 does not hold, per subject and package, then the first paths."""
    absent = report.absent_from_s3
    if not absent:
        return
    on_disk = len(absent) - report.counts["absent_from_s3"]
    yield (f"listed in a manifest, absent from S3: {len(absent)} file(s)"
           + (f" ({on_disk} of them on disk, checked against the manifest)" if on_disk else ""))
    for subject, packages in report.coverage.items():
        for package, n in packages.items():
            yield f"  {subject}  {package or '(no package)'}: {n} file(s)"
    for a in absent[:20]:
        yield f"  ABSENT_FROM_S3 {a.path}"
    if len(absent) > 20:
        yield f"  ... and {len(absent) - 20} more absent from S3 (see --json)"


def _status(st: JournalStatus) -> Iterator[str]:
    if not st.path:
        yield f"nothing pulled into {st.dest} yet (it has no hcpsync journal)"
        yield f"start with: hcpsync pull --subject ID --dest {shlex.quote(st.dest)}"
        return
    yield f"journal {st.path}"
    yield f"{'complete':<9} {st.files_complete:>8} files  {human(st.bytes_complete):>11}"
    yield f"{'partial':<9} {st.files_partial:>8} files  {human(st.bytes_partial_done):>11} done"
    yield f"{'pending':<9} {st.files_pending:>8} files  {human(st.bytes_pending):>11}"
    yield f"{'total':<9} {st.files_total:>8} files  {human(st.bytes_total):>11}"
    if st.last_run:
        lr = st.last_run
        yield f"last run: started {lr['started']}, {'ended ' + lr['ended'] if lr['ended'] else 'not ended'}: {lr['outcome']}"
    yield f"active: {'yes, pid ' + str(st.active_pid) if st.active_pid else 'no'}"
    yield from _shard_lines(st)
    sel = Selection.from_json(st.selection)
    if sel is not None:
        yield f"selection: {sel.as_options()}"
        todo = st.files_partial + st.files_pending
        what = f"to resume ({todo} files to go)" if todo else "to update"
        shard = " --shard K/N (each unfinished shard)" if st.shards else ""
        yield (f"{what}: hcpsync pull {sel.as_options()} --dest {shlex.quote(st.dest)}{shard} "
               "(with your --profile or --endpoint-url)")


def _shard_lines(st: JournalStatus) -> Iterator[str]:
    """One line a shard: its state, files complete of its total, bytes, and its PID while it runs."""
    if not st.shards:
        return
    states = [s.state for s in st.shards]
    yield f"shards: {len(states)} ({', '.join(f'{states.count(x)} {x}' for x in dict.fromkeys(states))})"
    for s in st.shards:
        c = s.status
        pid = f"  pid {c.active_pid}" if c.active_pid else ""
        yield (f"  {s.name:<16} {s.state:<9} {c.files_complete:>8} of {c.files_total:<8} files  "
               f"{human(c.bytes_complete):>11} of {human(c.bytes_total)}{pid}")


def _packages(rep: PackagesReport) -> Iterator[str]:
    for p in rep.packages:
        unsized = f" (+{p.unsized} of unknown size)" if p.unsized else ""
        yield f"{p.subject}  {p.name:<40} {p.files:>7} files  {human(p.bytes):>11}{unsized}"
    for problem in rep.problems:
        yield f"  problem: {problem}"


def _doctor(rep: DoctorReport) -> Iterator[str]:
    for c in rep.checks:
        yield f"{c.status.upper():<5} {c.name:<20} {c.detail}{f' -> {c.advice}' if c.advice else ''}"


#: the text forms of the results whose classes this module does not import (by the class's full name)
def _repair(rep: RepairReport) -> Iterator[str]:
    """The tree as the second check found it, then what was repaired and what could not be."""
    yield from text_lines(rep.report)
    if rep.after is None:
        yield "repair: nothing to repair"
        return
    yield f"repair: {len(rep.repaired)} of {len(rep.items)} file(s) repaired"
    for item in rep.repaired[:50]:
        yield f"  REPAIRED {item.path} (was {item.was})"
    if len(rep.repaired) > 50:
        yield f"  ... and {len(rep.repaired) - 50} more repaired (see --json)"
    for item in rep.unrepaired[:50]:
        yield f"  NOT REPAIRED {item.path} (was {item.was}, now {item.now}){': ' + item.reason if item.reason else ''}"


_BY_NAME: dict[str, Callable[[Any], Iterator[str]]] = {
    "hcpsync.planfile.Plan": _plan,
    "hcpsync.verify.report.VerifyReport": _verify,
    "hcpsync.journal.status.JournalStatus": _status,
    "hcpsync.verify.packages.PackagesReport": _packages,
    "hcpsync.doctor.DoctorReport": _doctor,
    "hcpsync.repair.RepairReport": _repair,
}
