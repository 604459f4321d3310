"""One pull, from a selection (or a saved plan) to its report: the stages wired together.

    destination (lock, journal, recorded release)  ->  partial files checked
    ->  listing into the journal's plan table  ||  pool rounds reading it  ->  report

The listing and the pool run side by side: the pool reads the plan a batch at a time as pages
are planned, so the first byte moves after the first listing page, whatever the selection's size.

The pool's outcomes go to the journal (what is done), the verifier (checksums verified) and
the caller's listener; objects that changed on the server mid-pull or failed their checksum
get more rounds (:mod:`.rounds`).  With ``checksum``, each batch's files already present are
checked before the pool sees the batch (:mod:`.verify.localcheck`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .config import TransferConfig
from .dest import claim_source, prepare_dest, prepare_state_dir
from .engine.events import Listener
from .engine.limits import fit_to_fd_limit
from .engine.procs import WorkerSet, usable_cores
from .engine.progress import Progress, ProgressCallback
from .errors import DestinationError
from .journal import Journal
from .journal.checksums import JournalChecksums
from .journal.plan import PlanFeed, PlanRow, PlanTable
from .journal.resume import JournalGate, check_partials
from .journal.session import PullSession
from .models import Absent, PlannedObject, PullReport, Selection
from .paths import STATE_DIR
from .planfile import Plan, open_plan_db, scratch_plan_path
from .planning.coverage import absent_from_s3
from .planning.listing import Planned, plan_into
from .planning.schedule import schedule
from .planning.select import in_scope
from .preflight import Free, InsufficientSpaceError, SpaceCheck
from .prepare import make_verifier
from .pullreport import PlanSummary, pull_report
from .rounds import PoolFactory, Rounds, run_rounds
from .shard import SHARDS_DIR, Shard
from .store import S3Storage, StorageOptions
from .verify.cache import VerifiedCache
from .verify.checker import PullVerifier
from .verify.localcheck import ChecksumPass
from .verify.manifests import ManifestSet


@dataclass(frozen=True)
class PullOptions:
    """How one pull runs (see :func:`hcpsync.api.pull` for each)."""

    config: TransferConfig
    storage: StorageOptions
    progress: ProgressCallback | None = None
    listener: Listener | None = None
    journal: str | os.PathLike[str] | bool = True
    reset_journal: bool = False
    sync_interval: float = 30.0
    verify: bool = True
    #: pull only this shard of the selection (its own journal and lock: see :mod:`hcpsync.shard`)
    shard: Shard | None = None
    #: refuse to start (or go on) when DEST has less space or fewer inodes free than the plan needs
    space_check: bool = True
    #: check files already present by checksum, not size alone (see :mod:`hcpsync.verify.localcheck`)
    checksum: bool = False
    #: add to the journal's last plan instead of replacing it (``verify --repair``: a few of its files)
    amend: bool = False


@dataclass
class _Fresh:
    """What a pull creates before it has a plan (DEST, ``DEST/.hcpsync/``): removed again when it
    stops before that (no credentials, a bad selection), so a failed first pull leaves nothing."""

    dest: Path
    dest_is_new: bool
    state_is_new: bool
    planned: bool = False

    @classmethod
    def before(cls, dest: str | os.PathLike[str], shared: bool = False) -> _Fresh:
        """``shared`` (a shard's pull): DEST and DEST/.hcpsync/ are left as they are, even when this
        pull created them: the other shards, started at the same time, use them."""
        path = Path(dest).expanduser()
        if shared:
            return cls(path, False, False)
        return cls(path, not os.path.lexists(path), not os.path.lexists(path / STATE_DIR))

    def undo(self) -> None:
        if self.planned:
            return
        state = self.dest / STATE_DIR
        if self.state_is_new and state.is_dir() and not state.is_symlink():
            shutil.rmtree(state, ignore_errors=True)
        if self.dest_is_new:
            with contextlib.suppress(OSError):
                os.rmdir(self.dest)  # only if empty


async def run_pull(selection: Selection | Plan, dest: str | os.PathLike[str], opts: PullOptions) -> PullReport:
    """Download ``selection`` to ``dest``; see :func:`hcpsync.api.pull`."""
    fresh = _Fresh.before(dest, shared=opts.shard is not None)
    try:
        return await _run_pull(selection, prepare_dest(dest), opts, fresh)
    except BaseException:
        fresh.undo()
        raise


async def _run_pull(source: Selection | Plan, root: Path, opts: PullOptions, fresh: _Fresh) -> PullReport:
    t0 = time.monotonic()
    cfg, notes = fit_to_fd_limit(opts.config)
    selection = source.selection if isinstance(source, Plan) else source
    state = prepare_state_dir(root)
    shard_dir = _shard_dir(state, opts.shard) if opts.shard is not None else None
    async with PullSession(root, state / "lock", opts.journal, opts.reset_journal, shard_dir) as session:
        jnl = session.journal
        claim_source(root, selection, jnl.recorded_source() if jnl is not None else None)
        async with S3Storage(opts.storage, cfg) as s3, _plan_table(session, selection, opts.amend) as table:
            if jnl is not None:
                notes += await check_partials(jnl, root)
            run = _Run(s3, source, table, root, cfg, opts, fresh, jnl)
            session.start_sync_points(opts.sync_interval)
            try:
                try:
                    rounds, planned = await run.go()
                finally:
                    if opts.amend and jnl is not None:
                        jnl.fold_last_plan()
                absent = await run.coverage(planned) if rounds.result.fatal is None else None
            finally:
                await session.stop_sync_points()
            notes += planned.notes + (jnl.plan_notes(table) if jnl is not None else [])
            rounds.result.retries += s3.stats.retries
            requests = s3.stats.requests + run.remote_requests
            planned_totals = PlanSummary(table.totals.files, table.totals.bytes, table.rejected())
        if rounds.result.fatal is not None:
            session.finish(f"stopped: {rounds.result.fatal}", {})
            raise rounds.result.fatal
        seen = set(notes)
        notes += rounds.notes + run.remote_notes + [n for n in (run.verifier.notes if run.verifier else []) if n not in seen]
        report = replace(pull_report(planned_totals, rounds.result, notes, run.verifier, requests, time.monotonic() - t0),
                         dest=str(root), journal=str(jnl.path) if jnl is not None else None, workers=run.workers,
                         checksum=run.checks.counts if run.checks is not None else None, absent=absent)
        session.finish("complete" if report.ok else f"{len(report.failed)} failed", {
            "transferred_files": report.transferred_files, "transferred_bytes": report.transferred_bytes,
            "failed": len(report.failed)})
        return report


def _shard_dir(state: Path, shard: Shard) -> Path:
    """``DEST/.hcpsync/shards/<K>-of-<N>[-by-key]/``, created if needed (a real folder)."""
    path = state / SHARDS_DIR / shard.name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"cannot create {path}: {exc.strerror}") from exc
    if any(p.is_symlink() for p in (path, path.parent)):
        raise DestinationError(f"{path} is a symlink; hcpsync needs a real folder there for the shard's journal")
    return path


@contextlib.asynccontextmanager
async def _plan_table(session: PullSession, selection: Selection, amend: bool) -> AsyncIterator[PlanTable]:
    """The table this run's plan is listed into: the journal's (``amend``: adding to its last
    plan), or (``journal=False``) a scratch file's, removed at the end."""
    if session.journal is not None:
        yield session.journal.begin_run(selection, amend=amend)
        return
    path = scratch_plan_path()
    db = open_plan_db(path)
    try:
        yield PlanTable(db, 1)
    finally:
        db.close()
        shutil.rmtree(path.parent, ignore_errors=True)


class _Run:
    """One pull's planning and transfer, side by side: the plan is listed (or copied from a saved
    plan) into ``table`` while the pool fetches what is already planned."""

    def __init__(self, s3: S3Storage, source: Selection | Plan, table: PlanTable, root: Path, cfg: TransferConfig,
                 opts: PullOptions, fresh: _Fresh, jnl: Journal | None) -> None:
        self.s3, self.source, self.table, self.root, self.cfg = s3, source, table, root, cfg
        self.opts, self.fresh = opts, fresh
        self.selection = source.selection if isinstance(source, Plan) else source
        self.gate = JournalGate(jnl) if jnl is not None else None
        cache = jnl.checksum_cache() if jnl is not None else None
        self.feed = PlanFeed(table, on_rows=_both(self.gate, cache) if self.gate and cache else None)
        self.progress = Progress(opts.progress)
        self._manifests: asyncio.Future[ManifestSet | None] = asyncio.get_running_loop().create_future()
        self.verifier = self._verifier(cache) if opts.verify else None
        self.space = SpaceCheck(root, Free.at(root), live=not isinstance(source, Plan),
                                complete=self.gate.recorded_complete if self.gate is not None else None,
                                ) if opts.space_check else None
        self._fetching = False  # a batch went to the pool
        self.checks = ChecksumPass(self.verifier, root, self.gate) if self.verifier and opts.checksum else None
        if self.verifier is not None and self.checks is not None:
            self.verifier.local = self.checks.verdict
        self.workers = 0
        self.remote_requests = 0
        self.remote_notes: list[str] = []

    def _verifier(self, cache: VerifiedCache | None) -> PullVerifier:
        """The pull's verifier: manifests from the planner (``--package``) or the saved plan's keys,
        a shard's subjects only, none written beside a file some shard fetches itself."""
        sel, shard, source = self.selection, self.opts.shard, self.source
        return make_verifier(self.s3, sel, dest=self.root, cache=cache,
                             planned=lambda: _Relpaths(self.table, sel, shard),
                             from_planner=self._manifests if sel.packages else None,
                             listed=source.manifest_keys() if isinstance(source, Plan) else None,
                             subjects=shard.subjects(sel.subjects) if shard is not None else None)

    async def go(self) -> tuple[Rounds, Planned]:
        """Plan and fetch; the listing's error (an unknown subject) stops the fetching too, and a
        stop of the fetching (a full disk) the listing."""
        if self.space is not None and isinstance(self.source, Plan):
            for page in self.source.pages(shard_filter(self.source, self.opts.shard)):
                self._preflight(page)  # the whole saved plan, before its first byte,
                await asyncio.sleep(0)  # a page at a time: Ctrl-C is heard
        producer = asyncio.ensure_future(self._produce())
        try:
            rounds = await self._fetch()
            planned = await producer if rounds.result.fatal is None else Planned()
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            if not self._manifests.done():
                self._manifests.set_result(None)
            if self.checks is not None:
                self.checks.pool.close()
        self.progress.finish()
        return rounds, planned

    async def coverage(self, planned: Planned) -> tuple[Absent, ...] | None:
        """The manifests' files S3 does not have, when the manifests were loaded (``--package``,
        ``--checksum``, or a file downloaded); None otherwise (no manifest request for it)."""
        if self.checks is not None and self.verifier is not None:
            await self.verifier.ready()
        found = planned.manifests.manifests if planned.manifests is not None else None
        if found is None and self.verifier is not None:
            found = self.verifier.manifests
        return absent_from_s3(found, self.selection, self.table, self.opts.shard) if found is not None else None

    async def _produce(self) -> Planned:
        try:
            if isinstance(self.source, Plan):
                planned = Planned(list(self.source.notes))
                await copy_plan(self.source, self.table, self._page, self.feed.unit_done, self.opts.shard)
            else:
                planned = await plan_into(self.s3, self.source, self.table, concurrency=self.cfg.list_concurrency,
                                          on_page=self._page, on_unit=self.feed.unit_done, shard=self.opts.shard)
        except BaseException as exc:
            self.feed.close(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise
        if not self._manifests.done():
            self._manifests.set_result(planned.manifests)
        self.feed.close()
        return planned

    def _page(self) -> None:
        """A page is planned: the totals grow (the first starts the progress)."""
        if not self.fresh.planned:
            self.progress.start(self.table.totals.files, self.table.totals.bytes)
        self.fresh.planned = True
        self.progress.grow(self.table.totals.files, self.table.totals.bytes)

    def _preflight(self, objects: Iterable[PlannedObject], replaced: Sequence[PlannedObject] = ()) -> None:
        """The space check of ``objects`` (a saved plan whole, or a batch just listed) and of the
        complete files ``--checksum`` found different (``replaced``); failing it before any byte
        has moved undoes what this pull created."""
        assert self.space is not None
        try:
            self.space.add(objects, replaced)
        except InsufficientSpaceError:
            if not self._fetching:
                self.fresh.planned = False
            raise

    async def _batch(self, batch: Sequence[PlannedObject]) -> None:
        """A batch of the plan goes to the pool: a plan still listed is space-checked unit by unit;
        with ``--checksum``, the files of the batch already present are checked."""
        if self.checks is not None:
            await self.checks.batch(batch)
        if self.space is not None:
            listed = not isinstance(self.source, Plan)  # a saved plan was checked whole, before
            self._preflight(batch if listed else (), self.checks.bad_in(batch) if self.checks is not None else ())
        self._fetching = True

    async def _fetch(self) -> Rounds:
        listeners: list[Listener] = [x for x in (self.gate, self.verifier, self.opts.listener) if x is not None]
        async with _workers(self.cfg, self.s3, self.selection.bucket) as remote:
            pool = PoolFactory(self.s3, self.selection.bucket, self.root, self.cfg, self.progress, self.gate,
                                self.verifier, listeners, remote)
            batches = _Scheduled(self.feed, self.cfg, self._batch)
            rounds = await run_rounds(pool, batches, self.cfg.retries)
            if remote is not None:
                self.remote_requests, self.workers, self.remote_notes = remote.requests, len(remote.used), remote.notes
        if batches.stopped is not None:  # the files started before it are complete: stop now
            raise batches.stopped
        return rounds


def _both(gate: JournalGate, cache: JournalChecksums) -> Callable[[list[PlanRow]], None]:
    """The feed's rows to the gate (states) and the checksum cache (MD5s), batch by batch."""

    def known(rows: list[PlanRow]) -> None:
        gate.known(rows)
        cache.known(rows)

    return known


class _Relpaths:
    """``relpath in planned``: whether this run, or (``shard``) another shard of its selection,
    fetches a file at that local path (a manifest is then not written beside it)."""

    def __init__(self, table: PlanTable, selection: Selection, shard: Shard | None) -> None:
        self.table, self.selection, self.shard = table, selection, shard

    def __contains__(self, relpath: object) -> bool:
        if not isinstance(relpath, str):
            return False
        if self.shard is not None and not self.selection.packages and in_scope(relpath, self.selection):
            return True
        return self.table.has_relpath(relpath)


class _Scheduled:
    """The plan's batches as the pool takes them: in each, ranged objects first, largest first;
    each seen by ``before`` first (``--checksum``'s check of the files already present, then the
    space check), which may raise to stop the pull.  Too little space ends the batches instead
    (``stopped``): what the pool has started completes, then the pull stops with it."""

    def __init__(self, feed: PlanFeed, cfg: TransferConfig,
                 before: Callable[[Sequence[PlannedObject]], Awaitable[None]]) -> None:
        self.feed, self.cfg, self.before = feed, cfg, before
        self.stopped: InsufficientSpaceError | None = None

    def __aiter__(self) -> _Scheduled:
        return self

    async def __anext__(self) -> Sequence[PlannedObject]:
        batch = await anext(self.feed)
        try:
            await self.before(batch)
        except InsufficientSpaceError as err:
            self.stopped = err
            raise StopAsyncIteration from err
        return schedule(batch, self.cfg)


async def copy_plan(plan: Plan, table: PlanTable, on_page: Callable[[], None], on_unit: Callable[[int], None],
                    shard: Shard | None = None) -> None:
    """Plan the objects of a saved plan (those of ``shard``) into ``table`` (no listing), a page at
    a time, each page a unit."""
    keep = shard_filter(plan, shard)
    table.reject([r for r in plan.rejected if shard is None or shard.has_key(r.key)])
    for unit, page in enumerate(plan.pages(keep), 1):
        table.add(page, unit)
        on_page()
        on_unit(unit)
        await asyncio.sleep(0)


def shard_filter(plan: Plan, shard: Shard | None) -> Callable[[PlannedObject], bool] | None:
    """Which objects of a saved plan are ``shard``'s (None: all)."""
    if shard is None:
        return None
    subjects = set(shard.subjects(plan.selection.subjects))

    def keep(o: PlannedObject) -> bool:
        return shard.has_key(o.key) and (shard.by == "key" or o.subject in subjects)

    return keep


@contextlib.asynccontextmanager
async def _workers(cfg: TransferConfig, s3: S3Storage, bucket: str) -> AsyncIterator[
    WorkerSet | None
]:
    """The pull's worker processes (None: everything in this process); all stopped on the way out."""
    count = cfg.workers or usable_cores()
    if count <= 1:
        yield None
        return
    async with WorkerSet(count, s3.endpoint(), s3.frozen_keys, cfg, bucket, eager=cfg.workers is not None) as ws:
        yield ws
