"""A pull's report, from what its plan and its pool rounds came to."""

from __future__ import annotations

from dataclasses import dataclass

from .engine.pool import PoolResult
from .models import PullReport, Rejected
from .verify.checker import PullVerifier


@dataclass(frozen=True)
class PlanSummary:
    """What the plan of a run came to: files and bytes planned, keys refused."""

    files: int
    bytes: int
    rejected: list[Rejected]


def pull_report(planned: PlanSummary, res: PoolResult, notes: list[str], verifier: PullVerifier | None, requests: int,
                elapsed: float) -> PullReport:
    """The report of a pull (``dest``, ``journal``, ``workers`` and the rest are added by the caller)."""
    failed = [*planned.rejected, *res.failed()]
    return PullReport(
        planned_files=planned.files,
        planned_bytes=planned.bytes,
        transferred_files=res.transferred_files,
        transferred_bytes=res.transferred_bytes,
        skipped_files=res.skipped_files,
        skipped_bytes=res.skipped_bytes,
        failed=tuple(failed),
        elapsed=elapsed,
        retries=res.retries,
        requests=requests,
        notes=tuple(notes),
        verified_files=verifier.verified_files if verifier is not None else 0,
        unverified_files=verifier.unverified_files if verifier is not None else 0,
    )
