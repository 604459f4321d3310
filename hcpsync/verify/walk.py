"""The local tree ``verify`` checks: the destination, its subject folders, and their files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import DestinationError
from ..models import _SUBJECT_RE
from ..paths import STATE_DIR, TEMP_SUFFIX
from .links import Located, TreeLinks
from .manifest import MANIFEST_DIR

#: folders never walked: hcpsync's state, and a git (DataLad) repository's own
SKIPPED_FOLDERS = frozenset({STATE_DIR, ".git"})


def discover_subjects(dest: str | os.PathLike[str]) -> list[str]:
    """Names of the subject-like folders directly under ``dest`` (hcpsync's state excluded)."""
    try:
        entries = sorted(os.scandir(dest), key=lambda e: e.name)
    except OSError:
        return []
    return [
        e.name for e in entries
        if e.name != STATE_DIR and _SUBJECT_RE.match(e.name) and e.is_dir(follow_symlinks=True)
    ]


def check_dest(dest: str | os.PathLike[str]) -> Path:
    root = Path(dest).expanduser()
    if not root.exists():
        raise DestinationError(f"destination {root} does not exist")
    if not root.is_dir():
        raise DestinationError(f"destination {root} is not a folder")
    return root


def walk_subject(links: TreeLinks, subject: str) -> Iterator[tuple[str, Located]]:
    """(DEST-relative path, where it leads) of the files under ``DEST/subject``.

    Skips the subject's ``.xdlm/`` folder, ``.git`` and hcpsync's state folders, and temp
    files.  A symlink is followed only inside the tree (a file it leads to is yielded as
    ``file``, one outside as ``refused``, an absent one as ``dangling``); a symlinked folder
    inside the tree is not walked (its files are reached by their own path), one leading
    outside is yielded as ``refused``.
    """
    top = links.locate(subject)
    if top.kind == "refused":
        yield subject, top
        return
    stack = [(links.folder(subject), subject)]
    while stack:
        folder, rel = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            continue
        with it:
            for e in it:
                child = f"{rel}/{e.name}"
                try:
                    if e.is_dir(follow_symlinks=False):
                        if e.name not in SKIPPED_FOLDERS and not (rel == subject and e.name == MANIFEST_DIR):
                            stack.append((e.path, child))
                        continue
                    if e.name.endswith(TEMP_SUFFIX):
                        continue
                    found = links.locate_in(folder, e.name) if e.is_symlink() else _plain(e)
                except OSError:
                    continue
                if found.kind in ("file", "refused", "dangling"):
                    yield child, found


def _plain(e: os.DirEntry[str]) -> Located:
    st = e.stat(follow_symlinks=False)
    return Located("file", e.path, st) if e.is_file(follow_symlinks=False) else Located("other", e.path, st)
