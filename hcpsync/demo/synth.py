"""A synthetic but realistic HCP release: the demo's, the tests' and the benchmarks' data.

:func:`synth_subject` returns the files of one subject, named as in the real ``HCP_1200``
bucket (``MNINonLinear/Results/tfMRI_MOTOR_LR/...``, ``T1w/T1w_acpc_dc.nii.gz``,
``unprocessed/3T/...``, ``release-notes/...``), plus the ``.xdlm/*.json`` manifests of its
download packages with correct MD5s.  Content is deterministic and cheap to produce, so a
test can recompute any file's bytes instead of storing them.

Sizes follow the size model of ``workloads/README.md``: each file gets a full-size size drawn
uniformly in its class's range (at a position fixed by its subject-free path, so every
synthetic subject weighs the same), then shrunk to fit a laptop:

* the two time-series classes (rfMRI runs, task ``dtseries`` / ``nii.gz``) are "large":
  ``max(large_size + jitter, full * scale / 60)``, so a downloader cutting 8 MiB parts splits
  them into ranges; the two rfMRI files are ~11 and ~9.5 MB, the task ones ~6.3 MB;
* every other file keeps its first 32 KiB and what it has beyond is divided by 3000 (and
  multiplied by ``scale``): text files, logs and most PNGs keep their real size and set the
  request count, volumes and surfaces become 35-150 KB.

One refinement of the README table: single-volume ``*_SBRef`` / ``*_Jacobian`` images in a
run folder are sized as ordinary ``.nii.gz`` files, not as time series.

At the defaults one subject is 136 objects (130 data files and 6 manifests), 37.5 MB; with
``scale=0.1, large_size=256 * 1024`` it is 5.6 MB.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from ..verify.manifest import MANIFEST_DIR, parse_manifest
from .tree import (
    PACKAGES,
    PKG_MOTOR_ANALYSIS,
    PKG_MOTOR_PREPROC,
    PKG_MOTOR_UNPROC,
    PKG_REST1_PREPROC,
    PKG_STRUCT_PREPROC,
    PKG_STRUCT_UNPROC,
    TREE,
)

__all__ = [
    "BLOCK",
    "DEFAULT_LARGE_SIZE",
    "PACKAGES",
    "PKG_MOTOR_ANALYSIS",
    "PKG_MOTOR_PREPROC",
    "PKG_MOTOR_UNPROC",
    "PKG_REST1_PREPROC",
    "PKG_STRUCT_PREPROC",
    "PKG_STRUCT_UNPROC",
    "SynthFile",
    "full_size",
    "package_relpaths",
    "seed_bucket",
    "synth_bytes",
    "synth_release",
    "synth_size",
    "synth_subject",
]

KiB = 1024
MiB = 1024 * KiB
_MB = 1_000_000  # the README's sizes are decimal

BLOCK = 64 * KiB
DEFAULT_LARGE_SIZE = 6 * MiB
_LARGE_SHRINK = 60
_KEEP = 32 * KiB  # files up to this full size keep it
_COMPRESS = 3000  # what other files have beyond _KEEP is divided by this

# --- content ---------------------------------------------------------------------------------


_HEAD = 32  # bytes of each block that are unique to it (a SHA-256)


@lru_cache(maxsize=256)
def _block_tail(seed: str) -> bytes:
    """The last ``BLOCK - 32`` bytes shared by every block of a file with this seed."""
    return hashlib.shake_256(b"hcpsync-synth\0" + seed.encode()).digest(BLOCK - _HEAD)


def _block_head(seed: bytes, i: int) -> bytes:
    return hashlib.sha256(seed + b"\0" + i.to_bytes(8, "little")).digest()


def _pieces(seed: str, size: int, start: int, stop: int) -> Iterator[bytes]:
    """The content of bytes ``[start, stop)``, as pieces to concatenate.

    Block ``i`` (64 KiB) is ``sha256(seed, i)`` followed by a 64 KiB - 32 tail derived from the
    seed: distinct files and distinct blocks never share content, and it is cheap.
    """
    tail = _block_tail(seed)
    bseed = seed.encode()
    for i in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        b0 = i * BLOCK
        lo, hi = max(start - b0, 0), min(stop - b0, BLOCK)
        head = _block_head(bseed, i)
        if lo < _HEAD:
            yield head[lo : min(hi, _HEAD)]
        if hi > _HEAD:
            t0 = max(lo, _HEAD) - _HEAD
            t1 = hi - _HEAD
            yield tail if (t0 == 0 and t1 == len(tail)) else tail[t0:t1]


def synth_bytes(seed: str, size: int, start: int = 0, end: int | None = None) -> bytes:
    """Bytes ``[start, end)`` of the deterministic content of a ``size``-byte file with ``seed``."""
    stop = size if end is None else min(end, size)
    if start < 0 or start > stop:
        raise ValueError(f"bad range [{start}, {end}) for a {size}-byte file")
    if start == stop:
        return b""
    return b"".join(_pieces(seed, size, start, stop))


@lru_cache(maxsize=8192)
def _synth_md5(seed: str, size: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    if size:
        for piece in _pieces(seed, size, 0, size):
            h.update(piece)
    return h.hexdigest()


@dataclass(frozen=True)
class SynthFile:
    """One object of the synthetic release.

    The bytes are derived from ``seed`` (and ``size``) unless ``content`` is given (the
    manifests carry their JSON there).
    """

    key: str
    size: int
    seed: str
    content: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"{self.key}: negative size")
        if self.content is not None and len(self.content) != self.size:
            raise ValueError(f"{self.key}: content is {len(self.content)} bytes, size says {self.size}")

    def data(self) -> bytes:
        """The whole content (deterministic; distinct for distinct seeds)."""
        if self.content is not None:
            return self.content
        return synth_bytes(self.seed, self.size)

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` without building the whole file."""
        if self.content is not None:
            return self.content[start:end]
        return synth_bytes(self.seed, self.size, start, end)

    def md5(self) -> str:
        """Hex MD5 of :meth:`data` (cached)."""
        if self.content is not None:
            return hashlib.md5(self.content, usedforsecurity=False).hexdigest()
        return _synth_md5(self.seed, self.size)

    def relpath(self, release: str) -> str:
        """The key relative to the release root: ``100307/T1w/...``."""
        prefix = release.rstrip("/") + "/"
        return self.key[len(prefix) :] if self.key.startswith(prefix) else self.key

    @property
    def is_manifest(self) -> bool:
        return f"/{MANIFEST_DIR}/" in self.key


# --- size model ------------------------------------------------------------------------------

_TS = "timeseries"
_SIZE_RULES: tuple[tuple[tuple[str, ...], int, int, str], ...] = (
    (("*/Results/*/*_SBRef.nii.gz", "*/Results/*/*_Jacobian.nii.gz"), 2 * _MB, 70 * _MB, ""),
    (("*/Results/rfMRI_*/rfMRI_*.dtseries.nii", "*/Results/rfMRI_*/rfMRI_*.nii.gz"), 300 * _MB, 1100 * _MB, _TS),
    (
        ("*/Results/tfMRI_*_[LR][LR]/tfMRI_*.dtseries.nii", "*/Results/tfMRI_*_[LR][LR]/tfMRI_*.nii.gz"),
        100 * _MB,
        400 * _MB,
        _TS,
    ),
    (("*/unprocessed/*.nii.gz",), 5 * _MB, 400 * _MB, ""),
    (("*.feat/*.nii*", "*.feat/*.gii"), 200_000, 2 * _MB, ""),
    (("*.func.gii",), 1 * _MB, 250 * _MB, ""),
    (("*.nii.gz", "*.mgz"), 2 * _MB, 70 * _MB, ""),
    (("*.surf.gii",), 2 * _MB, 6 * _MB, ""),
    (("*.nii",), 200_000, 2 * _MB, ""),
    (("*.shape.gii", "*.label.gii"), 100_000, 700_000, ""),
    (("*.png", "*.ppm"), 10_000, 80_000, ""),
    (("*",), 200, 20_000, ""),
)


def _unit(text: str) -> float:
    """A deterministic number in [0, 1) for ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def full_size(path: str) -> tuple[int, bool]:
    """The README model's full-size size of ``path`` and whether it is a time series (large)."""
    for patterns, lo, hi, kind in _SIZE_RULES:
        if any(fnmatchcase(path, p) for p in patterns):
            return lo + int(_unit("size:" + path) * (hi - lo)), kind == _TS
    raise AssertionError("the last rule matches everything")  # pragma: no cover


def synth_size(template: str, scale: float = 1.0, large_size: int = DEFAULT_LARGE_SIZE) -> int:
    """The synthetic size of a file whose subject-relative path (``{s}`` for the subject) is given.

    Sizes do not depend on the subject ID, so every synthetic subject weighs the same.
    """
    path = "HCP_1200/SUBJECT/" + template
    full, large = full_size(path)
    if large:
        jitter = 1 + int(_unit("jitter:" + path) * large_size / 16)
        return max(large_size + jitter, int(full * scale / _LARGE_SHRINK))
    if full <= _KEEP:
        return full
    return _KEEP + int((full - _KEEP) * scale / _COMPRESS)



def _check_id(what: str, value: str) -> None:
    if not value or "/" in value or value in (".", "..") or any(ord(c) < 33 for c in value):
        raise ValueError(f"invalid {what} {value!r}")


def synth_subject(
    subject: str = "100307",
    release: str = "HCP_1200",
    scale: float = 1.0,
    large_size: int = DEFAULT_LARGE_SIZE,
) -> list[SynthFile]:
    """The files of one synthetic subject, manifests included, sorted by key.

    Keys are ``<release>/<subject>/...``.  ``scale`` multiplies the size of the files the
    model shrinks (those over 1 MB at full size); ``large_size`` is the minimum size of the
    time-series files (the ones a downloader splits into ranges).
    """
    _check_id("subject", subject)
    release = release.strip("/")
    for seg in release.split("/"):
        _check_id("release", seg)
    if scale <= 0:
        raise ValueError(f"scale must be positive, not {scale}")
    if large_size < 1:
        raise ValueError(f"large_size must be positive, not {large_size}")

    files: list[SynthFile] = []
    members: dict[str, list[SynthFile]] = {p: [] for p in PACKAGES}
    for template, pkgs in TREE:
        key = f"{release}/{subject}/{template.format(s=subject)}"
        f = SynthFile(key=key, size=synth_size(template, scale, large_size), seed=key)
        files.append(f)
        for p in pkgs:
            members[p].append(f)
    for package in PACKAGES:
        files.append(_manifest_file(release, subject, package, members[package]))
    files.sort(key=lambda f: f.key)
    return files


def _manifest_file(release: str, subject: str, package: str, members: list[SynthFile]) -> SynthFile:
    """The ``.xdlm`` manifest of one package, as one line of JSON with realistic extra fields."""
    prefix = f"{release}/"
    includes = [
        {
            "URI": f.key[len(prefix) :],
            "Checksum": f.md5(),
            "ChecksumType": "MD5",
            "Size": f.size,
            "Type": "file",
        }
        for f in sorted(members, key=lambda f: f.key)
    ]
    doc = {
        "DownloadManifest": {
            "ID": f"{subject}_{package}",
            "Project": release,
            "Subject": subject,
            "Package": package,
            "Includes": includes,
        }
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    key = f"{release}/{subject}/{MANIFEST_DIR}/{subject}_{package}.json"
    return SynthFile(key=key, size=len(data), seed=key, content=data)


def synth_release(
    subjects: Iterable[str],
    release: str = "HCP_1200",
    scale: float = 1.0,
    large_size: int = DEFAULT_LARGE_SIZE,
) -> list[SynthFile]:
    """:func:`synth_subject` for several subjects (duplicates ignored), sorted by key."""
    out: list[SynthFile] = []
    for s in dict.fromkeys(subjects):
        out.extend(synth_subject(s, release, scale, large_size))
    out.sort(key=lambda f: f.key)
    return out


def package_relpaths(files: Iterable[SynthFile]) -> dict[str, set[str]]:
    """package -> release-relative paths of its files, read back from the synthetic manifests."""
    out: dict[str, set[str]] = {}
    for f in files:
        if f.is_manifest:
            m = parse_manifest(f.key, f.data())
            out.setdefault(m.package, set()).update(e.uri for e in m.entries)
    return out


def seed_bucket(s3_client: Any, bucket: str, files: Iterable[SynthFile], threads: int = 8) -> None:
    """Upload ``files`` to ``bucket`` with a boto3 S3 client, ``threads`` PUTs at a time."""

    def put(f: SynthFile) -> None:
        s3_client.put_object(Bucket=bucket, Key=f.key, Body=f.data())

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for _ in pool.map(put, files):
            pass
