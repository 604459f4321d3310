"""Map S3 keys and manifest URIs to local paths, refusing anything that escapes DEST.

Two layers of defence:

* :func:`check_relpath` refuses, as text, what could never be a safe relative path:
  ``..`` or ``.`` segments, absolute paths, empty segments, backslashes, NUL and other
  control characters, Windows drive letters.
* :class:`DestGuard` creates the folders a file needs and checks, with the real file
  system, that none is a symlink: a symlinked folder, wherever it points, is refused, not
  followed (two keys could otherwise reach one file through it).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import UnsafePathError

TEMP_SUFFIX = ".hcpsync-part"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
STATE_DIR = ".hcpsync"


def check_relpath(rel: str) -> str:
    """Return ``rel`` if it is a safe relative POSIX path, else raise :class:`UnsafePathError`."""
    if not rel:
        raise UnsafePathError("empty path")
    if _CONTROL.search(rel):
        raise UnsafePathError("path contains NUL or control characters")
    if "\\" in rel:
        raise UnsafePathError("path contains a backslash")
    if rel.startswith("/"):
        raise UnsafePathError("absolute path")
    if len(rel) >= 2 and rel[1] == ":":
        raise UnsafePathError("path starts with a drive letter")
    segments = rel.split("/")
    for seg in segments:
        if seg == "":
            raise UnsafePathError("empty path segment ('//' or trailing '/')")
        if seg in (".", ".."):
            raise UnsafePathError(f"'{seg}' path segment")
        if len(seg.encode("utf-8", "surrogatepass")) > 255:
            raise UnsafePathError("path segment longer than 255 bytes")
    if segments[0] == STATE_DIR:
        raise UnsafePathError(f"path inside hcpsync's own {STATE_DIR}/ folder")
    if segments[-1].endswith(TEMP_SUFFIX):
        raise UnsafePathError(f"name ends with hcpsync's temporary suffix {TEMP_SUFFIX}")
    return rel


#: the longest file name most file systems accept, in bytes
NAME_MAX = 255


def fold_name(path: str) -> str:
    """The form under which file systems that fold case or normalise Unicode (macOS, Windows,
    exFAT, case-folding ext4) store a path: two paths of equal form are one file there."""
    return unicodedata.normalize("NFC", path).casefold()


def is_complete_file(path: Path, size: int) -> bool:
    """Whether ``path`` is a regular file (not followed if a symlink) of ``size`` bytes."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def temp_path_for(final: Path) -> Path:
    """The temporary file a download is written to before its rename to ``final``.

    ``<name>.hcpsync-part`` beside it; when that would pass ``NAME_MAX`` bytes (a final name of
    243-255 bytes), a fixed-length name derived from the final one, so that any name that fits
    can be downloaded.
    """
    name = final.name + TEMP_SUFFIX
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(final.name)).hexdigest()[:40]
        name = f".{digest}{TEMP_SUFFIX}"
    return final.with_name(name)


@dataclass(frozen=True, slots=True)
class AtFinal:
    """What stands at a final path: a regular file, or a symlink (``link``, its target as written)
    to a regular file inside the destination; ``st`` is the file's (the target's) stat."""

    st: os.stat_result
    link: str | None = None


#: what a pull says when a symlink stands where it would have to write
LINK_ADVICE = ("hcpsync never writes through or replaces a symlink: update it with the tool that made it "
               "(datalad get), or remove the link, and run again")


class DestGuard:
    """Creates folders under a destination and refuses any that resolve outside it."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._ok: set[str] = {""}
        self._real: str | None = None

    def ensure_parent(self, rel: str) -> Path:
        """Create the parent folders of ``DEST/rel`` and return the file's path.

        Raises :class:`UnsafePathError` if a parent is a symlink leading outside DEST or a
        file is in the way.
        """
        check_relpath(rel)
        parent = rel.rpartition("/")[0]
        if parent not in self._ok:
            self._make(parent)
        return self.dest / rel

    def _make(self, parent: str) -> None:
        current = ""
        for seg in parent.split("/"):
            current = f"{current}/{seg}" if current else seg
            if current in self._ok:
                continue
            path = self.dest / current
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except NotADirectoryError as exc:
                raise UnsafePathError(f"a file is in the way of folder {current}/") from exc
            except OSError as exc:
                raise UnsafePathError(f"cannot create folder {current}/: {exc.strerror}") from exc
            if path.is_symlink():
                raise UnsafePathError(f"folder {current}/ is a symlink; hcpsync does not write through symlinked folders")
            if not path.is_dir():
                raise UnsafePathError(f"a file is in the way of folder {current}/")
            self._ok.add(current)

    def final_stat(self, path: Path) -> os.stat_result | None:
        """``lstat`` of a final path (None when nothing is there); refuses a symlink or a folder
        standing there, which hcpsync never writes through or replaces."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"{path.name} already exists as a symlink; refusing to replace it")
        if stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{path.name} already exists as a folder")
        return st

    def at_final(self, path: Path) -> AtFinal | None:
        """What stands at a final path (None: nothing).  A symlink (a DataLad/git-annex tree) is
        followed, to read only, when it resolves to a regular file inside the destination; one
        leading outside, dangling, or to something else, and a folder, are refused."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{path.name} already exists as a folder")
        if not stat.S_ISLNK(st.st_mode):
            return AtFinal(st)
        target = os.readlink(path)
        if self._real is None:
            self._real = os.path.realpath(self.dest)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real]) != self._real:
            raise UnsafePathError(f"{path.name} is a symlink to {target}, outside the destination; hcpsync neither "
                                  "follows nor replaces it")
        try:
            target_st = os.stat(real)
        except OSError as exc:
            raise UnsafePathError(f"{path.name} is a symlink to {target}, which is absent (annexed content not "
                                  f"fetched?); {LINK_ADVICE}") from exc
        if not stat.S_ISREG(target_st.st_mode):
            raise UnsafePathError(f"{path.name} is a symlink to {target}, which is not a file; {LINK_ADVICE}")
        return AtFinal(target_st, target)

    def check_final(self, path: Path) -> None:
        """Refuse to write where a symlink or a folder already stands at the final path."""
        self.final_stat(path)
