"""Shards on a Dask cluster (the ``dask`` extra: ``pip install "hcpsync[dask]"``).

:func:`pull_shards` submits one Dask task per :class:`~hcpsync.shard.Shard` of a selection (or of a
saved plan) to a ``distributed.Client``, collects them with ``distributed.as_completed`` and returns
one merged :class:`~hcpsync.models.PullReport`.  Dask does the scheduling, the retries and the
placement; hcpsync only says what a shard is::

    from distributed import Client, LocalCluster
    from hcpsync import Selection
    from hcpsync.distributed import pull_shards

    with LocalCluster(n_workers=4, processes=True, threads_per_worker=1) as cluster, Client(cluster) as client:
        report = pull_shards(Selection(subjects=subjects), "/shared/hcp", client, profile="hcp")

Every worker must see the destination at the same path (a shared file system) and reach S3 with its
own credentials (the standard AWS chain on its machine: ``profile`` names a profile there).

What a shard task does: ``hcpsync.api.pull_sync(..., shard=Shard(k, n, by))`` in the worker process,
with its own journal and lock under ``DEST/.hcpsync/shards/<K>-of-<N>/``.  So:

* a worker that dies (killed, its node lost) costs nothing but time: the scheduler gives the task
  to another worker (up to ``distributed.scheduler.allowed-failures`` deaths, 3 by default), and the
  shard resumes from its journal: complete files are skipped, partial ones continued;
* a task that raises (a network outage longer than hcpsync's own retries, a full disk, the shard's
  lock still held) is run again up to ``retries`` times by Dask;
* a shard that fails for good -- its retries spent, or an error another try cannot mend (a bad
  selection, no access to the bucket: not retried) -- becomes a failure of the merged report
  (``Failure(key="shard K/N", reason=...)``), never a hang and never an exception, unless every
  shard failed with the same such error: that is a usage error, raised as
  :class:`~hcpsync.errors.UsageError` (the CLI prints it in one line and exits 2).

Transfer processes: unless ``config.workers`` is set, a shard task moves its bytes in its own process
(``workers=1``): Dask already spreads shards over processes and nodes, and a task that starts its
own pool of processes would compete with its neighbours for the node's cores.  Give
``TransferConfig(workers=N)`` when one Dask worker owns a whole node (``--nthreads 1`` per node).

Shards per node: when the workers declare the resource ``hcpsync`` (``dask worker --resources
hcpsync=2``, or dask-jobqueue's ``worker_extra_args=["--resources", "hcpsync=2"]``), each task asks
for one unit of it, so a node runs at most that many shards at once whatever its threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import distributed
except ImportError as exc:  # pragma: no cover - exercised through the CLI test, in a subprocess
    from .errors import UsageError

    raise UsageError('hcpsync\'s Dask support needs the dask extra: pip install "hcpsync[dask]"') from exc

from .config import TransferConfig
from .dest import prepare_dest, prepare_state_dir
from .errors import DestinationError, HcpsyncError, JournalError, LockedError, UsageError
from .models import PullReport, Selection
from .planfile import Plan
from .preflight import InsufficientSpaceError
from .shard import Shard
from .shardreport import ShardOutcome, merge

__all__ = ["ShardOutcome", "ShardRun", "ShardTask", "dask_client", "merge", "parse_address", "pull_shards", "run_shard"]
from .store.options import StorageOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .api import S3Access

class Stopped(Exception):
    """The run was stopped by :meth:`ShardRun.cancel` (from another thread: the CLI's Ctrl-C)."""


#: the worker resource that caps the shards a node runs at once (``--resources hcpsync=2``)
RESOURCE = "hcpsync"
#: where a plan object given to :func:`pull_shards` is saved for the workers to read
SHARED_PLAN = "plan.sqlite"
#: seconds to wait for a first worker when the number of shards is to be taken from the workers
WORKER_WAIT = 120.0

_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^[a-z][a-z0-9+]*://\S+$|^[^\s/:]+:\d+$")


@dataclass(frozen=True)
class ShardTask:
    """What one shard task needs, sent to the worker: plain, picklable values (no open files)."""

    source: Selection | str  # a selection, or the path of a saved plan on the shared file system
    dest: str
    shard: Shard
    config: TransferConfig
    storage: StorageOptions
    journal: bool
    verify: bool
    checksum: bool = False
    space_check: bool = True


def run_shard(task: ShardTask) -> ShardOutcome:
    """The body of a shard task, in a Dask worker: pull the shard (blocking, its own event loop).

    An error another try cannot mend (exit code 2: a bad selection, no access...) is returned, so
    that Dask does not retry it; any other exception is raised for Dask to retry the task."""
    from . import api

    worker = _worker_address()
    try:
        source: Selection | Plan = Plan.load(task.source) if isinstance(task.source, str) else task.source
        report = api.pull_sync(source, task.dest, shard=task.shard, config=task.config, storage=task.storage,
                               journal=task.journal, verify=task.verify, checksum=task.checksum,
                               space_check=task.space_check)
    except HcpsyncError as err:
        if not _final(err):
            raise
        return ShardOutcome(task.shard, error=str(err), worker=worker, final=True, kind=type(err).__name__)
    return ShardOutcome(task.shard, report=report, worker=worker)


def _final(err: HcpsyncError) -> bool:
    """Whether another try of the shard would fail the same way: a usage-class error (exit 2: a bad
    selection, no such bucket, access denied...), other than an unreachable endpoint, a lock still
    held (the previous try's process may be on its way out), or the destination's folder, state or
    journal that could not be written or opened (a shared file system's hiccup).  Too little space
    at the destination is final: the next try would find the same."""
    if isinstance(err, InsufficientSpaceError):
        return True
    return err.exit_code == 2 and not err.retryable and not isinstance(err, LockedError | DestinationError | JournalError)


def _worker_address() -> str:
    """The address of the Dask worker running this task ("" outside one)."""
    try:
        return str(distributed.get_worker().address)
    except ValueError:
        return ""


def workers_of(client: distributed.Client) -> dict[str, Any]:
    """The scheduler's workers, address -> info (``resources``, ``nthreads``...), all of them."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before the n_workers argument: it lists them all
        info = client.scheduler_info()
    return dict(info.get("workers", {}))


class ShardRun:
    """One run of N shard tasks on a client: :meth:`submit`, then :meth:`collect`; :meth:`cancel`
    (from any thread) stops it: the tasks are cancelled on the cluster and :meth:`submit` or
    :meth:`collect` raises :class:`Stopped`.  :func:`pull_shards` is the usual way in."""

    def __init__(self, source: Selection | Plan | str | os.PathLike[str], dest: str | os.PathLike[str],
                 client: distributed.Client, *, shards: int | None = None, by: str = "subject", retries: int = 2,
                 config: TransferConfig | None = None, journal: bool = True, verify: bool = True,
                 checksum: bool = False, space_check: bool = True, storage: StorageOptions | None = None,
                 resources: Mapping[str, float] | None = None,
                 on_shard: Callable[[ShardOutcome], None] | None = None) -> None:
        _check_options(retries, journal, shards)
        self.client = client
        self.dest = _absolute(dest)
        self.by = by
        self.retries = retries
        self.on_shard = on_shard
        self.workers = workers_of(client)
        self.resources = _resources(resources, self.workers)
        self.source = _shared_source(source, self.dest)
        self.count = shards if shards is not None else self._default_count()
        Shard(0, self.count, by)  # checks N and by, in one line, before anything is submitted
        self.config = _task_config(config)
        self.storage = storage or StorageOptions()
        self.journal, self.verify, self.checksum, self.space_check = journal, verify, checksum, space_check
        self.futures: list[distributed.Future[ShardOutcome]] = []
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._t0 = time.monotonic()

    def _default_count(self) -> int:
        """One shard per worker (waiting for a first one a while); by subject, no more than subjects."""
        if not self.workers:
            try:
                self.client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (TimeoutError, distributed.TimeoutError):
                raise UsageError(f"no Dask worker joined the scheduler in {WORKER_WAIT:g} s: start workers, "
                                 "or give the number of shards") from None
            self.workers = workers_of(self.client)
        count = max(1, len(self.workers))
        if self.by == "subject" and isinstance(self.source, Selection):
            count = min(count, len(self.source.subjects))
        return count

    def submit(self) -> None:
        """One task per shard, keyed ``hcpsync-<K>-of-<N>-<run>`` (unique per shard and run)."""
        run = uuid.uuid4().hex[:8]
        extra: dict[str, Any] = {"resources": dict(self.resources)} if self.resources else {}
        with self._mutex:
            if self._stop.is_set():
                raise Stopped
            self._t0 = time.monotonic()
            for k in range(self.count):
                task = ShardTask(self.source, self.dest, Shard(k, self.count, self.by), self.config, self.storage,
                                 self.journal, self.verify, self.checksum, self.space_check)
                self.futures.append(self.client.submit(run_shard, task, key=f"hcpsync-{task.shard.name}-{run}",
                                                       retries=self.retries, pure=False, **extra))

    def collect(self) -> PullReport:
        """Wait for every shard (in the order they finish); the merged report."""
        outcomes: list[ShardOutcome] = []
        for future in distributed.as_completed(self.futures):
            if self._stop.is_set():
                raise Stopped
            outcome = self._outcome(future)
            outcomes.append(outcome)
            if self.on_shard is not None:
                self.on_shard(outcome)
        if self._stop.is_set():
            raise Stopped
        return merge(outcomes, self.dest, time.monotonic() - self._t0)

    def _outcome(self, future: distributed.Future[ShardOutcome]) -> ShardOutcome:
        """The task's outcome; a task that failed for good (its retries spent, its workers dead) as an error."""
        shard = Shard(*_shard_of(future.key, self.count), self.by)
        try:
            return future.result()
        except Exception as exc:
            name = type(exc).__name__
            why = str(exc) if isinstance(exc, HcpsyncError) else f"{name}: {exc}"
            if name == "KilledWorker":
                why = "its worker died too many times (distributed.scheduler.allowed-failures)"
            return ShardOutcome(shard, error=f"failed after {self.retries} retries: {why}")

    def cancel(self) -> None:
        """Stop the run: cancel the tasks on the cluster; :meth:`collect` raises :class:`Stopped`."""
        with self._mutex:
            self._stop.set()
            futures = list(self.futures)
        if futures:
            with contextlib.suppress(Exception):  # the client may be closing already
                self.client.cancel(futures, force=True)


def pull_shards(
    source: Selection | Plan | str | os.PathLike[str],
    dest: str | os.PathLike[str],
    client: distributed.Client,
    *,
    shards: int | None = None,
    by: str = "subject",
    retries: int = 2,
    config: TransferConfig | None = None,
    journal: bool = True,
    verify: bool = True,
    checksum: bool = False,
    space_check: bool = True,
    resources: Mapping[str, float] | None = None,
    on_shard: Callable[[ShardOutcome], None] | None = None,
    **access: Unpack[S3Access],
) -> PullReport:
    """Pull ``source`` into ``dest`` as ``shards`` Dask tasks on ``client``; one merged report.

    ``source``: a :class:`~hcpsync.models.Selection` (each shard lists its own part), the path of a
    plan saved by ``hcpsync plan --save`` on the shared file system (no listing at all), or a
    :class:`~hcpsync.planfile.Plan` (saved first to ``DEST/.hcpsync/plan.sqlite`` for the workers,
    unless it was loaded from a file).  ``shards``: default one per worker (by subject, at most one
    per subject).  ``by``: ``"subject"`` or ``"key"``.  ``retries``: Dask's, per shard task.
    ``config``: each shard's :class:`~hcpsync.config.TransferConfig` (``workers`` 1 unless set).
    ``verify``, ``checksum``, ``space_check``: as :func:`hcpsync.api.pull`, for each shard (a shard's
    space check counts its own part against the space free when it starts).
    ``resources``: what each task asks of its worker (default ``{"hcpsync": 1}`` when the workers
    declare that resource, else nothing).  ``on_shard(outcome)``: called as each shard finishes.
    S3 access: see :class:`hcpsync.api.S3Access` (credentials come from each worker's own chain).

    A shard that fails for good is a failure of the report (key ``shard K/N``); raises
    :class:`~hcpsync.errors.UsageError` for bad arguments, or when every shard failed with the same
    error another try would not mend.  An interrupt (KeyboardInterrupt) cancels the tasks.
    """
    from .api import _storage_options

    run = ShardRun(source, dest, client, shards=shards, by=by, retries=retries, config=config, journal=journal,
                   verify=verify, checksum=checksum, space_check=space_check, storage=_storage_options(access),
                   resources=resources, on_shard=on_shard)
    done = False
    try:
        run.submit()
        report = run.collect()
        done = True
        return report
    finally:
        if not done:
            run.cancel()


# -- arguments ----------------------------------------------------------------------------------


def _check_options(retries: int, journal: object, shards: int | None) -> None:
    """One line for each bad argument, before anything reaches the cluster."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"retries must be a whole number >= 0, got {retries!r}")
    if not isinstance(journal, bool):
        raise UsageError("shards keep their journals in DEST/.hcpsync/shards/: journal must be True or False, not a path")
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise UsageError(f"the number of shards must be at least 1, got {shards!r}")


def _absolute(dest: str | os.PathLike[str]) -> str:
    """``dest`` as the workers must see it: absolute (their working folder is not ours), ``~`` expanded."""
    from .dest import refuse_uri

    refuse_uri(dest)
    return str(Path(dest).expanduser().absolute())


def _shared_source(source: Selection | Plan | str | os.PathLike[str], dest: str) -> Selection | str:
    """What the tasks get: the selection, or the absolute path of a saved plan (checked here, once).
    A temporary plan (``api.plan`` without ``save``) is saved to ``DEST/.hcpsync/plan.sqlite``."""
    if isinstance(source, Selection):
        return source
    if isinstance(source, Plan):
        if not source.temporary:
            return str(source.path.absolute())
        return str(source.save(prepare_state_dir(prepare_dest(dest)) / SHARED_PLAN))
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser().absolute()
        Plan.load(path).close()  # a missing or foreign file: one line, here rather than in every task
        return str(path)
    raise UsageError(f"expected a Selection, a Plan or the path of a saved plan, got {type(source).__name__}")


def _task_config(config: TransferConfig | None) -> TransferConfig:
    """Each task's transfer settings: one process per task unless ``workers`` was given."""
    cfg = config or TransferConfig()
    return cfg if cfg.workers is not None else replace(cfg, workers=1)


def _resources(asked: Mapping[str, float] | None, workers: Mapping[str, Any]) -> dict[str, float]:
    """The resources each task asks for: ``asked``, else one ``hcpsync`` when some worker declares it.
    Resources no worker declares would leave the tasks waiting forever: refused (when workers are known)."""
    declared = {name for info in workers.values() for name in (info.get("resources") or {})}
    if asked is None:
        return {RESOURCE: 1} if RESOURCE in declared else {}
    missing = sorted(set(asked) - declared)
    if workers and missing:
        raise UsageError(f"no Dask worker declares the resource(s) {', '.join(missing)}: the shards would never run "
                         f"(start workers with --resources {missing[0]}=1)")
    return dict(asked)


def _shard_of(key: object, count: int) -> tuple[int, int]:
    """(K, N) from a task key ``hcpsync-<K>-of-<N>...``."""
    m = re.match(r"hcpsync-(\d+)-of-(\d+)", str(key))
    return (int(m.group(1)), int(m.group(2))) if m else (0, count)


# -- clusters for the CLI -------------------------------------------------------------------------


def parse_address(spec: str) -> tuple[str, int]:
    """``--dask``: ``("local", N)`` for ``local:N``, else ``(address, 0)``; one line when it is neither."""
    spec = spec.strip()
    m = _LOCAL.match(spec)
    if m is not None:
        n = int(m.group(1))
        if not 1 <= n <= 256:
            raise UsageError(f"--dask {spec}: local:N needs 1 <= N <= 256 worker processes")
        return "local", n
    if spec.startswith("local") or not _ADDRESS.match(spec):
        raise UsageError(f"--dask {spec!r}: expected a scheduler address (tcp://HOST:8786) or local:N")
    return spec, 0


@contextlib.contextmanager
def dask_client(spec: str, stop: threading.Event | None = None) -> Iterator[distributed.Client]:
    """A client of the scheduler ``spec`` names (:func:`parse_address`); for ``local:N``, of a
    LocalCluster of N one-thread processes started here and closed on the way out."""
    address, n = parse_address(spec)
    with contextlib.ExitStack() as stack:
        if n:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(address, timeout=30))
            except (OSError, TimeoutError) as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        if stop is not None and stop.is_set():
            raise Stopped
        yield client

