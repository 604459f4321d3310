"""What ``verify`` found: one :class:`FileCheck` a file, the coverage, and the :class:`VerifyReport`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..models import Absent, coverage_counts

Status = Literal["ok", "mismatched", "missing", "refused", "absent_from_s3", "unlisted", "unverifiable"]
STATUSES: tuple[Status, ...] = ("ok", "mismatched", "missing", "refused", "absent_from_s3", "unlisted", "unverifiable")
#: the statuses that make a verify fail (exit 1)
FAILURES: tuple[Status, ...] = ("mismatched", "missing", "refused")


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One file's verdict.  ``relpath`` is relative to DEST (``100307/T1w/x.nii.gz``);
    ``by_etag``: checked against its S3 ETag (no manifest lists it)."""

    relpath: str
    status: Status
    expected: str | None = None
    actual: str | None = None
    size: int | None = None
    detail: str = ""
    by_etag: bool = False

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.relpath}
        if self.expected is not None or self.status == "mismatched":
            doc["expected"] = self.expected
        if self.actual is not None or self.status == "mismatched":
            doc["actual"] = self.actual
        if self.size is not None:
            doc["size"] = self.size
        if self.detail:
            doc["detail"] = self.detail
        return doc


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found.  ``ok`` is True when nothing is mismatched, missing or refused
    (files absent from S3 are not failures).  ``absent_from_s3``: every file a manifest lists
    within the selection that S3 does not hold (on disk or not; empty offline)."""

    dest: str
    source: str
    subjects: tuple[str, ...]
    checks: tuple[FileCheck, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    hashed_files: int
    hashed_bytes: int
    hash_seconds: float
    cached_files: int
    jobs: int
    elapsed: float
    absent_from_s3: tuple[Absent, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for c in self.checks:
            out[c.status] += 1
        return out

    def by_status(self, status: Status) -> list[FileCheck]:
        return [c for c in self.checks if c.status == status]

    @property
    def ok(self) -> bool:
        counts = self.counts
        return not any(counts[s] for s in FAILURES)

    @property
    def ok_by_etag(self) -> list[FileCheck]:
        """The ok files no manifest lists, checked against their S3 ETag."""
        return [c for c in self.checks if c.status == "ok" and c.by_etag]

    @property
    def coverage(self) -> dict[str, dict[str, int]]:
        """subject -> package -> files its manifest lists that S3 does not hold."""
        return coverage_counts(self.absent_from_s3)

    @property
    def rate(self) -> float:
        """Hashing throughput, bytes per second."""
        return self.hashed_bytes / self.hash_seconds if self.hash_seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dest": self.dest,
            "manifests": self.source,
            "subjects": list(self.subjects),
            "counts": self.counts,
            "hashed": {
                "files": self.hashed_files,
                "bytes": self.hashed_bytes,
                "seconds": round(self.hash_seconds, 3),
                "mb_per_second": round(self.rate / 1e6, 1),
                "jobs": self.jobs,
            },
            "cached": self.cached_files,
            "elapsed_seconds": round(self.elapsed, 3),
            **{s: [c.to_json() for c in self.by_status(s)] for s in STATUSES if s not in ("ok", "absent_from_s3")},
            "ok_by_s3_etag": [c.to_json() for c in self.ok_by_etag],
            "absent_from_s3": [a.to_json() for a in self.absent_from_s3],
            "coverage": self.coverage,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }
