"""``hcpsync status`` of a destination pulled in shards: every shard journal under
``DEST/.hcpsync/shards/`` read (read-only, while shards run), one line a shard, and the totals."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JournalError
from ..paths import STATE_DIR
from ..shard import SHARDS_DIR
from .db import JOURNAL_NAME, connect
from .lock import holder_pid
from .store import Journal

if TYPE_CHECKING:
    from .status import JournalStatus


@dataclass(frozen=True)
class ShardStatus:
    """One shard: its name (``2-of-4``), what its journal says, and its state in one word."""

    name: str
    status: JournalStatus

    @property
    def state(self) -> str:
        """``running`` (its lock is held), ``failed`` (its last run ended with failures or an
        error), ``complete``, ``partial`` (some bytes in) or ``pending``."""
        st = self.status
        outcome = (st.last_run or {}).get("outcome") or ""
        if st.active_pid is not None:
            return "running"
        if outcome.endswith("failed") or outcome.startswith(("error", "stopped")):
            return "failed"
        if st.files_total and st.files_complete == st.files_total:
            return "complete"
        if outcome == "complete" and not st.files_total:
            return "complete"  # a shard with nothing to fetch
        return "partial" if st.files_complete or st.files_partial else "pending"

    def to_json(self) -> dict[str, Any]:
        doc = self.status.to_json()
        return {"shard": self.name, "state": self.state, "files": doc["files"], "bytes": doc["bytes"],
                "active_pid": self.status.active_pid, "last_run": self.status.last_run}


def shard_dirs(dest: Path) -> list[Path]:
    """The folders of the shards pulled into ``dest`` that have a journal, in shard order."""
    root = dest / STATE_DIR / SHARDS_DIR
    try:
        found = [p for p in root.iterdir() if (p / JOURNAL_NAME).is_file() and not p.is_symlink()]
    except OSError:
        return []
    return sorted(found, key=_order)


def _order(path: Path) -> tuple[int, int, str]:
    k, _, rest = path.name.partition("-of-")
    n = rest.split("-", 1)[0]
    return (int(n) if n.isdigit() else 0, int(k) if k.isdigit() else 0, path.name)


def shard_statuses(dest: Path, read: Any) -> list[ShardStatus]:
    """Each shard's status; ``read(journal, active_pid, dest)`` reads one journal."""
    out = []
    for folder in shard_dirs(dest):
        path = folder / JOURNAL_NAME
        active = holder_pid(folder / "lock")
        try:
            st = read(Journal(path, connect(path, mode="ro")), active, dest)
        except JournalError:
            if active is not None:
                raise
            st = read(Journal.open(path), active, dest)
        out.append(ShardStatus(folder.name, st))
    return out


def merged(dest: Path, main: JournalStatus | None, shards: list[ShardStatus]) -> JournalStatus:
    """One status for the destination: the totals of every shard (and of a plain pull's journal)."""
    parts = [s.status for s in shards] + ([main] if main is not None and main.path else [])
    first = parts[0]
    sums = {f: sum(getattr(p, f) for p in parts) for f in (
        "files_total", "bytes_total", "files_complete", "bytes_complete", "files_partial", "bytes_partial_done",
        "files_pending", "bytes_pending")}
    runs = [p.last_run for p in parts if p.last_run]
    active = next((p.active_pid for p in parts if p.active_pid is not None), None)
    return replace(first, path=str(dest / STATE_DIR / SHARDS_DIR), **sums,
                   last_run=max(runs, key=lambda r: r["started"]) if runs else None, active_pid=active,
                   shards=tuple(shards), dest=str(dest))
