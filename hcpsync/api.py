"""The library API: ``await plan(...)``, ``await pull(...)``, their blocking twins, and Mirror.

Example::

    import hcpsync
    sel = hcpsync.Selection(subjects=["100307"], release="HCP_1200",
                            paths=["MNINonLinear/Results/tfMRI_MOTOR_LR"])
    report = await hcpsync.pull(sel, "/data/hcp", profile="hcp")
    # or, in a script or a notebook cell:
    report = hcpsync.pull_sync(sel, "/data/hcp", profile="hcp")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .config import TransferConfig
from .dest import claim_source, prepare_dest, prepare_state_dir
from .engine.limits import fit_to_fd_limit
from .engine.pool import CompositeObserver, PoolResult, TransferObserver, TransferPool
from .engine.progress import Progress, ProgressCallback
from .errors import EtagMismatchError, HcpsyncError, JournalError, ObjectChangedError, VerificationError
from .journal.resume import JournalObserver, check_partials
from .journal.store import Journal, Lock, default_journal_path
from .models import DEFAULT_BUCKET, DEFAULT_RELEASE, Failure, Plan, PlannedObject, PullReport, Selection
from .planning import plan_for
from .planning.listing import build_plan
from .prepare import prepare_pull
from .store.s3 import S3Storage, StorageOptions

T = TypeVar("T")

#: extra rounds for objects that changed on the server mid-pull or failed verification
_REFETCH_ROUNDS = 2
#: extra rounds for a mismatch with the S3 ETag (a weak signal: an ETag is not always an MD5)
_ETAG_REFETCH_ROUNDS = 1


def _storage_options(
    storage: StorageOptions | None, endpoint_url: str | None, profile: str | None, region: str | None,
    no_sign_request: bool,
) -> StorageOptions:
    if storage is not None:
        return storage
    return StorageOptions(endpoint_url=endpoint_url, profile=profile, region=region, no_sign_request=no_sign_request)


async def plan(
    selection: Selection,
    *,
    config: TransferConfig | None = None,
    storage: StorageOptions | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    no_sign_request: bool = False,
) -> Plan:
    """List what ``selection`` covers: every object with key, size, ETag and local path."""
    opts = _storage_options(storage, endpoint_url, profile, region, no_sign_request)
    async with S3Storage(opts, config or TransferConfig()) as s3:
        the_plan, _ = await plan_for(s3, selection)  # resolves --package through the manifests
        return the_plan


async def pull(
    selection: Selection | Plan,
    dest: str | os.PathLike[str],
    *,
    config: TransferConfig | None = None,
    storage: StorageOptions | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    no_sign_request: bool = False,
    progress: ProgressCallback | None = None,
    observer: TransferObserver | None = None,
    journal: str | os.PathLike[str] | bool = True,
    reset_journal: bool = False,
    sync_interval: float = 30.0,
    verify: bool = True,
) -> PullReport:
    """Download a selection (or a ready plan) to ``dest``; returns a :class:`PullReport`.

    Per-object failures are collected in the report, not raised.  Raises
    :class:`~hcpsync.errors.HcpsyncError` for what stops the whole run (bad selection,
    no credentials, disk full, another pull on the same destination...).  Cancelling the
    task closes every connection and file and leaves the journal consistent.

    ``journal``: True for ``DEST/.hcpsync/journal.sqlite``, a path, or False for none (then
    nothing is resumable beyond complete files).  ``reset_journal`` starts it afresh.
    ``sync_interval``: seconds between sync points that make journal records power-loss safe.
    ``verify``: check each file's MD5 (from the subjects' ``.xdlm`` manifests, else a plain-MD5
    S3 ETag) before it reaches its final path; mismatches are fetched again, then failed.
    """
    cfg, notes = fit_to_fd_limit(config or TransferConfig())
    opts = _storage_options(storage, endpoint_url, profile, region, no_sign_request)
    root = prepare_dest(dest)
    t0 = time.monotonic()
    lock = Lock(prepare_state_dir(root) / "lock")
    lock.acquire(f"destination {root}")
    jnl: Journal | None = None
    jlock: Lock | None = None
    outcome = "interrupted"
    try:
        if journal:
            jnl, jlock = _open_journal(root, journal, reset_journal)
        claim_source(root, selection.selection if isinstance(selection, Plan) else selection,
                     jnl.recorded_source() if jnl is not None else None)
        async with S3Storage(opts, cfg) as s3:
            cache = jnl.checksum_cache() if jnl is not None else None
            prepared = await prepare_pull(s3, selection, dest=root, verify=verify, cache=cache)
            the_plan, verifier = prepared.plan, prepared.verifier
            notes += list(the_plan.notes) + prepared.notes
            observers: list[TransferObserver] = [observer] if observer is not None else []
            if verifier is not None:
                observers.append(verifier)
            syncer: asyncio.Future[None] | None = None
            if jnl is not None:
                notes += jnl.start_run(the_plan)
                notes += await check_partials(jnl, the_plan.objects, root)
                observers.insert(0, JournalObserver(jnl))
                if sync_interval > 0:
                    syncer = asyncio.ensure_future(_sync_points(jnl, sync_interval))
            prog = Progress(progress)
            prog.start(len(the_plan.objects), the_plan.total_bytes)
            try:
                combined = CompositeObserver(*observers)
                pool_result, round_notes = await _run_rounds(s3, the_plan, root, cfg, prog, combined)
            finally:
                if syncer is not None:
                    syncer.cancel()
                    await asyncio.gather(syncer, return_exceptions=True)
            notes += round_notes
            if verifier is not None:
                notes += verifier.notes
            prog.finish()
            requests = s3.stats.requests
            pool_result.retries += s3.stats.retries
        if pool_result.fatal is not None:
            outcome = f"stopped: {pool_result.fatal}"
            raise pool_result.fatal
        failed = [Failure(r.key, r.reason) for r in the_plan.rejected] + pool_result.failed()
        report = PullReport(
            planned_files=len(the_plan.objects),
            planned_bytes=the_plan.total_bytes,
            transferred_files=pool_result.transferred_files,
            transferred_bytes=pool_result.transferred_bytes,
            skipped_files=pool_result.skipped_files,
            skipped_bytes=pool_result.skipped_bytes,
            failed=tuple(failed),
            elapsed=time.monotonic() - t0,
            retries=pool_result.retries,
            requests=requests,
            notes=tuple(notes),
            verified_files=verifier.verified_files if verifier is not None else 0,
            unverified_files=verifier.unverified_files if verifier is not None else 0,
        )
        outcome = "complete" if report.ok else f"{len(report.failed)} failed"
        if jnl is not None:
            jnl.end_run(outcome, {"transferred_files": report.transferred_files,
                                  "transferred_bytes": report.transferred_bytes,
                                  "failed": len(report.failed)})
        return report
    except HcpsyncError as err:
        if outcome == "interrupted":
            outcome = f"error: {err}"
        raise
    finally:
        if jnl is not None:
            with contextlib.suppress(HcpsyncError):
                if outcome != "complete" and not outcome.endswith(" failed"):
                    jnl.end_run(outcome, {})
            jnl.close()
        if jlock is not None:
            jlock.release()
        lock.release()


def _open_journal(root: Path, journal: str | os.PathLike[str] | bool, reset: bool) -> tuple[Journal, Lock | None]:
    """Open the pull's journal, bound to ``root``.  A journal outside ``DEST/.hcpsync/`` gets a
    lock of its own (``<journal>.lock``): two destinations can never use one at once."""
    default = default_journal_path(root)
    jpath = default if isinstance(journal, bool) else Path(journal)
    in_place = os.path.realpath(jpath) == os.path.realpath(default)
    jlock: Lock | None = None
    if not in_place:
        try:
            jpath.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the folder of journal {jpath}: {exc.strerror or exc}") from exc
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


async def _sync_points(jnl: Journal, interval: float) -> None:
    """Every ``interval`` s: flush the page cache to disk, then mark what it covered as durable."""
    while True:
        await asyncio.sleep(interval)
        seq = jnl.current_seq()
        await asyncio.to_thread(os.sync)
        jnl.mark_synced(seq)


async def _run_rounds(
    s3: S3Storage, the_plan: Plan, root: Path, cfg: TransferConfig, prog: Progress, observer: TransferObserver
) -> tuple[PoolResult, list[str]]:
    """Run the pool; objects that changed mid-pull or failed their checksum get more rounds."""
    bucket = the_plan.selection.bucket
    objects: Sequence[PlannedObject] = _schedule(the_plan.objects, cfg)
    total = PoolResult()
    notes: list[str] = []
    rounds = min(cfg.retries, _REFETCH_ROUNDS)  # --retries 0: no second round either
    for round_no in range(rounds + 1):
        pool = TransferPool(s3, bucket, root, cfg, prog, observer)
        res = await pool.run(objects)
        total.transferred_files += res.transferred_files
        total.transferred_bytes += res.transferred_bytes
        total.skipped_files += res.skipped_files
        total.skipped_bytes += res.skipped_bytes
        total.retries += res.retries
        total.fatal = res.fatal
        again: list[PlannedObject] = []
        for obj, err in res.failures:
            if round_no < rounds and res.fatal is None and isinstance(err, ObjectChangedError):
                try:
                    info = await s3.head(bucket, obj.key)
                except HcpsyncError as head_err:
                    total.failures.append((obj, head_err))
                    continue
                notes.append(f"{obj.key} changed on the server during the pull; fetched again")
                prog.files_failed -= 1
                again.append(PlannedObject(obj.key, info.size, info.etag, obj.relpath))
            elif round_no < _verify_rounds(err, rounds) and res.fatal is None and isinstance(err, VerificationError):
                notes.append(f"{obj.key} failed verification ({err}); fetched again")
                prog.files_failed -= 1
                prog.remove_bytes(obj.size)  # its bytes were counted; they come again
                again.append(obj)
            else:
                total.failures.append((obj, err))
        if not again or res.fatal is not None:
            break
        objects = again
    return total, notes


def _verify_rounds(err: HcpsyncError, rounds: int) -> int:
    """Extra rounds a file that failed verification with ``err`` gets."""
    return min(rounds, _ETAG_REFETCH_ROUNDS) if isinstance(err, EtagMismatchError) else rounds


def _schedule(objects: Sequence[PlannedObject], cfg: TransferConfig) -> list[PlannedObject]:
    """Large (ranged) files first, largest first, so their long tails overlap the small files."""
    big = sorted((o for o in objects if o.size > cfg.multipart_threshold), key=lambda o: -o.size)
    small = [o for o in objects if o.size <= cfg.multipart_threshold]
    return big + small


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from blocking code, even when an event loop is already
    running in this thread (a Jupyter cell): then it runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="hcpsync-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def plan_sync(selection: Selection, **kwargs: Any) -> Plan:
    """Blocking twin of :func:`plan`."""
    return run_sync(plan(selection, **kwargs))


def pull_sync(selection: Selection | Plan, dest: str | os.PathLike[str], **kwargs: Any) -> PullReport:
    """Blocking twin of :func:`pull`."""
    return run_sync(pull(selection, dest, **kwargs))


class Mirror:
    """A local mirror of an S3 release, in the spirit of pyxnat's ``S3Mirror``::

        mirror = Mirror("/data/hcp", profile="hcp")
        paths = mirror.subject("100307").files("MNINonLinear/Results/tfMRI_MOTOR_LR")

    ``files`` returns local paths, downloading only what is missing or incomplete.
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        bucket: str = DEFAULT_BUCKET,
        release: str = DEFAULT_RELEASE,
        config: TransferConfig | None = None,
        storage: StorageOptions | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        no_sign_request: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.dest = Path(dest)
        self.bucket = bucket
        self.release = release
        self.config = config or TransferConfig()
        self.storage = _storage_options(storage, endpoint_url, profile, region, no_sign_request)
        self.progress = progress
        self.last_report: PullReport | None = None

    def subject(self, subject: str) -> SubjectMirror:
        return SubjectMirror(self, subject)


class SubjectMirror:
    def __init__(self, mirror: Mirror, subject: str) -> None:
        self.mirror = mirror
        self.subject = subject

    async def afiles(self, *paths: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
        """Local paths of the subject's files under ``paths`` (all when none), fetching what is missing."""
        m = self.mirror
        sel = Selection(
            subjects=(self.subject,), bucket=m.bucket, release=m.release, paths=tuple(paths),
            includes=tuple(include), excludes=tuple(exclude),
        )
        async with S3Storage(m.storage, m.config) as s3:
            the_plan = await build_plan(s3, sel)
        report = await pull(the_plan, m.dest, config=m.config, storage=m.storage, progress=m.progress)
        m.last_report = report
        if not report.ok:
            first = report.failed[0]
            raise HcpsyncError(f"{len(report.failed)} file(s) could not be fetched, e.g. {first.key}: {first.reason}")
        return [m.dest / o.relpath for o in the_plan.objects]

    def files(self, *paths: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
        """Blocking twin of :meth:`afiles`."""
        return run_sync(self.afiles(*paths, include=include, exclude=exclude))
