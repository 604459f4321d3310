"""Parse HCP ``.xdlm`` download manifests and index them.

Each HCP subject folder holds one manifest per download package::

    HCP_1200/100307/.xdlm/100307_3T_tfMRI_MOTOR_preproc.json

A manifest is (usually) one line of JSON::

    {"DownloadManifest": {"Includes": [{"URI": "100307/MNINonLinear/...", "Checksum": "<md5>"}, ...]}}

URIs are relative to the release root (``HCP_1200/``).  Parsing is pure (no S3 I/O) and
defensive: unknown fields are ignored, key names are matched case-insensitively, a bare JSON
list of entries or a pretty-printed file is accepted.  A file that is unusable as a whole
raises :class:`~hcpsync.errors.ManifestError`; an entry that is bad on its own (unsafe URI,
malformed checksum, not an object, conflicting duplicate) is recorded in
:attr:`Manifest.problems` and the other entries are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ManifestError, SelectionError, UnsafePathError
from ..paths import check_relpath
from .hashing import is_md5

MANIFEST_DIR = ".xdlm"

_FIELD_RE = re.compile(r"^([37]T)_")
# Key spellings accepted (compared after lower-casing).
_URI_KEYS = ("uri",)
_CHECKSUM_KEYS = ("checksum", "md5", "md5sum", "md5checksum")
_CHECKSUM_TYPE_KEYS = ("checksumtype", "checksumalgorithm")
_SIZE_KEYS = ("size", "filesize", "bytes", "length", "contentlength")
_WRAPPER_KEYS = ("downloadmanifest",)
_INCLUDES_KEYS = ("includes",)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file a manifest lists: its URI relative to the release root, MD5 and size if known."""

    uri: str
    md5: str | None
    size: int | None


@dataclass(frozen=True)
class Manifest:
    """One parsed ``.xdlm`` manifest.

    ``name`` is the file name (``100307_3T_tfMRI_MOTOR_preproc.json``), ``package`` the
    download package it describes (``3T_tfMRI_MOTOR_preproc``), ``field`` the scanner
    strength (``"3T"``, ``"7T"`` or None).  ``entries`` are unique by URI; ``problems`` are
    one-line descriptions of the entries that were refused or are doubtful.
    """

    name: str
    subject: str
    field: str | None
    package: str
    entries: tuple[ManifestEntry, ...]
    problems: tuple[str, ...] = ()


# --- names ---------------------------------------------------------------------------------


def manifest_name_info(filename: str) -> tuple[str, str | None, str]:
    """``100307_3T_tfMRI_MOTOR_preproc.json`` -> ``("100307", "3T", "3T_tfMRI_MOTOR_preproc")``.

    A key or path is accepted too (only its last segment is used).  Raises
    :class:`ManifestError` if the name is not ``<subject>_<package>.json``.
    """
    base = filename.rsplit("/", 1)[-1]
    if not base.lower().endswith(".json"):
        raise ManifestError(f"manifest {base!r}: name does not end in .json")
    stem = base[: -len(".json")]
    subject, sep, package = stem.partition("_")
    if not sep or not subject or not package:
        raise ManifestError(f"manifest {base!r}: name is not <subject>_<package>.json")
    m = _FIELD_RE.match(package)
    return subject, (m.group(1) if m else None), package


def is_manifest_key(key: str) -> bool:
    """True for a key shaped ``<...>/<subject>/.xdlm/<subject>_<package>.json``."""
    parts = key.split("/")
    if len(parts) < 3 or parts[-2] != MANIFEST_DIR:
        return False
    subject, name = parts[-3], parts[-1]
    if not subject or not name.lower().endswith(".json"):
        return False
    return name.startswith(subject + "_") and len(name) > len(subject) + 1 + len(".json")


# --- parsing -------------------------------------------------------------------------------


def merge_entries(prev: ManifestEntry, entry: ManifestEntry) -> tuple[ManifestEntry, bool]:
    """One entry for a URI listed twice, and whether the two copies conflict.

    Copies with different checksums conflict: the URI keeps no checksum (it cannot be
    verified), and its size only if both agree.  Otherwise each copy fills in what the
    other lacks (the first copy wins where both know).
    """
    if prev.md5 is not None and entry.md5 is not None and prev.md5 != entry.md5:
        return ManifestEntry(entry.uri, None, prev.size if prev.size == entry.size else None), True
    return ManifestEntry(
        entry.uri,
        prev.md5 if prev.md5 is not None else entry.md5,
        prev.size if prev.size is not None else entry.size,
    ), False


def _get(obj: Mapping[str, object], names: tuple[str, ...]) -> tuple[bool, object]:
    """Look a key up case-insensitively: (found, value).  The first spelling in ``names`` wins."""
    lowered: dict[str, object] = {}
    for k, v in obj.items():
        if isinstance(k, str):
            lowered.setdefault(k.lower(), v)
    for n in names:
        if n in lowered:
            return True, lowered[n]
    return False, None


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _entries_list(name: str, doc: object) -> list[object]:
    """Find the list of entries in a decoded manifest, or raise ManifestError."""
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        raise ManifestError(
            f"manifest {name}: top-level JSON is {type(doc).__name__}, expected an object or a list"
        )
    found, wrapped = _get(doc, _WRAPPER_KEYS)
    holder: object = wrapped if found else doc
    if isinstance(holder, list):  # {"DownloadManifest": [...]}
        return holder
    if not isinstance(holder, dict):
        raise ManifestError(
            f"manifest {name}: DownloadManifest is {type(holder).__name__}, expected an object"
        )
    found, includes = _get(holder, _INCLUDES_KEYS)
    if not found:
        raise ManifestError(f"manifest {name}: no DownloadManifest.Includes list")
    if not isinstance(includes, list):
        raise ManifestError(f"manifest {name}: Includes is {type(includes).__name__}, expected a list")
    return includes


def _parse_size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _parse_entry(index: int, raw: object, problems: list[str]) -> ManifestEntry | None:
    where = f"entry #{index}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected an object, got {type(raw).__name__} {_short(raw)}")
        return None
    found, uri = _get(raw, _URI_KEYS)
    if not found:
        problems.append(f"{where}: no URI")
        return None
    if not isinstance(uri, str):
        problems.append(f"{where}: URI is {type(uri).__name__} {_short(uri)}, expected a string")
        return None
    rel = uri
    while rel.startswith("./"):
        rel = rel[2:]
    try:
        check_relpath(rel)
    except UnsafePathError as exc:
        problems.append(f"{where}: unsafe URI {_short(uri)}: {exc}")
        return None

    md5: str | None = None
    found, checksum = _get(raw, _CHECKSUM_KEYS)
    if found and checksum is not None and checksum != "":
        if not isinstance(checksum, str) or not is_md5(checksum.strip()):
            problems.append(f"{where} ({rel}): checksum {_short(checksum)} is not an MD5 (32 hex digits)")
            return None
        md5 = checksum.strip().lower()
        has_type, ctype = _get(raw, _CHECKSUM_TYPE_KEYS)
        if has_type and isinstance(ctype, str) and ctype.strip().lower() not in ("md5", ""):
            problems.append(f"{where} ({rel}): checksum type {ctype!r} is not MD5; not used")
            md5 = None

    size: int | None = None
    found, raw_size = _get(raw, _SIZE_KEYS)
    if found:
        size = _parse_size(raw_size)
    return ManifestEntry(uri=rel, md5=md5, size=size)


def parse_manifest(name: str, data: bytes) -> Manifest:
    """Parse one ``.xdlm`` manifest.

    ``name`` is the manifest's file name (or its key: only the last segment is kept).
    Raises :class:`ManifestError` with a one-line message naming the manifest when the file
    is unusable as a whole (not UTF-8, invalid or truncated JSON, wrong top-level type,
    ``Includes`` not a list) or its name is not ``<subject>_<package>.json``.  Bad entries
    are reported in ``problems`` and dropped; an entry without a checksum is kept with
    ``md5=None``.  Duplicate URIs with the same
    checksum are merged; with different checksums the URI is kept once with ``md5=None``
    (it cannot be verified) and a problem is reported.
    """
    base = name.rsplit("/", 1)[-1]
    subject, field, package = manifest_name_info(base)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {base}: not UTF-8 text (byte {exc.start})") from exc
    if not text.strip():
        raise ManifestError(f"manifest {base}: empty file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"manifest {base}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise ManifestError(f"manifest {base}: JSON nested too deeply") from exc

    raw_entries = _entries_list(base, doc)
    problems: list[str] = []
    by_uri: dict[str, ManifestEntry] = {}
    conflicted: set[str] = set()
    for i, raw in enumerate(raw_entries):
        entry = _parse_entry(i, raw, problems)
        if entry is None:
            continue
        prev = by_uri.get(entry.uri)
        if prev is None:
            by_uri[entry.uri] = entry
            continue
        if entry.uri in conflicted:
            continue
        merged, conflict = merge_entries(prev, entry)
        if conflict:
            problems.append(
                f"entry #{i} ({entry.uri}): listed again with a different checksum "
                f"({prev.md5} vs {entry.md5}); it will not be verified"
            )
            conflicted.add(entry.uri)
        by_uri[entry.uri] = merged
    return Manifest(
        name=base,
        subject=subject,
        field=field,
        package=package,
        entries=tuple(by_uri.values()),
        problems=tuple(problems),
    )


# --- index ---------------------------------------------------------------------------------


class ManifestIndex:
    """What a set of manifests (one or many subjects) say: checksums by URI and packages.

    URIs are relative to the release root (``100307/T1w/T1w_acpc_dc.nii.gz``), the same form
    as :attr:`hcpsync.models.PlannedObject.relpath`.  A URI listed by several manifests with
    different checksums has no checksum in the index (``lookup`` returns None) and is reported
    in :attr:`problems`.
    """

    def __init__(self, manifests: Iterable[Manifest]) -> None:
        self.manifests: tuple[Manifest, ...] = tuple(manifests)
        problems: list[tuple[str, str]] = []
        entries: dict[str, ManifestEntry] = {}
        source: dict[str, str] = {}
        conflicted: set[str] = set()
        packages: dict[str, dict[str, ManifestEntry]] = {}
        for m in self.manifests:
            problems.extend((m.name, p) for p in m.problems)
            pkg = packages.setdefault(m.package, {})
            for e in m.entries:
                pkg.setdefault(e.uri, e)
                prev = entries.get(e.uri)
                if prev is None:
                    entries[e.uri] = e
                    source[e.uri] = m.name
                    continue
                if e.uri in conflicted:
                    continue
                entries[e.uri], conflict = merge_entries(prev, e)
                if conflict:
                    problems.append(
                        (m.name, f"{e.uri}: checksum {e.md5} differs from {prev.md5} in {source[e.uri]}; "
                                 "it will not be verified")
                    )
                    conflicted.add(e.uri)
        self._entries = entries
        self._source = source
        self._packages = {name: list(pkg.values()) for name, pkg in sorted(packages.items())}
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, relpath: object) -> bool:
        return relpath in self._entries

    def entry(self, relpath: str) -> ManifestEntry | None:
        """The merged entry for a URI, or None if no manifest lists it."""
        return self._entries.get(relpath)

    def source_of(self, relpath: str) -> str | None:
        """The name of the first manifest listing ``relpath`` (for messages), or None."""
        return self._source.get(relpath)

    def sources(self) -> dict[str, str]:
        """uri -> name of the first manifest listing it."""
        return dict(self._source)

    def lookup(self, relpath: str) -> str | None:
        """The MD5 the manifests give for ``relpath`` (``100307/T1w/x``), or None."""
        e = self._entries.get(relpath)
        return e.md5 if e is not None else None

    def packages(self) -> dict[str, list[ManifestEntry]]:
        """package name -> its entries (all subjects together), sorted by package name."""
        return {name: list(entries) for name, entries in self._packages.items()}

    def uris_for_packages(self, names: Iterable[str]) -> set[str]:
        """Every URI of the named packages.

        Raises :class:`SelectionError` naming the unknown packages and listing the available ones.
        """
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self._packages]
        if unknown:
            what = ", ".join(repr(n) for n in unknown)
            noun = "package" if len(unknown) == 1 else "packages"
            if not self._packages:
                raise SelectionError(f"unknown {noun} {what}: no .xdlm manifests were found")
            avail = ", ".join(self._packages)
            raise SelectionError(f"unknown {noun} {what}; available: {avail}")
        out: set[str] = set()
        for n in wanted:
            out.update(e.uri for e in self._packages[n])
        return out
