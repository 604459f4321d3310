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
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from .config import TransferConfig
from .engine.events import Listener
from .engine.progress import ProgressCallback
from .errors import HcpsyncError
from .models import DEFAULT_BUCKET, DEFAULT_RELEASE, Plan, PullReport, Selection
from .planning import plan_for
from .planning.listing import build_plan
from .run import PullOptions, run_pull
from .store.s3 import S3Storage, StorageOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")


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


async def plan(selection: Selection, *, config: TransferConfig | None = None, **access: Unpack[S3Access]) -> Plan:
    """List what ``selection`` covers: every object with key, size, ETag and local path."""
    opts = _storage_options(access)
    async with S3Storage(opts, config or TransferConfig()) as s3:
        the_plan, _ = await plan_for(s3, selection)  # resolves --package through the manifests
        return the_plan


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
    **access: Unpack[S3Access],
) -> PullReport:
    """Download a selection (or a ready plan) to ``dest``; returns a :class:`PullReport`.

    S3 access: see :class:`S3Access`.  Per-object failures are collected in the report, not raised.  Raises
    :class:`~hcpsync.errors.HcpsyncError` for what stops the whole run (bad selection,
    no credentials, disk full, another pull on the same destination...).  Cancelling the
    task closes every connection and file and leaves the journal consistent.

    ``journal``: True for ``DEST/.hcpsync/journal.sqlite``, a path, or False for none (then
    nothing is resumable beyond complete files).  ``reset_journal`` starts it afresh.
    ``sync_interval``: seconds between sync points that make journal records power-loss safe.
    ``verify``: check each file's MD5 (from the subjects' ``.xdlm`` manifests, else a plain-MD5
    S3 ETag) before it reaches its final path; mismatches are fetched again, then failed.
    ``on_outcome``: called with each :mod:`hcpsync.engine.events` record (a part or file landed,
    a file skipped or failed), in order, on the event loop's thread.
    """
    opts = PullOptions(
        config=config or TransferConfig(),
        storage=_storage_options(access),
        progress=progress, listener=on_outcome, journal=journal, reset_journal=reset_journal,
        sync_interval=sync_interval, verify=verify,
    )
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
        progress: ProgressCallback | None = None,
        **access: Unpack[S3Access],
    ) -> None:
        self.dest = Path(dest)
        self.bucket = bucket
        self.release = release
        self.config = config or TransferConfig()
        self.storage = _storage_options(access)
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
