"""The manifests of some subjects: fetched from S3 or read from a local tree, and indexed.

HCP publishes, per subject, one manifest per download package with the MD5 of each file::

    HCP_1200/100307/.xdlm/100307_3T_tfMRI_MOTOR_preproc.json

:func:`fetch_manifests` lists ``<release>/<subject>/.xdlm/`` and GETs every manifest,
concurrently; :func:`load_local_manifests` reads them from ``DEST/<subject>/.xdlm/``.  A
malformed manifest, or a bad entry in one, is a one-line *problem* naming the manifest; the
rest goes on.  The result is a :class:`ManifestSet`, whose :class:`ManifestIndex` is the one
place that maps a URI to its checksum and to the manifest that lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Container, Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import CredentialsError, EndpointError, HcpsyncError, ManifestError, SelectionError
from ..models import ObjectInfo, Selection
from ..paths import DestGuard
from ..store import ObjectStore
from .manifest import MANIFEST_DIR, Manifest, ManifestIndex, is_manifest_key, parse_manifest

#: listings and GETs of manifests in flight at once
MANIFEST_CONCURRENCY = 32
#: a manifest bigger than this is refused (real ones are a few hundred KB at most)
MANIFEST_MAX_BYTES = 64 * 1024 * 1024


class ManifestSet:
    """The manifests of some subjects, where they came from, and what was wrong with them.

    ``problems`` are one-line messages, each naming its manifest: files that could not be
    fetched or parsed as a whole, and entries refused inside otherwise good manifests
    (unsafe URIs, malformed checksums, conflicting duplicates).
    """

    def __init__(
        self,
        by_subject: dict[str, list[Manifest]],
        problems: Iterable[str] = (),
        source: str = "",
        raw: Mapping[str, bytes] | None = None,
    ) -> None:
        #: relpath (``<subject>/.xdlm/<name>``) -> the bytes of each manifest fetched from S3
        self.raw = dict(raw or {})
        self.by_subject = {s: tuple(ms) for s, ms in by_subject.items()}
        self.manifests: tuple[Manifest, ...] = tuple(m for ms in self.by_subject.values() for m in ms)
        self.index = ManifestIndex(self.manifests)
        self.source = source
        self.problems: tuple[str, ...] = tuple(problems) + tuple(
            f"manifest {name}: {p}" for name, p in self.index.problems
        )

    @property
    def subjects_without_manifests(self) -> list[str]:
        return [s for s, ms in self.by_subject.items() if not ms]

    def packages(self, subject: str) -> dict[str, Manifest]:
        """package name -> manifest, for one subject."""
        return {m.package: m for m in self.by_subject.get(subject, ())}

    def manifest_of(self) -> dict[str, str]:
        """uri -> name of the first manifest listing it (for messages)."""
        return self.index.sources()

    def package_uris(self, subjects: Sequence[str], packages: Sequence[str]) -> tuple[dict[str, set[str]], list[str]]:
        """subject -> URIs of ``packages`` in that subject's manifests; and notes.

        Raises :class:`SelectionError` (one line, listing the packages available) when a
        package is in no manifest at all.
        """
        self.index.uris_for_packages(packages)  # raises for unknown packages
        restrict: dict[str, set[str]] = {}
        notes: list[str] = []
        for subject in subjects:
            have = self.packages(subject)
            uris: set[str] = set()
            lacking = []
            for pkg in packages:
                m = have.get(pkg)
                if m is None:
                    lacking.append(pkg)
                else:
                    uris.update(e.uri for e in m.entries)
            if lacking:
                notes.append(f"subject {subject} has no package {', '.join(lacking)} (no such .xdlm manifest)")
            restrict[subject] = uris
        return restrict, notes

    def require_some(self, subjects: Sequence[str], where: str) -> None:
        """Raise :class:`SelectionError` (exit 2) when no subject has a usable manifest.

        ``where`` names the folders looked in (``s3://bucket/HCP_1200/<subject>/.xdlm/``).
        """
        if self.manifests:
            return
        names = ", ".join(subjects[:5]) + (" ..." if len(subjects) > 5 else "")
        extra = f" ({len(self.problems)} could not be read)" if self.problems else ""
        raise SelectionError(f"no usable .xdlm manifests under {where} for subject(s) {names}{extra}")


def s3_manifest_folders(bucket: str, release: str) -> str:
    """How messages name the manifest folders of a release on S3."""
    return f"s3://{bucket}/{release + '/' if release else ''}<subject>/{MANIFEST_DIR}/"


def _manifest_problem(name: str, err: HcpsyncError) -> str:
    text = str(err)
    return text if text.startswith("manifest ") else f"manifest {name}: {text}"


async def fetch_manifests(
    storage: ObjectStore,
    bucket: str,
    release: str,
    subjects: Sequence[str],
    *,
    listed: Mapping[str, Sequence[ObjectInfo]] | None = None,
    concurrency: int = MANIFEST_CONCURRENCY,
) -> ManifestSet:
    """Fetch and parse every ``<release>/<subject>/.xdlm/*.json`` of ``subjects``.

    ``listed`` gives, for some subjects, their manifest objects already known from a listing
    (then their ``.xdlm/`` folder is not listed again).  Listing errors stop the run (an
    unreachable endpoint, no credentials); a manifest that cannot be fetched or parsed
    becomes a problem and the others are used.
    """
    sem = asyncio.Semaphore(max(1, concurrency))
    release = release.strip("/") + "/" if release.strip("/") else ""  # empty: subjects at the bucket's top
    raw: dict[str, bytes] = {}

    async def get_one(info: ObjectInfo) -> Manifest | str:
        name = info.key.rsplit("/", 1)[-1]
        async with sem:
            try:
                data = await storage.get_bytes(bucket, info.key, limit=MANIFEST_MAX_BYTES)
            except (EndpointError, CredentialsError):
                raise
            except HcpsyncError as err:
                return _manifest_problem(name, err)
        try:
            manifest = parse_manifest(info.key, data)
        except ManifestError as err:
            return _manifest_problem(name, err)
        raw[info.key[len(release):]] = data
        return manifest

    async def one_subject(subject: str) -> tuple[list[Manifest], list[str]]:
        prefix = f"{release}{subject}/{MANIFEST_DIR}/"
        known = listed.get(subject) if listed is not None else None
        infos: list[ObjectInfo] = []
        if known is not None:
            infos = [o for o in known if _is_manifest_of(o.key, prefix)]
        else:
            async with sem:
                async for objs, _ in storage.list_pages(bucket, prefix):
                    infos.extend(o for o in objs if _is_manifest_of(o.key, prefix))
        results = await asyncio.gather(*(get_one(i) for i in infos))
        return [r for r in results if isinstance(r, Manifest)], [r for r in results if isinstance(r, str)]

    subjects = list(dict.fromkeys(subjects))
    done = await asyncio.gather(*(one_subject(s) for s in subjects))
    problems = [p for _, probs in done for p in probs]
    return ManifestSet({s: ms for s, (ms, _) in zip(subjects, done, strict=True)}, problems, f"s3://{bucket}/{release}",
                       raw)


async def list_manifest_keys(storage: ObjectStore, selection: Selection,
                             concurrency: int = MANIFEST_CONCURRENCY) -> dict[str, list[ObjectInfo]]:
    """subject -> the manifest objects in its ``.xdlm/`` folder (listings only, no GET)."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(subject: str) -> list[ObjectInfo]:
        prefix = f"{selection.subject_prefix(subject)}{MANIFEST_DIR}/"
        async with sem:
            return [o async for objs, _ in storage.list_pages(selection.bucket, prefix) for o in objs
                    if _is_manifest_of(o.key, prefix)]

    found = await asyncio.gather(*(one(s) for s in selection.subjects))
    return dict(zip(selection.subjects, found, strict=True))


def _is_manifest_of(key: str, prefix: str) -> bool:
    """A manifest directly in the folder ``prefix`` (``<release>/<subject>/.xdlm/``)."""
    return key.startswith(prefix) and "/" not in key[len(prefix):] and is_manifest_key(key)


def load_local_manifests(dest: str | os.PathLike[str], subjects: Sequence[str]) -> ManifestSet:
    """Read the manifests already under ``DEST/<subject>/.xdlm/`` (no network)."""
    root = Path(dest)
    inside = os.path.join(os.path.realpath(root), "")
    by_subject: dict[str, list[Manifest]] = {}
    problems: list[str] = []
    for subject in dict.fromkeys(subjects):
        found: list[Manifest] = []
        by_subject[subject] = found
        folder = root / subject / MANIFEST_DIR
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = folder / name
            if not is_manifest_key(f"{subject}/{MANIFEST_DIR}/{name}") or not path.is_file():
                continue
            real = os.path.realpath(path)
            if not real.startswith(inside):  # a symlink out of the tree (a DataLad tree's stay inside)
                problems.append(f"manifest {name}: symlink to {real} outside the tree: not followed")
                continue
            try:
                if path.stat().st_size > MANIFEST_MAX_BYTES:
                    raise ManifestError(f"manifest {name}: over {MANIFEST_MAX_BYTES} bytes")
                found.append(parse_manifest(name, path.read_bytes()))
            except ManifestError as err:
                problems.append(_manifest_problem(name, err))
            except OSError as exc:
                problems.append(f"manifest {name}: cannot read it: {exc.strerror or exc}")
    return ManifestSet(by_subject, problems, f"{root}/<subject>/{MANIFEST_DIR}/")


def keep_manifests(mset: ManifestSet, dest: Path, skip: Container[str] = ()) -> list[str]:
    """Write the manifests fetched from S3 under ``DEST/<subject>/.xdlm/``, as HCP lays them out
    (but those in ``skip``, relpaths the pull fetches itself), so ``verify --offline`` works
    after any pull.  A file already holding the same bytes is left alone; each one written
    through a temp file of this process's own (never the temp file a download of the same key
    may be writing, in this process or in a shard beside it) and a rename, never through a
    symlink.  Returns notes on failures."""
    guard = DestGuard(dest)
    notes: list[str] = []
    for rel, data in sorted(mset.raw.items()):
        if rel in skip:
            continue
        try:
            final = guard.ensure_parent(rel)
            st = guard.final_stat(final)
            if st is not None and st.st_size == len(data) and final.read_bytes() == data:
                continue
            temp = final.with_name(f".{final.name}.hcpsync-keep-{os.getpid()}")
            _write_new(temp, data)
            guard.check_final(final)
            os.replace(temp, final)
        except (HcpsyncError, OSError) as err:
            notes.append(f"could not keep manifest {rel} for offline verification: {getattr(err, 'strerror', None) or err}")
    return notes


def _write_new(path: Path, data: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def manifest_notes(mset: ManifestSet) -> list[str]:
    """Notes for a pull's report: the manifests' problems, and the subjects that have none."""
    notes = list(mset.problems)
    lacking = mset.subjects_without_manifests
    if lacking:
        notes.append(
            f"no .xdlm manifests for subject(s) {', '.join(lacking[:10])}{' ...' if len(lacking) > 10 else ''}: "
            "their files are checked against S3 ETags where those are MD5s"
        )
    return notes
