"""One pull, from a selection to its report: the stages wired together.

    destination (lock, journal, recorded release)  ->  plan and verifier (prepare)
    ->  journal run start, partial files checked  ->  pool rounds  ->  report

The pool's outcomes go to the journal (what is done), the verifier (checksums verified) and
the caller's listener; objects that changed on the server mid-pull or failed their checksum
get more rounds here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import TransferConfig
from .dest import claim_source, prepare_dest, prepare_state_dir
from .engine.events import Listener
from .engine.limits import fit_to_fd_limit
from .engine.pool import PoolResult, TransferPool
from .engine.procs import WorkerSet, usable_cores
from .engine.progress import Progress, ProgressCallback
from .errors import EtagMismatchError, HcpsyncError, ObjectChangedError, VerificationError
from .journal.resume import JournalGate, check_partials
from .journal.session import PullSession
from .models import Plan, PlannedObject, PullReport, Selection
from .paths import STATE_DIR
from .planning.schedule import schedule
from .prepare import prepare_pull
from .store import ObjectStore, S3Storage, StorageOptions
from .verify.checker import PullVerifier

#: extra rounds for objects that changed on the server mid-pull or failed verification
REFETCH_ROUNDS = 2
#: ... and for a mismatch with an S3 ETag: a weak signal (SSE-KMS/SSE-C ETags are no MD5s)
ETAG_REFETCH_ROUNDS = 1


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


@dataclass
class _Rounds:
    """What the pool rounds of one pull add up to."""

    result: PoolResult = field(default_factory=PoolResult)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Fresh:
    """What a pull creates before it has a plan (DEST, ``DEST/.hcpsync/``): removed again when it
    stops before that (no credentials, a bad selection), so a failed first pull leaves nothing."""

    dest: Path
    dest_is_new: bool
    state_is_new: bool
    planned: bool = False

    @classmethod
    def before(cls, dest: str | os.PathLike[str]) -> _Fresh:
        path = Path(dest).expanduser()
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
    fresh = _Fresh.before(dest)
    try:
        return await _run_pull(selection, prepare_dest(dest), opts, fresh)
    except BaseException:
        fresh.undo()
        raise


async def _run_pull(selection: Selection | Plan, root: Path, opts: PullOptions, fresh: _Fresh) -> PullReport:
    t0 = time.monotonic()
    cfg, notes = fit_to_fd_limit(opts.config)
    async with PullSession(root, prepare_state_dir(root) / "lock", opts.journal, opts.reset_journal) as session:
        jnl = session.journal
        claim_source(root, selection.selection if isinstance(selection, Plan) else selection,
                     jnl.recorded_source() if jnl is not None else None)
        async with S3Storage(opts.storage, cfg) as s3:
            prepared = await prepare_pull(s3, selection, dest=root, verify=opts.verify,
                                          cache=jnl.checksum_cache() if jnl is not None else None)
            the_plan, verifier = prepared.plan, prepared.verifier
            fresh.planned = True
            notes += [*the_plan.notes, *prepared.notes]
            listeners: list[Listener] = []
            gate = None
            if jnl is not None:
                notes += jnl.start_run(the_plan)
                notes += await check_partials(jnl, the_plan.objects, root)
                gate = JournalGate(jnl)
                listeners.append(gate)
            listeners += [x for x in (verifier, opts.listener) if x is not None]
            prog = Progress(opts.progress)
            prog.start(len(the_plan.objects), the_plan.total_bytes)
            session.start_sync_points(opts.sync_interval)
            try:
                async with _workers(cfg, s3, the_plan.selection.bucket) as remote:
                    pool = _PoolFactory(s3, the_plan, root, cfg, prog, gate, verifier, listeners, remote)
                    rounds = await _run_rounds(pool, schedule(the_plan.objects, cfg), cfg.retries)
            finally:
                await session.stop_sync_points()
            prog.finish()
            rounds.result.retries += s3.stats.retries
            requests = s3.stats.requests + (remote.requests if remote is not None else 0)
            workers = len(remote.used) if remote is not None else 0
            notes += remote.notes if remote is not None else []
        if rounds.result.fatal is not None:
            session.finish(f"stopped: {rounds.result.fatal}", {})
            raise rounds.result.fatal
        notes += rounds.notes + (verifier.notes if verifier is not None else [])
        report = replace(_report(the_plan, rounds.result, notes, verifier, requests, time.monotonic() - t0),
                         dest=str(root), journal=str(jnl.path) if jnl is not None else None, workers=workers)
        session.finish("complete" if report.ok else f"{len(report.failed)} failed", {
            "transferred_files": report.transferred_files, "transferred_bytes": report.transferred_bytes,
            "failed": len(report.failed)})
        return report


@dataclass(frozen=True)
class _PoolFactory:
    """Makes the pool of each round (the same collaborators every time)."""

    s3: ObjectStore
    plan: Plan
    root: Path
    config: TransferConfig
    progress: Progress
    gate: JournalGate | None
    verifier: PullVerifier | None
    listeners: Sequence[Listener]
    remote: WorkerSet | None

    def __call__(self) -> TransferPool:
        return TransferPool(self.s3, self.plan.selection.bucket, self.root, self.config, self.progress,
                            gate=self.gate, checker=self.verifier, listeners=self.listeners, remote=self.remote)


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


async def _run_rounds(make_pool: _PoolFactory, objects: Sequence[PlannedObject], retries: int) -> _Rounds:
    """Run the pool; objects that changed mid-pull or failed their checksum get more rounds."""
    out = _Rounds()
    rounds = min(retries, REFETCH_ROUNDS)  # --retries 0: no second round either
    for round_no in range(rounds + 1):
        res = await make_pool().run(objects)
        _add(out.result, res)
        again: list[PlannedObject] = []
        for obj, err in res.failures:
            retry = None
            if res.fatal is None:
                retry = await _again(make_pool, obj, err, round_no, rounds, out)
            else:
                out.result.failures.append((obj, err))
            if retry is not None:
                again.append(retry)
        if not again or res.fatal is not None:
            break
        objects = again
    return out


async def _again(make_pool: _PoolFactory, obj: PlannedObject, err: HcpsyncError, round_no: int, rounds: int,
                 out: _Rounds) -> PlannedObject | None:
    """The object to fetch again in the next round after ``err``, or None (then it failed)."""
    prog = make_pool.progress
    if round_no < rounds and isinstance(err, ObjectChangedError):
        try:
            info = await make_pool.s3.head(make_pool.plan.selection.bucket, obj.key)
        except HcpsyncError as head_err:
            out.result.failures.append((obj, head_err))
            return None
        out.notes.append(f"{obj.key} changed on the server during the pull; fetched again")
        prog.again(0)
        return PlannedObject(obj.key, info.size, info.etag, obj.relpath)
    extra = min(rounds, ETAG_REFETCH_ROUNDS) if isinstance(err, EtagMismatchError) else rounds
    if round_no < extra and isinstance(err, VerificationError):
        out.notes.append(f"{obj.key} failed verification ({err}); fetched again")
        prog.again(obj.size)  # its bytes were counted; they come again
        return obj
    out.result.failures.append((obj, err))
    return None


def _add(total: PoolResult, res: PoolResult) -> None:
    total.transferred_files += res.transferred_files
    total.transferred_bytes += res.transferred_bytes
    total.skipped_files += res.skipped_files
    total.skipped_bytes += res.skipped_bytes
    total.retries += res.retries
    total.fatal = res.fatal


def _report(the_plan: Plan, res: PoolResult, notes: list[str], verifier: PullVerifier | None, requests: int,
            elapsed: float) -> PullReport:
    failed = [*the_plan.rejected, *res.failed()]
    return PullReport(
        planned_files=len(the_plan.objects),
        planned_bytes=the_plan.total_bytes,
        transferred_files=res.transferred_files,
        transferred_bytes=res.transferred_bytes,
        skipped_files=res.skipped_files,
        skipped_bytes=res.skipped_bytes,
        failed=tuple(failed),
        elapsed=elapsed,
        retries=res.retries,
        requests=requests,
        notes=tuple(notes),
        verified_files=verifier.verified_files if verifier is not None else 0,
        unverified_files=verifier.unverified_files if verifier is not None else 0,
    )
