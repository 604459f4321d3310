"""A pull's hold on its destination: the lock, the journal bound to it, its sync points, and the
outcome recorded when the run ends (whatever way it ends)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from types import TracebackType

from ..errors import HcpsyncError
from .db import JOURNAL_NAME, default_journal_path, make_journal_folder
from .lock import Lock
from .store import Journal


def open_bound(root: Path, journal: str | os.PathLike[str] | bool, reset: bool,
               default: Path | None = None) -> tuple[Journal, Lock | None]:
    """Open the pull's journal, bound to ``root``.  A journal outside ``DEST/.hcpsync/`` (or the
    shard's ``default`` place) gets a lock of its own (``<journal>.lock``): two destinations can
    never use one at once."""
    default = default or default_journal_path(root)
    jpath = default if isinstance(journal, bool) else Path(journal)
    in_place = os.path.realpath(jpath) == os.path.realpath(default)
    jlock: Lock | None = None
    if not in_place:
        make_journal_folder(jpath)  # the lock file goes beside the journal
        jlock = Lock(jpath.with_name(jpath.name + ".lock"))
        jlock.acquire(f"journal {jpath}")
    try:
        jnl = Journal.open(jpath, reset=reset)
        jnl.bind_destination(root, in_place)
    except BaseException:
        if jlock is not None:
            jlock.release()
        raise
    return jnl, jlock


async def sync_points(jnl: Journal, interval: float) -> None:
    """Every ``interval`` s: flush the page cache to disk, then mark what it covered as durable."""
    while True:
        await asyncio.sleep(interval)
        seq = jnl.current_seq()
        await asyncio.to_thread(os.sync)
        jnl.mark_synced(seq)


class PullSession:
    """``async with PullSession(root, state_dir, journal, reset):`` holds the destination's lock
    and its journal (None with ``journal=False``) for one pull; on the way out the run's
    outcome is recorded (``interrupted``, ``error: ...`` unless :meth:`finish` said better)
    and everything is closed."""

    def __init__(self, root: Path, lock_path: Path, journal: str | os.PathLike[str] | bool, reset: bool,
                 shard_dir: Path | None = None) -> None:
        """``shard_dir``: a shard's pull: it holds ``lock_path`` shared (with the other shards; a
        plain pull cannot start meanwhile) and the shard's own lock and journal in ``shard_dir``."""
        self.root = root
        self._shard_dir = shard_dir
        self._shared = Lock(lock_path, shared=True) if shard_dir is not None else None
        self._lock = Lock(shard_dir / "lock") if shard_dir is not None else Lock(lock_path)
        self._spec = journal
        self._reset = reset
        self.journal: Journal | None = None
        self._jlock: Lock | None = None
        self._outcome: str | None = None
        self._syncer: asyncio.Future[None] | None = None

    async def __aenter__(self) -> PullSession:
        if self._shared is not None:
            self._shared.acquire(f"destination {self.root} (a pull of all of it)")
        try:
            self._lock.acquire(f"shard {self._shard_dir.name} of {self.root}" if self._shard_dir else
                               f"destination {self.root}")
        except BaseException:
            if self._shared is not None:
                self._shared.release()
            raise
        try:
            if self._spec:
                default = self._shard_dir / JOURNAL_NAME if self._shard_dir is not None else None
                self.journal, self._jlock = open_bound(self.root, self._spec, self._reset, default)
        except BaseException:
            self._release_locks()
            raise
        return self

    def _release_locks(self) -> None:
        self._lock.release()
        if self._shared is not None:
            self._shared.release()

    def start_sync_points(self, interval: float) -> None:
        if self.journal is not None and interval > 0:
            self._syncer = asyncio.ensure_future(sync_points(self.journal, interval))

    async def stop_sync_points(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.gather(self._syncer, return_exceptions=True)
            self._syncer = None

    def finish(self, outcome: str, summary: dict[str, int]) -> None:
        """The run ended with a report: record it."""
        self._outcome = outcome
        if self.journal is not None:
            self.journal.end_run(outcome, dict(summary))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_sync_points()
        jnl = self.journal
        try:
            if jnl is not None:
                if self._outcome is None:
                    outcome = f"error: {exc}" if isinstance(exc, HcpsyncError) else "interrupted"
                    with contextlib.suppress(HcpsyncError):
                        jnl.end_run(outcome, {})
                jnl.close()
        finally:
            if self._jlock is not None:
                self._jlock.release()
            self._release_locks()
