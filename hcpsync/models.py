"""Typed, frozen records passed between the stages (planner -> transfer -> report)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import HcpsyncError, SelectionError

DEFAULT_BUCKET = "hcp-openaccess"
DEFAULT_RELEASE = "HCP_1200"

_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RELEASE_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def as_items(value: str | Iterable[str]) -> tuple[str, ...]:
    """A sequence of strings as a tuple; a lone string is one item (never its characters)."""
    return (value,) if isinstance(value, str) else tuple(value)


def _clean_rel(path: str, what: str) -> str:
    """Normalise a relative path given by the user; refuse anything that climbs out."""
    p = path.strip().replace("\\", "/").strip("/")
    if not p:
        raise SelectionError(f"empty {what}")
    if path.strip().startswith("/"):
        raise SelectionError(f"{what} {path!r} must be relative (no leading '/')")
    parts = [s for s in p.split("/") if s not in ("", ".")]
    if any(s == ".." for s in parts):
        raise SelectionError(f"{what} {path!r} must not contain '..'")
    if any(ord(c) < 32 for c in p):
        raise SelectionError(f"{what} {path!r} contains control characters")
    return "/".join(parts)


def _check_filters(filters: object) -> tuple[tuple[str, str], ...]:
    if isinstance(filters, str | bytes) or not isinstance(filters, Iterable):
        raise SelectionError("filters must be a sequence of (\"include\" or \"exclude\", glob) pairs")
    out = tuple(tuple(f) if isinstance(f, list | tuple) else f for f in filters)
    for f in out:
        if not (isinstance(f, tuple) and len(f) == 2 and f[0] in ("include", "exclude") and isinstance(f[1], str)):
            raise SelectionError(f"invalid filter {f!r}: expected (\"include\" or \"exclude\", glob)")
    return out


@dataclass(frozen=True, init=False)
class Selection:
    """What to fetch: a release prefix in a bucket, some subjects, and filters.

    ``paths`` are relative to each subject folder and match at path-segment boundaries
    (``T1w`` selects ``T1w/...`` and the key ``T1w`` itself, never ``T1w_extra/``).
    ``filters`` are ``("include" | "exclude", glob)`` pairs applied in order, as aws-cli's
    ``--include`` / ``--exclude``: the last filter matching a key decides, and a key matching none
    is kept unless some filter is an include.  ``includes`` / ``excludes`` are the same filters,
    applied first, includes before excludes (an object is kept when it matches some include, or
    there are none, and no exclude).  A glob (``*`` also matches ``/``) is matched against the key
    relative to the release (``100307/T1w/x.nii.gz``, ``*.nii.gz``), or, when it starts with the
    release, the full key (``HCP_1200/100307/*``), or, when its first segment is a plain name that is
    no selected subject, the key relative to the subject folder (``T1w/*``).  ``packages`` name HCP download packages
    (``3T_tfMRI_MOTOR_preproc``), resolved through each subject's ``.xdlm`` manifests.
    """

    subjects: tuple[str, ...]
    bucket: str = DEFAULT_BUCKET
    release: str = DEFAULT_RELEASE
    paths: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        subjects: str | Iterable[str],
        bucket: str = DEFAULT_BUCKET,
        release: str = DEFAULT_RELEASE,
        paths: str | Iterable[str] = (),
        includes: str | Iterable[str] = (),
        excludes: str | Iterable[str] = (),
        packages: str | Iterable[str] = (),
        filters: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Any iterable of strings (a list, say) where the fields are tuples; a lone string is
        one item, never its letters."""
        items = {"subjects": subjects, "paths": paths, "includes": includes, "excludes": excludes, "packages": packages}
        for name, value in items.items():
            object.__setattr__(self, name, as_items(value))
        object.__setattr__(self, "bucket", bucket)
        object.__setattr__(self, "release", release)
        object.__setattr__(self, "filters", filters)
        self._check()

    def _check(self) -> None:
        if not self.subjects:
            raise SelectionError("no subject selected: give --subject ID or --subjects-file FILE")
        for s in self.subjects:
            if not _SUBJECT_RE.match(s):
                raise SelectionError(f"malformed subject ID {s!r}: expected letters, digits, '_', '-', '.'")
        # keep order, drop duplicates
        object.__setattr__(self, "subjects", tuple(dict.fromkeys(self.subjects)))
        if not _BUCKET_RE.match(self.bucket):
            raise SelectionError(f"invalid bucket name {self.bucket!r}")
        release = self.release.strip("/")
        if release and (not _RELEASE_RE.match(release) or ".." in release.split("/")):
            raise SelectionError(f"invalid release {self.release!r}: expected a key prefix such as HCP_1200")
        object.__setattr__(self, "release", release)
        object.__setattr__(self, "paths", tuple(dict.fromkeys(_clean_rel(p, "--path") for p in self.paths)))
        object.__setattr__(self, "filters", _check_filters(self.filters))
        for pkg in self.packages:
            if not pkg or "/" in pkg or ".." in pkg:
                raise SelectionError(f"invalid package name {pkg!r}")

    def rules(self) -> tuple[tuple[str, str], ...]:
        """Every filter in the order it applies: ``includes``, ``excludes``, then ``filters``."""
        return (*(("include", g) for g in self.includes), *(("exclude", g) for g in self.excludes), *self.filters)

    @property
    def release_prefix(self) -> str:
        """``HCP_1200/``; empty when the release is the bucket's top (subjects are top-level folders)."""
        return f"{self.release}/" if self.release else ""

    @property
    def release_uri(self) -> str:
        return f"s3://{self.bucket}/{self.release_prefix}"

    def subject_prefix(self, subject: str) -> str:
        return f"{self.release_prefix}{subject}/"

    def to_json(self) -> dict[str, object]:
        return {
            "bucket": self.bucket,
            "release": self.release,
            "subjects": list(self.subjects),
            "paths": list(self.paths),
            "includes": list(self.includes),
            "excludes": list(self.excludes),
            "filters": [list(f) for f in self.filters],
            "packages": list(self.packages),
        }

    def as_options(self) -> str:
        """The selection as the command-line options that give it: ``--subject 100307 --path T1w``."""
        subjects = self.subjects if len(self.subjects) <= 5 else ()
        opts = [("--subject", subjects), ("--path", self.paths), ("--include", self.includes),
                ("--exclude", self.excludes), ("--package", self.packages)]
        words = [f"{flag} {shlex.quote(v)}" for flag, values in opts for v in values]
        if not subjects:
            words.insert(0, f"--subjects-file FILE ({len(self.subjects)} subjects)")
        if self.release != DEFAULT_RELEASE:
            words.insert(0, f"--release {shlex.quote(self.release)}")
        if self.bucket != DEFAULT_BUCKET:
            words.insert(0, f"--bucket {shlex.quote(self.bucket)}")
        return " ".join(words)

    @classmethod
    def from_json(cls, doc: object) -> Selection | None:
        """The selection :meth:`to_json` wrote (a journal's), or None when ``doc`` is no valid one."""
        if not isinstance(doc, dict):
            return None
        try:
            return cls(subjects=tuple(doc["subjects"]), bucket=doc["bucket"], release=doc["release"],
                       **{k: tuple(doc.get(k, ())) for k in ("paths", "includes", "excludes", "packages")})
        except (KeyError, TypeError, ValueError, HcpsyncError):
            return None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as S3 lists it.  ``encrypted``: a HEAD said SSE-KMS or SSE-C (so its ETag is
    not an MD5); None when unknown (a listing does not say)."""

    key: str
    size: int
    etag: str
    encrypted: bool | None = None


@dataclass(frozen=True, slots=True)
class PlannedObject:
    """One object to fetch, and where it goes: ``DEST/<relpath>``."""

    key: str
    size: int
    etag: str
    relpath: str

    @property
    def subject(self) -> str:
        return self.relpath.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Failure:
    """An object that could not be fetched, and why: a key the plan refuses (unsafe local path,
    file/folder clash, collision...) or a file that failed during the pull."""

    key: str
    reason: str


#: a listed key the plan refuses: a failure known before any request
Rejected = Failure


@dataclass(frozen=True, slots=True)
class Part:
    """The unit of work: one GET of ``[start, end)`` of one planned object.

    A small object is a single part covering the whole object (``ranged`` False: one GET
    without a Range header).
    """

    obj: PlannedObject
    index: int
    start: int
    end: int
    ranged: bool

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Absent:
    """A file a subject's ``.xdlm`` manifest lists, within the selection, that S3 does not have
    (so no plan holds it): ``path`` relative to the release, its ``subject`` and ``package``."""

    path: str
    subject: str
    package: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "subject": self.subject, "package": self.package}


def coverage_counts(absent: Iterable[Absent]) -> dict[str, dict[str, int]]:
    """subject -> package -> how many of its files are absent from S3 (both sorted by name)."""
    out: dict[str, dict[str, int]] = {}
    for a in sorted(absent, key=lambda a: (a.subject, a.package)):
        per = out.setdefault(a.subject, {})
        per[a.package] = per.get(a.package, 0) + 1
    return out


@dataclass(frozen=True, slots=True)
class ChecksumCounts:
    """What ``pull --checksum`` found of the files already at their final path: files ``hashed``
    (and their ``bytes``; cached checksums are not hashed again), how many ``differed`` (fetched
    again), and how many could not be checked (``unverifiable``: kept)."""

    hashed: int = 0
    bytes: int = 0
    differed: int = 0
    unverifiable: int = 0

    def to_json(self) -> dict[str, int]:
        return {"hashed": self.hashed, "bytes": self.bytes, "differed": self.differed, "unverifiable": self.unverifiable}


@dataclass(frozen=True)
class PullReport:
    """What a pull did.  ``ok`` is True when no object failed."""

    planned_files: int
    planned_bytes: int
    transferred_files: int
    transferred_bytes: int
    skipped_files: int
    skipped_bytes: int
    failed: tuple[Failure, ...]
    elapsed: float
    retries: int = 0
    requests: int = 0
    notes: tuple[str, ...] = field(default=())
    verified_files: int = 0
    unverified_files: int = 0
    #: the destination folder, and the journal that makes the pull resumable (None: ``journal=False``)
    dest: str = ""
    journal: str | None = None
    #: worker processes that fetched parts (0: every byte came through this process)
    workers: int = 0
    #: ``checksum=True`` (``--checksum``): what checking the files already present found
    checksum: ChecksumCounts | None = None
    #: manifest files within the selection that S3 does not have (None: no manifest was loaded)
    absent: tuple[Absent, ...] | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def rate(self) -> float:
        """Mean bytes per second over the run."""
        return self.transferred_bytes / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        """The report as plain JSON data (what ``pull --json`` prints): counts of files and bytes,
        every failure with its key and reason, the destination and the journal."""
        return {
            "ok": self.ok,
            "dest": self.dest,
            "journal": self.journal,
            "planned": {"files": self.planned_files, "bytes": self.planned_bytes},
            "transferred": {"files": self.transferred_files, "bytes": self.transferred_bytes},
            "skipped": {"files": self.skipped_files, "bytes": self.skipped_bytes},
            "failed": [{"key": f.key, "reason": f.reason} for f in self.failed],
            "verified": self.verified_files,
            "unverified": self.unverified_files,
            "elapsed_seconds": round(self.elapsed, 3),
            "mean_rate_bytes_per_second": round(self.rate, 1),
            "requests": self.requests,
            "retries": self.retries,
            "workers": self.workers,
            "checksum": self.checksum.to_json() if self.checksum is not None else None,
            "absent_from_s3": [a.to_json() for a in self.absent] if self.absent is not None else None,
            "coverage": coverage_counts(self.absent) if self.absent is not None else None,
            "notes": list(self.notes),
        }

