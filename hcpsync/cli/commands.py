"""One small async function per ``hcpsync`` command: arguments in, result rendered, exit code out."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HcpsyncError, UsageError
from ..text import say
from .codes import EXIT_FAILED, EXIT_OK
from .options import (
    check_checksum_args,
    check_dask_args,
    config_from,
    dest_from,
    journal_from,
    list_concurrency,
    plan_source,
    selection_from,
    shard_from,
    storage_from,
    subjects_from,
)
from .render import Result, render, retry_hint

if TYPE_CHECKING:
    from ..config import TransferConfig
    from ..engine.progress import TqdmBar
    from ..models import PullReport, Selection
    from ..planfile import Plan
    from ..repair import RepairReport
    from ..shard import Shard
    from ..shardreport import ShardOutcome
    from ..store.options import StorageOptions
    from ..verify.tree import VerifyReport

# Each command imports what it runs (the network stack, the journal, verification, doctor...) when
# it runs: one command's start-up does not pay for the others.


@contextmanager
def progress_bar(args: argparse.Namespace, desc: str = "pull") -> Iterator[TqdmBar | None]:
    """A progress bar on stderr unless ``--no-progress`` or stderr is no TTY; closed on the way out."""
    from ..engine.progress import TqdmBar, want_bar

    bar = TqdmBar(desc=desc) if want_bar(args.no_progress or getattr(args, "quiet", False)) else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


async def cmd_plan(args: argparse.Namespace) -> int:
    from ..config import TransferConfig

    return await show_plan(args, selection_from(args), TransferConfig(**list_concurrency(args)), storage_from(args),
                           save=args.save, coverage=args.coverage)


async def show_plan(args: argparse.Namespace, source: Selection | Plan, config: TransferConfig,
                    storage: StorageOptions, save: str | None = None, shard: Shard | None = None,
                    coverage: bool = False) -> int:
    """The plan's summary; or (``--json``) JSON Lines, each listing unit's objects printed as it is
    planned, so ``plan --json | head`` answers at once.  A reader that goes away ends the listing:
    exit 0.  ``source``: a selection to list, or a saved plan (``pull --plan FILE --dryrun``)."""
    from .. import api
    from ..planfile import Plan
    from .planlines import PlanLines

    lines = PlanLines(sys.stdout) if args.json else None
    try:
        if isinstance(source, Plan):
            plan = source
            if lines is not None:
                lines.objects(plan)
        else:
            plan = await api.plan(source, config=config, storage=storage, save=save, shard=shard, coverage=coverage,
                                  on_unit=lines.unit if lines is not None else None)
        try:
            if lines is not None:
                lines.finish(plan)
            elif not getattr(args, "quiet", False):
                render(plan, False)
                if save:
                    say(f"plan saved to {save}: hcpsync pull --plan {save} --dest DIR", sys.stdout)
        finally:
            plan.close()
    except BrokenPipeError:  # `plan --json | head`: the reader has what it wanted
        from .main import discard_stdout

        discard_stdout()
    return EXIT_OK


def render_unless_quiet(result: Result, args: argparse.Namespace, ok: bool = True) -> None:
    """``-q``: no report when all went well (``--json`` is always printed: it was asked for)."""
    if args.json or not ok or not getattr(args, "quiet", False):
        render(result, args.json)


async def cmd_pull(args: argparse.Namespace) -> int:
    from .. import api

    check_dask_args(args)
    saved, shard = plan_source(args), shard_from(args)
    cfg, opts = config_from(args), storage_from(args)
    sel: Selection | Plan = saved if saved is not None else selection_from(args)
    journal, dest = journal_from(args), dest_from(args)
    check_checksum_args(args)
    if args.dryrun:  # aws-cli's --dryrun: what would be fetched, nothing written (as `hcpsync plan`)
        if saved is not None and shard is not None:
            raise UsageError("--dryrun of a saved plan shows the whole plan: drop --shard")
        return await show_plan(args, sel, cfg, opts, shard=shard)
    try:
        if args.dask is not None:
            report = await pull_on_dask(args, sel, dest, cfg, opts, journal is not False)
        else:
            with progress_bar(args) as bar:
                report = await api.pull(sel, dest, config=cfg, storage=opts, progress=bar, shard=shard,
                                        journal=journal, reset_journal=args.reset_journal, verify=not args.no_verify,
                                        space_check=not args.no_space_check, checksum=args.checksum)
    except asyncio.CancelledError:
        if args.json:  # a JSON reader still gets a document: where things stand
            render_interrupted(dest, None if journal is False else journal)
        raise
    render_unless_quiet(report, args, report.ok)
    if args.json and not report.ok:
        say(f"hcpsync: {retry_hint(report)}", sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


async def pull_on_dask(args: argparse.Namespace, source: Selection | Plan, dest: str, cfg: TransferConfig,
                       storage: StorageOptions, journal: bool) -> PullReport:
    """``pull --dask``: the shards as tasks of a Dask cluster (:mod:`hcpsync.distributed`), driven
    from a thread; an interrupt cancels the tasks and closes the client (and a ``local:N`` cluster)
    before it ends the command."""
    import threading

    from .. import distributed as hd  # one line (pip install "hcpsync[dask]") without distributed

    hd.parse_address(args.dask)  # a bad address: one line, before any thread
    stop = threading.Event()
    runs: list[hd.ShardRun] = []

    def on_shard(outcome: ShardOutcome) -> None:
        if not getattr(args, "quiet", False):
            say(f"hcpsync: {shard_line(outcome)}", sys.stderr)

    def work() -> PullReport:
        with hd.dask_client(args.dask, stop) as client:
            run = hd.ShardRun(source, dest, client, shards=args.shards, by=args.shard_by, config=cfg, journal=journal,
                              verify=not args.no_verify, checksum=args.checksum, space_check=not args.no_space_check,
                              storage=storage, on_shard=on_shard)
            runs.append(run)
            if stop.is_set():
                raise hd.Stopped
            run.submit()
            return run.collect()

    thread = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        stop.set()
        for run in runs:
            run.cancel()
        await _unwind(thread)
        raise


def shard_line(outcome: ShardOutcome) -> str:
    """One line as a Dask shard ends: its counts, or why it failed."""
    r, where = outcome.report, f" on {outcome.worker}" if outcome.worker else ""
    if r is None:
        return f"shard {outcome.shard} failed{where}: {outcome.error}"
    return (f"shard {outcome.shard} done{where}: {r.transferred_files} fetched, {r.skipped_files} skipped, "
            f"{len(r.failed)} failed")


async def _unwind(thread: asyncio.Future[PullReport]) -> None:
    """Wait for the Dask thread to close its client and cluster; later interrupts do not cut it short."""
    while not thread.done():
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            continue
        except Exception:  # the stop's own exception (hcpsync.distributed.Stopped...): expected
            return


def render_interrupted(dest: str, journal: str | bool | None) -> None:
    """``pull --json`` interrupted: the destination and what its journal now says."""
    from ..journal import status_of

    path = Path(journal) if isinstance(journal, str) else None
    try:
        status: object = status_of(Path(dest).expanduser(), path).to_json() if journal is not None else None
    except HcpsyncError:
        status = None
    print(json.dumps({"ok": False, "interrupted": True, "dest": dest, "status": status}, indent=1, ensure_ascii=True))


async def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo.server import require_demo_deps, run_demo

    require_demo_deps()
    with progress_bar(args) as bar:
        report = await run_demo(args.dest, progress=bar, out=sys.stderr if args.json else sys.stdout)
    render(report, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


async def cmd_status(args: argparse.Namespace) -> int:
    from ..dest import refuse_uri
    from ..journal import status_of

    refuse_uri(args.dest)
    render(status_of(Path(args.dest), Path(args.journal) if args.journal else None), args.json)
    return EXIT_OK


def _verify_selection(args: argparse.Namespace) -> Selection | None:
    """The selection the options give (subjects default to the subject folders in DEST); None
    when they give none and a pull into DEST recorded one: then ``api.check`` takes that."""
    from .. import api
    from ..dest import refuse_uri
    from ..verify.walk import check_dest, discover_subjects

    refuse_uri(args.dest)
    chosen = args.subject or args.subjects_file or args.path or args.filters or args.package
    if not chosen and api.last_selection(args.dest) is not None:
        return None
    subjects = subjects_from(args)
    if not subjects:
        subjects = discover_subjects(check_dest(args.dest))
        if not subjects:
            raise UsageError(f"no subject folders under {args.dest}: give --subject ID")
    return selection_from(args, subjects)


async def cmd_verify(args: argparse.Namespace) -> int:
    from .. import api
    from ..engine.progress import ProgressEvent

    with progress_bar(args, desc="verify") as bar:

        def progress(files: int, files_total: int, done: int, total: int) -> None:
            if bar is not None:
                bar(ProgressEvent(files, files_total, done, total, 0, 0.0))

        if args.repair:
            if args.offline:
                raise UsageError("--repair fetches from S3: it does not go with --offline")
            report: VerifyReport | RepairReport = await api.repair(
                _verify_selection(args), args.dest, full=args.full, jobs=args.jobs, storage=storage_from(args),
                progress=progress)
        else:
            report = await api.check(_verify_selection(args), args.dest, offline=args.offline, full=args.full,
                                     jobs=args.jobs, storage=None if args.offline else storage_from(args),
                                     progress=progress)
    render_unless_quiet(report, args, report.ok)
    return EXIT_OK if report.ok else EXIT_FAILED


async def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import DEFAULT_RELEASES, run_doctor

    report = await run_doctor(storage_from(args), args.bucket, args.release or DEFAULT_RELEASES, args.dest)
    render(report, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


async def cmd_packages(args: argparse.Namespace) -> int:
    from ..verify.packages import list_packages

    rep = await list_packages(args.subject, bucket=args.bucket, release=args.release, storage=storage_from(args))
    render(rep, args.json)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "plan": cmd_plan,
    "pull": cmd_pull,
    "verify": cmd_verify,
    "packages": cmd_packages,
    "status": cmd_status,
    "demo": cmd_demo,
    "doctor": cmd_doctor,
}
