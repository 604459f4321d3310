"""The merged report of a sharded pull: what each shard task returned (:class:`ShardOutcome`),
summed into one :class:`~hcpsync.models.PullReport` (:func:`merge`).  No Dask needed here: the CLI
renders shard outcomes without importing ``distributed``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .models import Absent, ChecksumCounts, Failure, PullReport
from .shard import SHARDS_DIR, Shard


@dataclass(frozen=True)
class ShardOutcome:
    """What a shard task returns: its report, or the error another try would not mend."""

    shard: Shard
    report: PullReport | None = None
    error: str | None = None
    worker: str = ""
    #: the error is one another try would not mend (not retried), rather than retries spent
    final: bool = False
    #: the class of that error (``SelectionError``, ``InsufficientSpaceError``...)
    kind: str = ""


def merge(outcomes: list[ShardOutcome], dest: str, elapsed: float) -> PullReport:
    """One report of the shards': counts summed, every failure, each note prefixed with its shard;
    a failed shard is one failure (key ``shard K/N``).  Raises UsageError when every shard failed
    with an error another try would not mend, all of one kind (a usage error, or too little space
    for each: exit 2)."""
    outcomes = sorted(outcomes, key=lambda o: o.shard.index)
    reports = [o.report for o in outcomes if o.report is not None]
    errors = [o for o in outcomes if o.report is None]
    if outcomes and not reports and all(o.final for o in errors) and len({o.kind for o in errors}) == 1:
        where = "" if len({o.error for o in errors}) == 1 else f"shard {errors[0].shard}: "
        raise UsageError(f"{where}{errors[0].error} (every shard: {len(errors)} of {len(outcomes)})")
    failed = [f for r in reports for f in r.failed]
    failed += [Failure(f"shard {o.shard}", f"{o.error}; pull it again: the same command, or --shard {o.shard.index}/"
                                           f"{o.shard.count}") for o in errors]
    notes = [f"shard {o.shard}: {n}" for o in outcomes if o.report is not None for n in o.report.notes]
    if errors:
        notes.append(f"{len(errors)} of {len(outcomes)} shard(s) failed; the others are complete in their journals")
    return PullReport(
        planned_files=sum(r.planned_files for r in reports), planned_bytes=sum(r.planned_bytes for r in reports),
        transferred_files=sum(r.transferred_files for r in reports),
        transferred_bytes=sum(r.transferred_bytes for r in reports),
        skipped_files=sum(r.skipped_files for r in reports), skipped_bytes=sum(r.skipped_bytes for r in reports),
        failed=tuple(failed), elapsed=elapsed, retries=sum(r.retries for r in reports),
        requests=sum(r.requests for r in reports), notes=tuple(notes),
        verified_files=sum(r.verified_files for r in reports), unverified_files=sum(r.unverified_files for r in reports),
        dest=reports[0].dest if reports else dest, journal=str(Path(dest) / ".hcpsync" / SHARDS_DIR),
        workers=sum(max(r.workers, 1) for r in reports), checksum=_checksums(reports), absent=_absent(reports),
    )


def _checksums(reports: list[PullReport]) -> ChecksumCounts | None:
    """The shards' ``--checksum`` counts, summed (None when no shard checked)."""
    mine = [r.checksum for r in reports if r.checksum is not None]
    if not mine:
        return None
    return ChecksumCounts(sum(c.hashed for c in mine), sum(c.bytes for c in mine), sum(c.differed for c in mine),
                          sum(c.unverifiable for c in mine))


def _absent(reports: list[PullReport]) -> tuple[Absent, ...] | None:
    """The files absent from S3 the shards found, once each (None when no shard loaded manifests)."""
    found = [a for r in reports if r.absent is not None for a in r.absent]
    if not found and all(r.absent is None for r in reports):
        return None
    return tuple(sorted(set(found), key=lambda a: a.path))
