"""Listing the download packages of subjects (:func:`list_packages`, ``hcpsync packages``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import TransferConfig
from ..models import DEFAULT_BUCKET, DEFAULT_RELEASE, Selection, as_items
from ..store.s3 import S3Storage, StorageOptions
from .manifests import fetch_manifests, s3_manifest_folders


@dataclass(frozen=True)
class PackageInfo:
    """One download package of one subject."""

    subject: str
    name: str
    manifest: str
    files: int
    bytes: int
    #: files whose size neither the manifest nor the S3 listing gives (not in ``bytes``)
    unsized: int = 0

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"files": self.files, "bytes": self.bytes, "manifest": self.manifest}
        if self.unsized:
            doc["unsized_files"] = self.unsized
        return doc


@dataclass(frozen=True)
class PackagesReport:
    bucket: str
    release: str
    packages: tuple[PackageInfo, ...]
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        subjects: dict[str, dict[str, object]] = {}
        for p in self.packages:
            subjects.setdefault(p.subject, {})[p.name] = p.to_json()
        return {
            "bucket": self.bucket,
            "release": self.release,
            "subjects": subjects,
            "problems": list(self.problems),
        }


async def list_packages(
    subjects: str | Sequence[str],
    *,
    bucket: str = DEFAULT_BUCKET,
    release: str = DEFAULT_RELEASE,
    storage: StorageOptions | None = None,
    config: TransferConfig | None = None,
) -> PackagesReport:
    """The download packages of ``subjects`` with file counts and total sizes.

    Sizes come from the manifest entries; for entries without one, from the S3 listing of
    the subject (listed only when needed).  Raises :class:`SelectionError` when no subject
    has any readable manifest.
    """
    sel = Selection(subjects=as_items(subjects), bucket=bucket, release=release)
    async with S3Storage(storage or StorageOptions(), config or TransferConfig()) as s3:
        mset = await fetch_manifests(s3, sel.bucket, sel.release, sel.subjects)
        mset.require_some(sel.subjects, s3_manifest_folders(sel.bucket, sel.release))
        listed: dict[str, dict[str, int]] = {}
        for subject, ms in mset.by_subject.items():
            if any(e.size is None for m in ms for e in m.entries):
                sizes: dict[str, int] = {}
                prefix = sel.release_prefix
                async for objs, _ in s3.list_pages(sel.bucket, sel.subject_prefix(subject)):
                    sizes.update((o.key[len(prefix):], o.size) for o in objs)
                listed[subject] = sizes
    out: list[PackageInfo] = []
    for subject, ms in mset.by_subject.items():
        sizes = listed.get(subject, {})
        for m in sorted(ms, key=lambda m: m.package):
            total = unsized = 0
            for e in m.entries:
                size = e.size if e.size is not None else sizes.get(e.uri)
                if size is None:
                    unsized += 1
                else:
                    total += size
            out.append(PackageInfo(subject, m.package, m.name, len(m.entries), total, unsized))
    notes = list(mset.problems)
    for s in mset.subjects_without_manifests:
        notes.append(f"subject {s}: no .xdlm manifests")
    return PackagesReport(sel.bucket, sel.release, tuple(out), tuple(notes))
