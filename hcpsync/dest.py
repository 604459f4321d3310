"""The destination folder: creating it, its ``.hcpsync/`` state folder, and what it holds.

A destination holds one release of one bucket.  Releases share subject IDs (``HCP_1200/100307``
and ``HCP_Retest/100307`` both land at ``DEST/100307/``), so a second release pulled into the
same folder would overwrite, or worse keep, files of the first.  The first pull records
``bucket`` and ``release`` in ``DEST/.hcpsync/source.json``; a pull of another one is refused.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from .errors import DestinationError
from .models import Selection
from .paths import STATE_DIR
from .uri import is_uri

SOURCE_NAME = "source.json"


def prepare_dest(dest: str | os.PathLike[str]) -> Path:
    """Create ``dest`` if needed and check it is a writable folder (a local one: never a URI)."""
    refuse_uri(dest)
    path = Path(dest).expanduser()
    if path.exists() and not path.is_dir():
        raise DestinationError(f"destination {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"cannot create destination {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise DestinationError(f"destination {path} is not writable")
    return path


def refuse_uri(dest: str | os.PathLike[str]) -> None:
    """``s3://bucket/x`` as a destination would become the local folder ``./s3:/bucket/x``."""
    if is_uri(os.fspath(dest)):
        raise DestinationError(f"destination {os.fspath(dest)} is a URI: give a local folder "
                               "(hcpsync downloads from S3; it does not upload)")


def prepare_state_dir(root: Path) -> Path:
    """``DEST/.hcpsync/``, created if needed; a real folder, never a symlink."""
    state_dir = root / STATE_DIR
    try:
        state_dir.mkdir(exist_ok=True)
    except OSError as exc:  # a file in the way, say
        raise DestinationError(f"cannot create {state_dir}: {exc.strerror}") from exc
    if state_dir.is_symlink():  # the lock and journal would be written wherever it points
        raise DestinationError(f"{state_dir} is a symlink; hcpsync needs a real folder there for its journal")
    return state_dir


def source_of(selection: Selection) -> dict[str, str]:
    return {"bucket": selection.bucket, "release": selection.release}


def _uri(source: dict[str, str]) -> str:
    release = source.get("release", "?")
    return f"s3://{source.get('bucket', '?')}/{release}/" if release else f"s3://{source.get('bucket', '?')}/"


def read_source(root: Path) -> dict[str, str] | None:
    """The bucket and release ``root`` holds, or None when no pull recorded one."""
    path = root / STATE_DIR / SOURCE_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DestinationError(f"cannot read {path} ({exc}): remove it if {root} holds one release only") from exc
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("bucket", "release")):
        raise DestinationError(f"{path} is malformed: remove it if {root} holds one release only")
    return {"bucket": doc["bucket"], "release": doc["release"]}


def claim_source(root: Path, selection: Selection, recorded: dict[str, str] | None = None) -> None:
    """Record ``selection``'s bucket and release as what ``root`` holds; refuse another one.

    ``recorded`` is what an older journal says the destination holds, for destinations
    pulled into before ``source.json`` existed.
    """
    want = source_of(selection)
    have = read_source(root) or recorded
    if have is not None and have != want:
        suggestion = root.with_name(f"{root.name}-{selection.release.replace('/', '-')}")
        raise DestinationError(
            f"{root} holds {_uri(have)}; pulling {_uri(want)} into it would mix releases that share "
            f"subject IDs: use another --dest (e.g. {suggestion})"
        )
    path = root / STATE_DIR / SOURCE_NAME
    if read_source(root) is None:
        # a name of its own: shards starting at once on a fresh destination each write it (same content)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(want) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise DestinationError(f"cannot write {path}: {exc.strerror or exc}") from exc
