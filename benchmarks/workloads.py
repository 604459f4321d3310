"""Deterministic benchmark workloads: trees of files laid out as ``<root>/<bucket>/<key>``.

A workload's root is what :mod:`benchmarks.origin` serves (each top-level directory is a
bucket).  Four workloads exist:

``subject``
    Every key of ``shared/workloads/HCP_1200-100206-keys.txt`` (12,863 keys of subject 100206)
    in bucket ``hcp-openaccess``, sized by the size model of ``shared/workloads/README.md``
    (fixed seed, uniform in each range, first matching row wins, ``*`` matches ``/``), files
    over 1 MB shrunk by 1/50: about 2.3 GB in all.
``subject-tiny``
    200 of those keys (a stride sample plus the four ``rfMRI_REST*_Atlas_MSMAll_hp2000_clean``
    CIFTI files, the largest objects), same sizes: a quick smoke run.
``large``
    4 objects of 1 GiB, ``HCP_1200/100206/MNINonLinear/Results/rfMRI_REST{1,2}_{LR,RL}/...``.
``large-tiny``
    The same 4 keys at 64 MiB each.

Content is fast deterministic pseudo-random bytes: a per-file header line (``hcpsync-bench
v1 <bucket>/<key> <size>``) followed by a 1 MiB random block read cyclically from a per-key
offset, so every file differs, nothing is zeros, and generating the subject takes seconds.
Every file's mtime is fixed (2020-01-01 plus the generator version), so nginx's ETags
(``"<mtime hex>-<size hex>"``) are reproducible and written to the manifest.

Keys that cannot be files (a key that is also a "folder" of another key, a trailing ``/``,
empty or ``.``/``..`` segments) are skipped and listed in the manifest under ``skipped``.

``<root>/manifest.json`` records the parameters, every object (key, size, ETag, MD5) and
the skipped keys; a workload whose manifest matches and whose files all have the expected
size and mtime is not generated again.

Usage::

    python -m benchmarks.workloads subject --out benchmarks/work      # -> benchmarks/work/subject
    python -m benchmarks.workloads all
    python -m benchmarks.workloads subject-tiny --verify DEST --strip-prefix HCP_1200/100206/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path
from typing import Any

from .s3listing import nginx_etag

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_WORK_DIR = BENCH_DIR / "work"

GENERATOR_VERSION = 1
SEED = 100206
BUCKET = "hcp-openaccess"
SUBJECT_PREFIX = "HCP_1200/100206/"
MANIFEST = "manifest.json"
MARKER = ".hcpsync-bench-workload"
#: Fixed mtime of every generated file (2020-01-01T00:00:00Z + version): reproducible ETags.
MTIME = 1_577_836_800 + GENERATOR_VERSION

MB = 1_000_000
KB = 1_000
MiB = 1024 * 1024
GiB = 1024 * MiB
SHRINK_OVER = 1 * MB
SHRINK_FACTOR = 50
TINY_COUNT = 200

BLOCK = 1 * MiB
WRITE_CHUNK = 8 * MiB

# The size model of shared/workloads/README.md: first row whose pattern matches wins.
# fnmatch's ``*`` matches ``/`` too, as the table says.
SIZE_MODEL: tuple[tuple[tuple[str, ...], int, int], ...] = (
    (("*/Results/rfMRI_*/rfMRI_*.dtseries.nii", "*/Results/rfMRI_*/rfMRI_*.nii.gz"), 300 * MB, 1100 * MB),
    (
        ("*/Results/tfMRI_*_[LR][LR]/tfMRI_*.dtseries.nii", "*/Results/tfMRI_*_[LR][LR]/tfMRI_*.nii.gz"),
        100 * MB,
        400 * MB,
    ),
    (("*/unprocessed/*.nii.gz",), 5 * MB, 400 * MB),
    (("*.feat/*.nii*", "*.feat/*.gii"), 200 * KB, 2 * MB),
    (("*.func.gii",), 1 * MB, 250 * MB),
    (("*.nii.gz", "*.mgz"), 2 * MB, 70 * MB),
    (("*.surf.gii",), 2 * MB, 6 * MB),
    (("*.nii",), 200 * KB, 2 * MB),
    (("*.shape.gii", "*.label.gii"), 100 * KB, 700 * KB),
    (("*.png", "*.ppm"), 10 * KB, 80 * KB),
    (("*",), 200, 20 * KB),
)
_SIZE_RULES = tuple(
    (re.compile("|".join(f"(?:{translate(p)})" for p in pats)), lo, hi) for pats, lo, hi in SIZE_MODEL
)

LARGE_KEYS = tuple(
    f"{SUBJECT_PREFIX}MNINonLinear/Results/rfMRI_REST{n}_{pe}/"
    f"rfMRI_REST{n}_{pe}_Atlas_MSMAll_hp2000_clean.dtseries.nii"
    for n in (1, 2)
    for pe in ("LR", "RL")
)

WORKLOADS: dict[str, str] = {
    "subject": "all 12,863 keys of subject 100206, size model shrunk by 1/50 over 1 MB (~2.3 GB)",
    "subject-tiny": f"{TINY_COUNT} keys of subject 100206 (stride sample + the 4 largest), same sizes",
    "large": "4 x 1 GiB rfMRI CIFTI objects",
    "large-tiny": "4 x 64 MiB rfMRI CIFTI objects",
}


class WorkloadError(RuntimeError):
    """A workload cannot be generated, loaded or verified."""


def default_keys_file() -> Path:
    """``shared/workloads/HCP_1200-100206-keys.txt`` beside the repository (or $HCPSYNC_BENCH_KEYS)."""
    env = os.environ.get("HCPSYNC_BENCH_KEYS")
    if env:
        return Path(env)
    for base in (REPO_ROOT.parent / "shared", Path("/work/shared")):
        cand = base / "workloads" / "HCP_1200-100206-keys.txt"
        if cand.is_file():
            return cand
    return REPO_ROOT.parent / "shared" / "workloads" / "HCP_1200-100206-keys.txt"


def _key_rng(seed: int, key: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def model_size(key: str, seed: int = SEED) -> int:
    """Full-size bytes for ``key`` under the README's size model (deterministic per key)."""
    for rx, lo, hi in _SIZE_RULES:
        if rx.fullmatch(key):
            return _key_rng(seed, key).randint(lo, hi)
    raise AssertionError("the catch-all row matches everything")  # pragma: no cover


def shrunk_size(key: str, seed: int = SEED) -> int:
    """:func:`model_size`, divided by :data:`SHRINK_FACTOR` when over :data:`SHRINK_OVER`."""
    size = model_size(key, seed)
    return size // SHRINK_FACTOR if size > SHRINK_OVER else size


def split_valid_keys(keys: Iterable[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Keep the keys that can be files on disk, in order; report the others with a reason.

    A key that is a "folder" of another key (``a/b`` and ``a/b/c``) is skipped: the file and
    the directory cannot both exist.  So are duplicates and keys with a trailing ``/`` or an
    empty, ``.`` or ``..`` segment.
    """
    seen: set[str] = set()
    ordered: list[str] = []
    skipped: list[dict[str, str]] = []
    for key in keys:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\0" in key:
            skipped.append(
                {"key": key, "reason": "not a valid file path (empty, '.', '..' segment or trailing '/')"}
            )
        elif key in seen:
            skipped.append({"key": key, "reason": "duplicate"})
        else:
            seen.add(key)
            ordered.append(key)
    dirs: set[str] = set()
    for key in ordered:
        parts = key.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    valid: list[str] = []
    for key in ordered:
        if key in dirs:
            skipped.append({"key": key, "reason": "also a folder of other keys (file/folder clash)"})
        else:
            valid.append(key)
    return valid, skipped


def read_keys(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"cannot read the key list {path}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Plan:
    """What a workload holds before it is written: ``(key, size)`` pairs and the parameters."""

    name: str
    bucket: str
    prefix: str
    objects: list[tuple[str, int]]
    skipped: list[dict[str, str]]
    params: dict[str, Any]


def plan(name: str, keys_file: Path | None = None) -> Plan:
    """The objects of workload ``name`` (see :data:`WORKLOADS`)."""
    params: dict[str, Any] = {"generator_version": GENERATOR_VERSION, "seed": SEED, "mtime": MTIME}
    if name in ("subject", "subject-tiny"):
        kf = keys_file or default_keys_file()
        raw = read_keys(kf)
        params.update(
            keys_sha256=hashlib.sha256("\n".join(raw).encode()).hexdigest(),
            shrink_over=SHRINK_OVER,
            shrink_factor=SHRINK_FACTOR,
        )
        keys, skipped = split_valid_keys(raw)
        if name == "subject-tiny":
            big = [k for k in LARGE_KEYS if k in set(keys)]
            rest = [k for k in keys if k not in set(big)]
            n = max(0, TINY_COUNT - len(big))
            chosen = {rest[i * len(rest) // n] for i in range(n)} if rest and n else set()
            chosen.update(big)
            keys = [k for k in keys if k in chosen]
            params["tiny_count"] = TINY_COUNT
        objects = [(k, shrunk_size(k)) for k in keys]
    elif name in ("large", "large-tiny"):
        size = GiB if name == "large" else 64 * MiB
        params["size"] = size
        objects = [(k, size) for k in LARGE_KEYS]
        skipped = []
    else:
        raise WorkloadError(f"unknown workload {name!r}: choose from {', '.join(WORKLOADS)}")
    return Plan(name, BUCKET, SUBJECT_PREFIX, objects, skipped, params)


# --------------------------------------------------------------------------------------------
# Content


def _block() -> bytes:
    return random.Random(f"hcpsync-bench-content-{GENERATOR_VERSION}").randbytes(BLOCK)


_PERIOD: memoryview | None = None


def _period() -> memoryview:
    """The 1 MiB block repeated so any window of WRITE_CHUNK from an offset < BLOCK is one slice."""
    global _PERIOD
    if _PERIOD is None:
        blk = _block()
        _PERIOD = memoryview(blk * (WRITE_CHUNK // BLOCK + 1))
    return _PERIOD


def _header(bucket: str, key: str, size: int) -> bytes:
    return f"hcpsync-bench v{GENERATOR_VERSION} {bucket}/{key} {size}\n".encode()[:size]


def _offset(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % BLOCK


def content_chunks(bucket: str, key: str, size: int) -> Iterable[bytes | memoryview]:
    """The bytes of one object, in chunks of at most :data:`WRITE_CHUNK` (zero-copy views)."""
    period = _period()
    head = _header(bucket, key, size)
    body = size - len(head)
    off = _offset(key)
    if body <= BLOCK:
        yield head + period[off : off + body]
        return
    yield head
    pos = 0
    while pos < body:
        take = min(WRITE_CHUNK, body - pos)
        start = (off + pos) % BLOCK
        yield period[start : start + take]
        pos += take


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_object(path: Path, bucket: str, key: str, size: int, *, md5: bool = True) -> str | None:
    """Write one object's file (mtime fixed at :data:`MTIME`); returns its MD5 hex if asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.md5() if md5 else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in content_chunks(bucket, key, size):
            if h is not None:
                h.update(chunk)
            _write_all(fd, chunk)
    finally:
        os.close(fd)
    os.utime(path, (MTIME, MTIME))
    return h.hexdigest() if h is not None else None


# --------------------------------------------------------------------------------------------
# Manifest and loading


@dataclass(frozen=True)
class WorkloadObject:
    key: str
    size: int
    etag: str  # as nginx sends it, quotes included
    md5: str | None = None


@dataclass
class Workload:
    """A generated workload: ``root/<bucket>/<key>`` files described by ``root/manifest.json``."""

    name: str
    root: Path
    bucket: str
    prefix: str
    objects: list[WorkloadObject]
    skipped: list[dict[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def path_of(self, key: str) -> Path:
        return self.root / self.bucket / key

    def warm(self) -> float:
        """Read every file once so the origin serves from the page cache; returns seconds taken."""
        t0 = time.monotonic()
        buf = bytearray(WRITE_CHUNK)
        for o in self.objects:
            with open(self.path_of(o.key), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        return time.monotonic() - t0

    def url_of(self, endpoint_url: str, key: str) -> str:
        from urllib.parse import quote

        return f"{endpoint_url.rstrip('/')}/{self.bucket}/{quote(key, safe='/')}"

    @classmethod
    def load(cls, root: Path) -> Workload:
        try:
            data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WorkloadError(f"no readable {MANIFEST} in {root}: {exc}") from exc
        objs = [
            WorkloadObject(str(o["key"]), int(o["size"]), str(o["etag"]), o.get("md5"))
            for o in data["objects"]
        ]
        return cls(
            name=str(data["name"]),
            root=root,
            bucket=str(data["bucket"]),
            prefix=str(data["prefix"]),
            objects=objs,
            skipped=list(data.get("skipped", [])),
            params=dict(data.get("params", {})),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": self.name,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "params": self.params,
            "count": self.count,
            "total_bytes": self.total_bytes,
            "objects": [{"key": o.key, "size": o.size, "etag": o.etag, "md5": o.md5} for o in self.objects],
            "skipped": self.skipped,
        }


def _up_to_date(root: Path, p: Plan, md5: bool) -> Workload | None:
    try:
        wl = Workload.load(root)
    except (WorkloadError, KeyError, TypeError, ValueError):
        return None
    if wl.params != p.params or wl.bucket != p.bucket or [(o.key, o.size) for o in wl.objects] != p.objects:
        return None
    if md5 and any(o.md5 is None for o in wl.objects):
        return None
    for o in wl.objects:
        try:
            st = wl.path_of(o.key).stat()
        except OSError:
            return None
        if st.st_size != o.size or int(st.st_mtime) != MTIME:
            return None
    return wl


def _wipe(root: Path) -> None:
    """Remove a previous workload tree, but only one this module made (it has the marker)."""
    if not root.exists():
        return
    if not (root / MARKER).exists() and any(root.iterdir()):
        raise WorkloadError(
            f"{root} exists, is not empty and is not a generated workload: refusing to delete it"
        )
    shutil.rmtree(root)


def generate(
    name: str,
    out: Path = DEFAULT_WORK_DIR,
    *,
    force: bool = False,
    md5: bool = True,
    keys_file: Path | None = None,
    workers: int | None = None,
    log: bool = False,
) -> Workload:
    """Generate workload ``name`` into ``out/name`` (skipped when already up to date)."""
    p = plan(name, keys_file)
    root = (out / name).resolve()
    if not force:
        wl = _up_to_date(root, p, md5)
        if wl is not None:
            if log:
                print(
                    f"{name}: up to date in {root} ({wl.count} files, {wl.total_bytes / 1e9:.2f} GB)",
                    file=sys.stderr,
                )
            return wl
    t0 = time.monotonic()
    _wipe(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text(f"generated by benchmarks.workloads v{GENERATOR_VERSION}\n", encoding="utf-8")
    bucket_dir = root / p.bucket

    # Biggest first, so the thread pool ends evenly; md5 and os.write release the GIL.
    order = sorted(range(len(p.objects)), key=lambda i: -p.objects[i][1])
    digests: list[str | None] = [None] * len(p.objects)

    def one(i: int) -> None:
        key, size = p.objects[i]
        digests[i] = write_object(bucket_dir / key, p.bucket, key, size, md5=md5)

    with ThreadPoolExecutor(max_workers=workers or max(2, min(8, (os.cpu_count() or 2) * 2))) as pool:
        for _ in pool.map(one, order):
            pass
    wl = Workload(
        name=name,
        root=root,
        bucket=p.bucket,
        prefix=p.prefix,
        objects=[
            WorkloadObject(k, s, nginx_etag(MTIME, s), d)
            for (k, s), d in zip(p.objects, digests, strict=True)
        ],
        skipped=p.skipped,
        params=p.params,
    )
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(wl.to_json(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(root / MANIFEST)
    if log:
        print(
            f"{name}: generated {wl.count} files, {wl.total_bytes / 1e9:.2f} GB in {root} "
            f"({time.monotonic() - t0:.1f} s); skipped {len(wl.skipped)} key(s)",
            file=sys.stderr,
        )
        for s in wl.skipped:
            print(f"  skipped {s['key']}: {s['reason']}", file=sys.stderr)
    return wl


def ensure(name: str, out: Path = DEFAULT_WORK_DIR, *, log: bool = False) -> Workload:
    """:func:`generate` without forcing: the workload as it is on disk, made if missing or stale."""
    return generate(name, out, log=log)


# --------------------------------------------------------------------------------------------
# Verifying a download


@dataclass
class VerifyResult:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    wrong_md5: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong_size or self.wrong_md5 or self.extra)

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.checked} files identical"
        parts = [f"{len(v)} {k}" for k, v in self.as_dict().items() if v]
        sample = (self.missing + self.wrong_size + self.wrong_md5 + self.extra)[:5]
        return f"FAILED: {', '.join(parts)} (of {self.checked}); e.g. {sample}"

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "missing": self.missing,
            "wrong_size": self.wrong_size,
            "wrong_md5": self.wrong_md5,
            "extra": self.extra,
        }


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(WRITE_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def verify(
    wl: Workload,
    dest: Path,
    *,
    strip_prefix: str = "",
    check_md5: bool = True,
    allow_extra: bool = False,
    workers: int = 2,
) -> VerifyResult:
    """Check that ``dest/<key minus strip_prefix>`` matches every object (size, and MD5 if known).

    Objects whose key does not start with ``strip_prefix`` are not expected.  Files in
    ``dest`` that are no object are reported as ``extra`` unless ``allow_extra``.
    """
    res = VerifyResult()
    expected: dict[str, WorkloadObject] = {}
    for o in wl.objects:
        if o.key.startswith(strip_prefix):
            expected[o.key[len(strip_prefix) :]] = o

    def check(item: tuple[str, WorkloadObject]) -> tuple[str, str | None]:
        rel, o = item
        path = dest / rel
        try:
            st = path.stat()
        except OSError:
            return rel, "missing"
        if st.st_size != o.size:
            return rel, "wrong_size"
        if check_md5 and o.md5 is not None and _file_md5(path) != o.md5:
            return rel, "wrong_md5"
        return rel, None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, problem in pool.map(check, sorted(expected.items())):
            res.checked += 1
            if problem is not None:
                getattr(res, problem).append(rel)
    if not allow_extra and dest.is_dir():
        for dirpath, _dirs, files in os.walk(dest):
            for fn in files:
                rel = Path(dirpath, fn).relative_to(dest).as_posix()
                if rel not in expected:
                    res.extra.append(rel)
    return res


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.workloads",
        description="Generate benchmark workloads: <out>/<name>/<bucket>/<key> + manifest.json.",
    )
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"workload(s): {', '.join(WORKLOADS)}, or 'all'")
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_WORK_DIR, help="parent directory (default: %(default)s)"
    )
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    ap.add_argument("--no-md5", action="store_true", help="do not compute MD5s for the manifest")
    ap.add_argument("--keys-file", type=Path, default=None, help="key list (default: shared/workloads/...)")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--warm", action="store_true", help="read every file once (prime the page cache)")
    ap.add_argument(
        "--verify", type=Path, metavar="DEST", help="verify a download of the (single) workload in DEST"
    )
    ap.add_argument("--strip-prefix", default="", help="with --verify: key prefix the download left out")
    args = ap.parse_args(argv)

    if args.list or not args.names:
        for n, d in WORKLOADS.items():
            print(f"{n:14s} {d}")
        return 0 if args.list else 2
    names = list(WORKLOADS) if args.names == ["all"] else args.names
    for n in names:
        if n not in WORKLOADS:
            ap.error(f"unknown workload {n!r}: choose from {', '.join(WORKLOADS)} or 'all'")
    try:
        if args.verify is not None:
            if len(names) != 1:
                ap.error("--verify takes exactly one workload")
            wl = Workload.load((args.out / names[0]).resolve())
            res = verify(wl, args.verify, strip_prefix=args.strip_prefix)
            print(res.summary())
            return 0 if res.ok else 1
        for n in names:
            wl = generate(
                n, args.out, force=args.force, md5=not args.no_md5, keys_file=args.keys_file, log=True
            )
            if args.warm:
                print(
                    f"{n}: read {wl.total_bytes / 1e9:.2f} GB in {wl.warm():.1f} s (page cache warm)",
                    file=sys.stderr,
                )
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
