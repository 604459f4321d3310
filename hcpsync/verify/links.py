"""Where a path of the tree leads, following symlinks only inside the tree (DataLad trees).

A DataLad (git-annex) dataset holds its files as relative symlinks into an annex inside the
tree (``100307/T1w/x.nii.gz -> ../../.git/annex/objects/Xx/Yy/KEY/KEY``).  ``verify`` reads
through such a link only when the link's real target is inside the tree (the real path of
DEST); a symlink, of a file or of a folder on the way, that leads outside is *refused* and its
target never opened.  A link whose target is absent (annexed content not fetched) is
*dangling*.

Resolution is :func:`os.path.realpath` done one component at a time, with the real path of
every folder met kept in a cache, so 12,000 files a subject cost a few system calls each.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Literal

#: symlinks followed in a row before giving up (Linux's own limit)
MAX_HOPS = 40
#: folders whose real path is remembered; the cache is emptied past this
CACHE_LIMIT = 100_000

Kind = Literal["file", "absent", "dangling", "refused", "other"]


@dataclass(frozen=True, slots=True)
class Located:
    """``file``: ``path`` is the real path of a regular file inside the tree, ``st`` its stat;
    ``absent``: no such file; ``dangling``: a symlink whose target is absent; ``refused``: a
    symlink leading outside the tree (``path`` is where); ``other``: not a regular file."""

    kind: Kind
    path: str
    st: os.stat_result | None = None
    detail: str = ""


class TreeLinks:
    """Resolves DEST-relative paths of the tree rooted at ``root``; see the module's docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip("/") + "/"
        self._folders: dict[str, str] = {}
        self._by_rel: dict[str, str] = {}

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self._prefix)

    def folder(self, rel: str) -> str:
        """The real path of the DEST-relative folder ``rel`` ("" for DEST itself)."""
        real = self._by_rel.get(rel)
        if real is None:
            real = self._resolve(self.root, rel, 0)
            if len(self._by_rel) >= CACHE_LIMIT:
                self._by_rel.clear()
            self._by_rel[rel] = real
        return real

    def locate(self, rel: str) -> Located:
        """Where the DEST-relative path ``rel`` leads; nothing outside the tree is opened."""
        parent, _, name = rel.rpartition("/")
        try:
            real_parent = self.folder(parent)
        except OSError as exc:
            return Located("other", rel, detail=exc.strerror or str(exc))
        if not self.inside(real_parent):
            return _refused(real_parent, f"symlink to {real_parent} outside the tree (a folder on its way): not followed")
        return self.locate_in(real_parent, name)

    def locate_in(self, real_parent: str, name: str) -> Located:
        """Where ``name`` in the real folder ``real_parent`` (inside the tree) leads."""
        path = _join(real_parent, name)
        try:
            st = os.lstat(path)
        except OSError:
            return Located("absent", path)
        if stat.S_ISLNK(st.st_mode):
            return self._through_link(path, real_parent)
        return _regular(path, st)

    def _through_link(self, path: str, real_parent: str) -> Located:
        try:
            target = self._resolve(real_parent, os.readlink(path), 1)
        except OSError as exc:
            return Located("other", path, detail=exc.strerror or str(exc))
        if not self.inside(target):
            return _refused(target, f"symlink to {target} outside the tree: not followed")
        try:
            st = os.stat(target)
        except OSError:
            return Located("dangling", target, detail="symlink whose target is absent (annexed content not present?)")
        return _regular(target, st)

    def _resolve(self, cur: str, rel: str, hops: int) -> str:
        """The real path of ``rel`` (relative to the real folder ``cur``, or absolute): every
        symlink on the way followed.  A component that does not exist ends the walk (the rest
        is appended as written).  Raises ``OSError`` (ELOOP) after :data:`MAX_HOPS` links."""
        if rel.startswith("/"):
            cur = "/"
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        for i, part in enumerate(parts):
            if part == "..":
                cur = os.path.dirname(cur)
                continue
            path = _join(cur, part)
            known = self._folders.get(path)
            if known is not None:
                cur = known
                continue
            try:
                st = os.lstat(path)
            except OSError:
                return os.path.normpath(_join(path, "/".join(parts[i + 1:])))
            if stat.S_ISLNK(st.st_mode):
                if hops >= MAX_HOPS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                real = self._resolve(cur, os.readlink(path), hops + 1)
            else:
                real = path
            if i < len(parts) - 1:  # a folder on the way
                self._remember(path, real)
            cur = real
        return cur

    def _remember(self, path: str, real: str) -> None:
        if len(self._folders) >= CACHE_LIMIT:
            self._folders.clear()
        self._folders[path] = real


def _join(folder: str, name: str) -> str:
    if not name:
        return folder
    return f"{folder}{name}" if folder.endswith("/") else f"{folder}/{name}"


def _regular(path: str, st: os.stat_result) -> Located:
    if stat.S_ISREG(st.st_mode):
        return Located("file", path, st)
    return Located("other", path, st, "not a regular file")


def _refused(target: str, detail: str) -> Located:
    return Located("refused", target, detail=detail)
