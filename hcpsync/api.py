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
import functools
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar

from .config import TransferConfig
from .engine.events import Listener
from .engine.progress import ProgressCallback
from .errors import HcpsyncError, UsageError
from .journal import Journal, open_journal_if_any
from .models import DEFAULT_BUCKET, DEFAULT_RELEASE, PlannedObject, PullReport, Selection, as_items
from .planfile import Plan
from .planning.listing import build_plan
from .run import PullOptions, run_pull
from .shard import Shard
from .store.options import StorageOptions
from .store.s3 import S3Storage

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .journal.plan import PlanTable
    from .repair import RepairReport
    from .verify.tree import VerifyProgress, VerifyReport

T = TypeVar("T")
P = ParamSpec("P")


class S3Access(TypedDict, total=False):
    """How to reach S3, as keyword arguments of :func:`plan`, :func:`pull` and :class:`Mirror`:
    a ready ``storage`` (:class:`StorageOptions`), or its fields one by one.  Credentials come
    from the standard AWS chain."""

    storage: StorageOptions | None
    endpoint_url: str | None
    profile: str | None
    region: str | None
    no_sign_request: bool


def _storage_options(access: S3Access) -> StorageOptions:
    unknown = set(access) - set(S3Access.__annotations__)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    storage = access.get("storage")
    if storage is not None:
        return storage
    return StorageOptions(endpoint_url=access.get("endpoint_url"), profile=access.get("profile"),
                          region=access.get("region"), no_sign_request=access.get("no_sign_request", False))


async def plan(
    selection: Selection,
    *,
    config: TransferConfig | None = None,
    save: str | os.PathLike[str] | None = None,
    on_unit: Callable[[PlanTable, int], None] | None = None,
    shard: Shard | None = None,
    coverage: bool = False,
    **access: Unpack[S3Access],
) -> Plan:
    """List what ``selection`` covers (``--package`` resolved through the manifests): a
    :class:`Plan`, whose objects are read from its file as they are iterated.

    ``save``: also write the plan to that file, for ``pull(Plan.load(path), ...)`` (no listing
    again).  ``on_unit(table, unit)``: called when a listing unit (a folder) is planned, its rows
    final (``table.page(unit, ...)``; ``table.totals`` so far).
    ``config.list_concurrency`` listings run at once.  ``shard``: only that part of the selection.
    ``coverage``: fetch the subjects' ``.xdlm`` manifests (one GET each) for :attr:`Plan.absent`,
    the files they list that S3 does not have; it is known without it with ``packages`` or ``save``.
    """
    opts = _storage_options(access)
    cfg = config or TransferConfig()
    async with S3Storage(opts, cfg) as s3:
        return await build_plan(s3, selection, concurrency=cfg.list_concurrency,
                                save=os.fspath(save) if save is not None else None, on_unit=on_unit, shard=shard,
                                coverage=coverage)


async def pull(
    selection: Selection | Plan,
    dest: str | os.PathLike[str],
    *,
    config: TransferConfig | None = None,
    progress: ProgressCallback | None = None,
    on_outcome: Listener | None = None,
    journal: str | os.PathLike[str] | bool = True,
    reset_journal: bool = False,
    sync_interval: float = 30.0,
    verify: bool = True,
    shard: Shard | None = None,
    space_check: bool = True,
    checksum: bool = False,
    **access: Unpack[S3Access],
) -> PullReport:
    """Download a selection (or a ready plan: :func:`plan`'s, or :meth:`Plan.load` of a saved one,
    pulled without listing again) to ``dest``; returns a :class:`PullReport`.  The listing runs
    while files are fetched: the first byte moves after the first listing page.

    S3 access: see :class:`S3Access`.  Per-object failures are collected in the report, not raised.  Raises
    :class:`~hcpsync.errors.HcpsyncError` for what stops the whole run (bad selection,
    no credentials, disk full, another pull on the same destination...).  Cancelling the
    task closes every connection and file and leaves the journal consistent.

    ``journal``: True for ``DEST/.hcpsync/journal.sqlite``, a path, or False for none (then
    nothing is resumable beyond complete files).  ``reset_journal`` starts it afresh.
    ``sync_interval``: seconds between sync points that make journal records power-loss safe.
    ``verify``: check each file's MD5 (from the subjects' ``.xdlm`` manifests, else a plain-MD5
    S3 ETag) before it reaches its final path; mismatches are fetched again, then failed.
    ``checksum``: a file already at its final path with the planned size is checked too (manifest
    MD5, else S3 ETag; hashed on every core, the journal's cached MD5s reused) and fetched again
    only if it differs; without it, its size alone decides (a same-size stale file is kept).
    The report's ``checksum`` says what was hashed and found different.  ``absent``: the files
    the manifests list within the selection that S3 does not have (not failures), known when the
    manifests were loaded (``packages``, ``checksum``, or any file downloaded), else None.
    ``shard``: pull only that :class:`~hcpsync.shard.Shard` of the selection (with its own journal
    and lock under ``DEST/.hcpsync/shards/``; shards of one destination run at once).
    ``space_check``: before the first byte of each part of the plan (of a saved plan, the whole),
    compare what is still to write with the space and inodes free at ``dest``; raises
    :class:`~hcpsync.preflight.InsufficientSpaceError` (exit 2) when it does not fit.
    ``on_outcome``: called with each :mod:`hcpsync.engine.events` record (a part or file landed,
    a file skipped or failed), in order, on the event loop's thread.
    """
    opts = PullOptions(
        config=config or TransferConfig(),
        storage=_storage_options(access),
        progress=progress, listener=on_outcome, journal=journal, reset_journal=reset_journal,
        sync_interval=sync_interval, verify=verify, shard=shard, space_check=space_check,
        checksum=checksum,
    )
    if checksum and not verify:
        raise UsageError("checksum=True checks files against their checksums: it does not go with verify=False")
    if shard is not None and not isinstance(journal, bool):
        raise UsageError("a shard keeps its journal in DEST/.hcpsync/shards/: --journal PATH does not go with --shard")
    return await run_pull(selection, dest, opts)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from blocking code, even when an event loop is already
    running in this thread (a Jupyter cell): then it runs on a fresh loop in a helper thread.

    A KeyboardInterrupt (the notebook's "interrupt the kernel") while the helper thread runs
    cancels the coroutine's task on the helper loop and waits for it to unwind (connections,
    files, the destination's lock closed and released), then is raised to the caller."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    box: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: an interrupted join can break it (bpo-45274)

    def target() -> None:
        try:
            box["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            _close_loop(loop)
            done.set()

    threading.Thread(target=target, name="hcpsync-sync", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to cancel
            loop.call_soon_threadsafe(task.cancel)
        _wait_unwinding(done)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _wait_unwinding(done: threading.Event) -> None:
    """Wait for a cancelled helper thread to unwind; a second interrupt meanwhile does not cut it short."""
    while not done.is_set():
        try:
            done.wait()
        except KeyboardInterrupt:
            continue


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out: cancel leftovers, shut down async generators."""
    try:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _blocking_twin(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of coroutine function ``fn``, with ``fn``'s typed signature (a type
    checker catches ``concurency=3``; ``help()`` and ``inspect.signature`` show every keyword)."""

    @functools.wraps(fn)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(fn(*args, **kwargs))

    twin.__name__ = twin.__qualname__ = f"{fn.__name__}_sync"
    twin.__doc__ = (f"Blocking twin of :func:`{fn.__name__}` (runs it with :func:`run_sync`: from a script, or a "
                    f"notebook cell, where an interrupt stops it cleanly).\n\n{fn.__doc__ or ''}")
    return twin


async def check(
    selection: Selection | None,
    dest: str | os.PathLike[str],
    *,
    offline: bool = False,
    full: bool = False,
    jobs: int | None = None,
    config: TransferConfig | None = None,
    progress: VerifyProgress | None = None,
    **access: Unpack[S3Access],
) -> VerifyReport:
    """Verify the files of ``selection`` under ``dest`` against HCP's ``.xdlm`` manifests (the
    shape of :func:`pull`); returns a :class:`~hcpsync.verify.VerifyReport` (``ok``, ``counts``).

    ``selection`` None: the selection the last pull into ``dest`` recorded in its journal (so a
    check after ``pull(Selection(paths=["T1w"]), dest)`` reports nothing else missing), else
    every subject folder in ``dest``.  ``offline``: use the manifests a pull kept under
    ``DEST/<subject>/.xdlm/``, no network.  Checksums a pull's journal recorded are reused for
    files unchanged since; ``full`` hashes everything again.  S3 access: see :class:`S3Access`.
    """
    from .verify.tree import verify_tree  # a pull does not load the tree checker

    storage = _storage_options(access)
    root, jnl = _dest_and_journal(dest)
    try:
        notes: list[str] = []
        if selection is None and jnl is not None:
            selection = jnl.recorded_selection()
            if selection is not None:
                notes.append(f"checked the selection of the last pull into {root}: {selection.as_options()}")
        report = await verify_tree(root, selection, offline=offline, full=full, jobs=jobs, config=config,
                                   storage=None if offline else storage, progress=progress,
                                   cache=jnl.checksum_cache() if jnl is not None else None)
    finally:
        if jnl is not None:
            jnl.close()
    return replace(report, notes=(*notes, *report.notes))


async def repair(
    selection: Selection | None,
    dest: str | os.PathLike[str],
    *,
    full: bool = False,
    jobs: int | None = None,
    config: TransferConfig | None = None,
    progress: VerifyProgress | None = None,
    pull_progress: ProgressCallback | None = None,
    **access: Unpack[S3Access],
) -> RepairReport:
    """:func:`check`, then fetch again what it found mismatched or missing (through :func:`pull`:
    the journal, the engine, ``checksum=True``), then check again; returns a
    :class:`~hcpsync.repair.RepairReport` (``ok`` is the second check's, ``repaired``, ``unrepaired``).
    ``selection`` None: as :func:`check`.  S3 access: see :class:`S3Access`."""
    from .repair import repair as run_repair

    storage = _storage_options(access)
    cfg = config or TransferConfig()
    sel = selection or _selection_of(dest)

    async def again() -> VerifyReport:
        return await check(sel, dest, full=full, jobs=jobs, config=cfg, progress=progress, storage=storage)

    async def fetch(objects: Sequence[PlannedObject]) -> PullReport:  # added to the journal's plan, not replacing it
        opts = PullOptions(config=cfg, storage=storage, progress=pull_progress, checksum=True, amend=True)
        return await run_pull(Plan.build(sel, objects), dest, opts)

    async with S3Storage(storage, cfg) as s3:
        return await run_repair(again, s3, sel, fetch, cfg)


def _selection_of(dest: str | os.PathLike[str]) -> Selection:
    """What :func:`check` checks by default: the last pull's selection, else every subject folder."""
    from .verify.tree import discover_subjects

    return last_selection(dest) or Selection(subjects=tuple(discover_subjects(Path(dest).expanduser())))


def last_selection(dest: str | os.PathLike[str]) -> Selection | None:
    """The selection of the last pull into ``dest`` (what :func:`check` checks by default), if any."""
    _, jnl = _dest_and_journal(dest)
    if jnl is None:
        return None
    try:
        return jnl.recorded_selection()
    finally:
        jnl.close()


def _dest_and_journal(dest: str | os.PathLike[str]) -> tuple[Path, Journal | None]:
    """``dest`` (``~`` expanded), and its journal when a pull into it left one (None while a pull runs)."""
    root = Path(dest).expanduser()
    return root, open_journal_if_any(root)


plan_sync = _blocking_twin(plan)
pull_sync = _blocking_twin(pull)
check_sync = _blocking_twin(check)
repair_sync = _blocking_twin(repair)


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
        progress: ProgressCallback | None = None,
        **access: Unpack[S3Access],
    ) -> None:
        self.dest = Path(dest).expanduser()  # "~/hcp": the paths returned exist as given
        self.bucket = bucket
        self.release = release
        self.config = config or TransferConfig()
        self.storage = _storage_options(access)
        self.progress = progress
        self.last_report: PullReport | None = None

    def subject(self, subject: str) -> SubjectMirror:
        """One subject of the mirror (``"100307"``): ask it for :meth:`SubjectMirror.files`.
        Nothing is fetched until then."""
        return SubjectMirror(self, subject)


class SubjectMirror:
    """One subject of a :class:`Mirror`: :meth:`files` (blocking) or :meth:`afiles` (async)
    return the local paths of its files under some paths, fetching only what is missing or
    incomplete; a file that cannot be fetched raises :class:`~hcpsync.errors.HcpsyncError`."""

    def __init__(self, mirror: Mirror, subject: str) -> None:
        self.mirror = mirror
        self.subject = subject

    async def afiles(self, *paths: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
        """Local paths of the subject's files under ``paths`` (all when none), fetching what is missing."""
        m = self.mirror
        sel = Selection(
            subjects=(self.subject,), bucket=m.bucket, release=m.release, paths=paths,
            includes=as_items(include), excludes=as_items(exclude),
        )
        async with S3Storage(m.storage, m.config) as s3:
            the_plan = await build_plan(s3, sel)
        try:
            report = await pull(the_plan, m.dest, config=m.config, storage=m.storage, progress=m.progress)
            m.last_report = report
            if not report.ok:
                first = report.failed[0]
                raise HcpsyncError(f"{len(report.failed)} file(s) could not be fetched, e.g. {first.key}: {first.reason}")
            return sorted(m.dest / o.relpath for o in the_plan.objects)
        finally:
            the_plan.close()

    def files(self, *paths: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
        """Blocking twin of :meth:`afiles`."""
        return run_sync(self.afiles(*paths, include=include, exclude=exclude))
