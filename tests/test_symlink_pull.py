"""A pull into a tree made by DataLad / git-annex (issue 15): files are symlinks into an annex
inside the tree.  hcpsync never writes through or replaces a symlink: a link whose target, inside
the tree, is the object's bytes (by size, and by checksum when one is known) is kept as complete;
any other link is refused for that file, in one line naming the tool to use, the link and its
target untouched.  Real parts: moto behind the fault proxy, ``hcpsync pull`` subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put
from faultproxy import FaultProxy
from test_journal import want_local as local

SUBJECT = "100307"


def objects() -> dict[str, bytes]:
    return {f"HCP_1200/{SUBJECT}/T1w/t{i}.nii": det_bytes(5000 + i, f"t{i}") for i in range(4)}


def pull(url: str, bucket: str, dest: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    done = subprocess.run([sys.executable, "-m", "hcpsync", "pull", "--subject", SUBJECT, "--dest", str(dest),
                           "--endpoint-url", url, "--bucket", bucket, "--no-progress", "--json", *extra],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **FAKE_ENV})
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def annex(dest: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Lay ``files`` out as git-annex does: content under DEST/.git/annex/objects/, read-only, and a
    relative symlink at each path.  Returns path -> annex object."""
    out = {}
    for rel, data in files.items():
        key = f"MD5E-s{len(data)}--{hashlib.md5(data).hexdigest()}.nii"
        obj = dest / ".git" / "annex" / "objects" / key[:2] / key[2:4] / key / key
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        link = dest / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(obj, link.parent))
        out[rel] = obj
    for folder, _, names in os.walk(dest / ".git"):
        for name in names:
            os.chmod(Path(folder, name), 0o444)
    return out


@pytest.fixture
def read_only_cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    for folder, dirs, names in os.walk(tmp_path):
        for n in dirs + names:
            p = Path(folder, n)
            if not p.is_symlink():
                os.chmod(p, 0o755)


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str | None]]:
    out = {}
    for folder, dirs, names in os.walk(root):
        for n in dirs + names:
            p = Path(folder, n)
            if ".hcpsync" in p.relative_to(root).parts:
                continue
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                            os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


def gets(proxy: FaultProxy) -> list[str]:
    return [key for _, kind, key, _ in proxy.requests_log if kind == "get"]


def test_a_datalad_tree_is_kept_as_complete(bucket: str, tmp_path: Path, proxy: FaultProxy,
                                            read_only_cleanup: None) -> None:
    tree = objects()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    annex(dest, local(tree))
    before = snapshot(dest)
    code, report, err = pull(proxy.url, bucket, dest)
    assert code == 0, err
    assert report["skipped"]["files"] == len(tree)  # type: ignore[index]
    assert gets(proxy) == []
    assert snapshot(dest) == before  # every link and annex object as it was


@pytest.mark.parametrize("how", ["stale", "dangling", "outside"])
def test_a_link_that_is_not_the_object_is_refused_untouched(bucket: str, tmp_path: Path, proxy: FaultProxy,
                                                            read_only_cleanup: None, how: str) -> None:
    tree = objects()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    files = local(tree)
    bad = f"{SUBJECT}/T1w/t1.nii"
    annexed = annex(dest, {**files, bad: files[bad][:-1] if how == "stale" else files[bad]})
    if how == "dangling":
        os.chmod(annexed[bad].parent, 0o755)
        annexed[bad].unlink()
    if how == "outside":  # the right bytes, but outside the tree: never followed
        outside = tmp_path / "elsewhere.nii"
        outside.write_bytes(files[bad])
        (dest / bad).unlink()
        (dest / bad).symlink_to(outside)
    before = snapshot(dest)
    code, report, err = pull(proxy.url, bucket, dest)
    assert code == 1, err
    [failed] = report["failed"]  # type: ignore[misc]
    assert failed["key"] == f"HCP_1200/{bad}"
    assert "symlink" in failed["reason"] and ("outside" in failed["reason"] if how == "outside"
                                                 else "datalad get" in failed["reason"])
    assert report["skipped"]["files"] == len(tree) - 1  # type: ignore[index]
    assert gets(proxy) == []  # nothing fetched that could not be written
    assert snapshot(dest) == before
    if how == "outside":
        assert (tmp_path / "elsewhere.nii").read_bytes() == files[bad]


def test_checksum_reads_through_links_and_refuses_a_stale_one(bucket: str, tmp_path: Path, proxy: FaultProxy,
                                                              read_only_cleanup: None) -> None:
    """``--checksum`` hashes annexed content through the links (read only): the good ones are
    verified, a same-size stale one is refused, untouched (the size rule alone would keep it)."""
    tree = objects()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    files = local(tree)
    bad = f"{SUBJECT}/T1w/t2.nii"
    annex(dest, {**files, bad: files[bad][:-1] + bytes([files[bad][-1] ^ 1])})
    before = snapshot(dest)
    code, report, err = pull(proxy.url, bucket, dest)
    assert code == 0 and report["skipped"]["files"] == len(tree), err  # type: ignore[index]
    code, report, err = pull(proxy.url, bucket, dest, "--checksum")
    assert code == 1, err
    [failed] = report["failed"]  # type: ignore[misc]
    assert failed["key"] == f"HCP_1200/{bad}" and "checksum mismatch" in failed["reason"]
    assert "datalad get" in failed["reason"]
    assert report["checksum"]["differed"] == 1 and report["checksum"]["hashed"] == len(tree)  # type: ignore[index]
    assert gets(proxy) == []
    assert snapshot(dest) == before
