"""``hcpsync plan|pull|demo ...``: argument parsing, exit codes, signals, output.

Exit codes: 0 all succeeded; 1 some objects failed (the rest downloaded) or the run
stopped (disk full); 2 bad usage or input; 130 interrupted (SIGINT), 143 (SIGTERM);
141 stdout closed by its reader (``| head``): a quiet stop, no message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from .. import api
from ..config import TransferConfig, parse_rate, parse_size
from ..engine.progress import ProgressCallback, ProgressEvent, TqdmBar, want_bar
from ..errors import HcpsyncError, SelectionError, UsageError
from ..journal import open_journal_if_any, status_of
from ..models import DEFAULT_BUCKET, DEFAULT_RELEASE, Plan, PullReport, Selection
from ..store.s3 import StorageOptions
from ..text import escape, say
from ..verify import VerifyReport, list_packages, verify_tree
from ..verify.tree import check_dest, discover_subjects

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
#: stdout's reader went away (`| head`): the status a shell reports for a tool killed by SIGPIPE
EXIT_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, escape(f"hcpsync: error: {message} (see '{self.prog} --help')") + "\n")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- argument groups -------------------------------------------------------------------


def add_selection_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"S3 bucket (default {DEFAULT_BUCKET})")
    g.add_argument("--release", default=DEFAULT_RELEASE, help=f"release key prefix: HCP_1200, HCP_Retest, q1... (default {DEFAULT_RELEASE})")
    g.add_argument("--subject", action="append", default=[], metavar="ID", help="subject ID (repeatable)")
    g.add_argument("--subjects-file", metavar="FILE", help="file of subject IDs, one a line ('#' comments allowed)")
    g.add_argument("--path", action="append", default=[], metavar="P", help="path inside the subject folder, e.g. T1w or MNINonLinear/Results/tfMRI_MOTOR_LR (repeatable)")
    g.add_argument("--include", action="append", default=[], metavar="GLOB", help="keep only keys (relative to the release) matching GLOB (repeatable)")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="drop keys matching GLOB (repeatable)")
    g.add_argument("--package", action="append", default=[], metavar="NAME", help="HCP package, e.g. 3T_tfMRI_MOTOR_preproc (repeatable)")


def add_storage_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("S3 access")
    g.add_argument("--endpoint-url", help="S3 endpoint (default: AWS, or $AWS_ENDPOINT_URL)")
    g.add_argument("--profile", help="AWS profile holding your ConnectomeDB keys, e.g. hcp")
    g.add_argument("--region", help="AWS region (default: from the profile, else us-east-1)")
    g.add_argument("--no-sign-request", action="store_true", help="send anonymous requests (public buckets)")
    g.add_argument("--request-payer", action="store_true", help="accept requester-pays charges")


def add_transfer_args(p: argparse.ArgumentParser) -> None:
    d = TransferConfig()
    g = p.add_argument_group("transfer")
    g.add_argument("--concurrency", type=int, default=d.concurrency, help=f"requests in flight across all files (default {d.concurrency})")
    g.add_argument("--part-size", default=None, metavar="SIZE", help="byte-range size for large objects, e.g. 8MiB (default 8MiB)")
    g.add_argument("--multipart-threshold", default=None, metavar="SIZE", help="objects above this are split into ranges (default 16MiB)")
    g.add_argument("--max-bandwidth", default=None, metavar="RATE", help="cap across all workers, e.g. 200MB/s or 1Gbit/s")
    g.add_argument("--retries", type=int, default=d.retries, help=f"retries per request for throttling/5xx/resets (default {d.retries})")
    g.add_argument("--read-timeout", type=float, default=d.read_timeout, help=f"seconds without data before a connection is retried (default {d.read_timeout:g})")
    g.add_argument("--low-speed-limit", default=None, metavar="RATE", help="a body slower than RATE over --low-speed-time is retried, e.g. 10KB/s; 0: off (default 1KiB/s)")
    g.add_argument("--low-speed-time", type=float, default=d.low_speed_time, metavar="S", help=f"seconds of network wait the low-speed limit is measured over (default {d.low_speed_time:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hcpsync", description="Fast, resumable, verified downloads of HCP data from S3.")
    parser.add_argument("--version", action="version", version=f"hcpsync {__import__('hcpsync').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("plan", help="list what a selection covers (files, bytes, per subject)")
    add_selection_args(p)
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the plan, with every object, as JSON")

    p = sub.add_parser("pull", help="download a selection")
    add_selection_args(p)
    p.add_argument("--dest", required=True, metavar="DIR", help="local folder: keys land at DIR/<key minus release prefix>")
    add_transfer_args(p)
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-verify", action="store_true", help="do not check MD5s against the .xdlm manifests / S3 ETags (size only)")

    g = p.add_argument_group("journal (resume)")
    g.add_argument("--journal", metavar="PATH", help="journal file (default DIR/.hcpsync/journal.sqlite)")
    g.add_argument("--reset-journal", action="store_true", help="start a new journal (complete files are still skipped)")
    g.add_argument("--no-journal", action="store_true", help="keep no journal: an interrupted file restarts from byte 0")

    p = sub.add_parser("status", help="what a destination's journal says: complete / partial / pending, last run")
    p.add_argument("--dest", required=True, metavar="DIR")
    p.add_argument("--journal", metavar="PATH", help="journal file (default DIR/.hcpsync/journal.sqlite)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="check a local tree against HCP's .xdlm checksum manifests")
    add_selection_args(p)
    p.add_argument("--dest", required=True, metavar="DIR", help="local tree (subjects default to the subject folders in DIR)")
    p.add_argument("--offline", action="store_true", help="use the manifests under DIR/<subject>/.xdlm/; no network")
    p.add_argument("--full", action="store_true", help="hash every file, even those whose checksum is cached")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="hashing threads (default: one per CPU)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_storage_args(p)

    p = sub.add_parser("packages", help="list the HCP download packages of subjects, with files and sizes")
    g = p.add_argument_group("selection")
    g.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"S3 bucket (default {DEFAULT_BUCKET})")
    g.add_argument("--release", default=DEFAULT_RELEASE, help=f"release key prefix (default {DEFAULT_RELEASE})")
    g.add_argument("--subject", action="append", default=[], metavar="ID", required=True, help="subject ID (repeatable)")
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the packages as JSON")

    p = sub.add_parser("demo", help="pull a synthetic HCP subject from a local S3 endpoint (no credentials needed)")
    p.add_argument("--dest", default="hcpsync-demo", metavar="DIR", help="where to download (default ./hcpsync-demo)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    return parser


# -- building config objects from arguments --------------------------------------------


def read_subjects_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read subjects file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"subjects file {path} is not UTF-8 text") from exc
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    if not out:
        raise SelectionError(f"subjects file {path} lists no subject")
    return out


def selection_from(args: argparse.Namespace) -> Selection:
    subjects = list(args.subject)
    if args.subjects_file:
        subjects += read_subjects_file(args.subjects_file)
    return Selection(
        subjects=tuple(subjects), bucket=args.bucket, release=args.release, paths=tuple(args.path),
        includes=tuple(args.include), excludes=tuple(args.exclude), packages=tuple(args.package),
    )


def storage_from(args: argparse.Namespace) -> StorageOptions:
    return StorageOptions(
        endpoint_url=args.endpoint_url, profile=args.profile, region=args.region,
        no_sign_request=args.no_sign_request, request_payer=args.request_payer,
    )


def config_from(args: argparse.Namespace) -> TransferConfig:
    d = TransferConfig()
    part = parse_size(args.part_size, "--part-size") if args.part_size else d.part_size
    threshold = parse_size(args.multipart_threshold, "--multipart-threshold") if args.multipart_threshold else max(d.multipart_threshold, part)
    return TransferConfig(
        concurrency=args.concurrency, part_size=part, multipart_threshold=threshold,
        max_bandwidth=parse_rate(args.max_bandwidth) if args.max_bandwidth else None,
        retries=args.retries, read_timeout=args.read_timeout,
        low_speed_limit=_low_speed(args.low_speed_limit, d.low_speed_limit), low_speed_time=args.low_speed_time,
    )


def _low_speed(text: str | None, default: int) -> int:
    if text is None:
        return default
    return 0 if text.strip() in ("0", "0/s") else parse_rate(text)


# -- output ------------------------------------------------------------------------------


def print_plan(plan: Plan, out: TextIO) -> None:
    sel = plan.selection
    say(f"s3://{sel.bucket}/{sel.release}/: {len(plan.objects)} files, {human(plan.total_bytes)} ({plan.total_bytes} bytes)", out)
    for subject, (n, b) in plan.per_subject().items():
        say(f"  {subject}: {n} files, {human(b)}", out)
    for r in plan.rejected:
        say(f"  refused '{r.key}': {r.reason}", out)
    for note in plan.notes:
        say(f"  note: {note}", out)


def print_report(report: PullReport, out: TextIO) -> None:
    rows = [
        ("planned", report.planned_files, report.planned_bytes),
        ("transferred", report.transferred_files, report.transferred_bytes),
        ("skipped", report.skipped_files, report.skipped_bytes),
    ]
    for label, n, b in rows:
        say(f"{label:<12} {n:>8} files  {human(b):>11}", out)
    say(f"{'failed':<12} {len(report.failed):>8} files", out)
    if report.verified_files or report.unverified_files:
        say(f"{'verified':<12} {report.verified_files:>8} files  ({report.unverified_files} size-checked only)", out)
    say(
        f"elapsed {report.elapsed:.2f} s, mean rate {human(report.rate)}/s, "
        f"{report.requests} requests, {report.retries} retries",
        out,
    )
    for f in report.failed[:10]:
        say(f"  FAILED {f.key}: {f.reason}", out)
    if len(report.failed) > 10:
        say(f"  ... and {len(report.failed) - 10} more (see --json)", out)
    for note in report.notes[:20]:
        say(f"  note: {note}", out)


def emit_json(doc: object) -> None:
    """JSON on stdout (``ensure_ascii``: control, bidi and all non-ASCII characters come out as \\u escapes)."""
    json.dump(doc, sys.stdout, indent=1, ensure_ascii=True)
    sys.stdout.write("\n")


def progress_for(args: argparse.Namespace) -> tuple[ProgressCallback | None, TqdmBar | None]:
    if want_bar(args.no_progress):
        bar = TqdmBar()
        return bar, bar
    return None, None


# -- commands ----------------------------------------------------------------------------


async def cmd_plan(args: argparse.Namespace) -> int:
    plan = await api.plan(selection_from(args), storage=storage_from(args))
    if args.json:
        emit_json(plan.to_json())
    else:
        print_plan(plan, sys.stdout)
    return EXIT_OK


async def cmd_pull(args: argparse.Namespace) -> int:
    sel, cfg, opts = selection_from(args), config_from(args), storage_from(args)
    callback, bar = progress_for(args)
    try:
        if args.no_journal and (args.journal or args.reset_journal):
            raise UsageError("--no-journal cannot be combined with --journal or --reset-journal")
        journal: str | bool = False if args.no_journal else (args.journal or True)
        report = await api.pull(sel, args.dest, config=cfg, storage=opts, progress=callback,
                                journal=journal, reset_journal=args.reset_journal, verify=not args.no_verify)
    finally:
        if bar is not None:
            bar.close()
    emit_report(report, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def emit_report(report: PullReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_json())
    else:
        print_report(report, sys.stdout)


async def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo.server import run_demo

    callback, bar = progress_for(args)
    try:
        report = await run_demo(args.dest, progress=callback, out=sys.stderr if args.json else sys.stdout)
    finally:
        if bar is not None:
            bar.close()
    emit_report(report, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


async def cmd_status(args: argparse.Namespace) -> int:
    st = status_of(Path(args.dest), Path(args.journal) if args.journal else None)
    if args.json:
        emit_json(st.to_json())
        return EXIT_OK
    say(f"journal {st.path}")
    say(f"{'complete':<9} {st.files_complete:>8} files  {human(st.bytes_complete):>11}")
    say(f"{'partial':<9} {st.files_partial:>8} files  {human(st.bytes_partial_done):>11} done")
    say(f"{'pending':<9} {st.files_pending:>8} files  {human(st.bytes_pending):>11}")
    say(f"{'total':<9} {st.files_total:>8} files  {human(st.bytes_total):>11}")
    if st.last_run:
        lr = st.last_run
        say(f"last run: started {lr['started']}, {'ended ' + lr['ended'] if lr['ended'] else 'not ended'}: {lr['outcome']}")
    say(f"active: {'yes, pid ' + str(st.active_pid) if st.active_pid else 'no'}")
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    subjects = list(args.subject) + (read_subjects_file(args.subjects_file) if args.subjects_file else [])
    if not subjects:  # default: the subject folders in DEST
        subjects = discover_subjects(check_dest(args.dest))
        if not subjects:
            raise UsageError(f"no subject folders under {args.dest}: give --subject ID")
    sel = Selection(
        subjects=tuple(subjects), bucket=args.bucket, release=args.release,
        paths=tuple(args.path), includes=tuple(args.include), excludes=tuple(args.exclude), packages=tuple(args.package),
    )
    bar = TqdmBar(desc="verify") if want_bar(args.no_progress) else None

    def progress(files: int, files_total: int, done: int, total: int) -> None:
        if bar is not None:
            bar(ProgressEvent(files, files_total, done, total, 0, 0.0))

    # the journal of a pull into DEST caches verified checksums (by size and mtime)
    jnl = open_journal_if_any(Path(args.dest))
    try:
        report = await verify_tree(args.dest, sel, offline=args.offline, full=args.full, jobs=args.jobs,
                                   storage=None if args.offline else storage_from(args), progress=progress,
                                   cache=jnl.checksum_cache() if jnl is not None else None)
    finally:
        if jnl is not None:
            jnl.close()
        if bar is not None:
            bar.close()
    if args.json:
        emit_json(report.to_json())
    else:
        print_verify_report(report, sys.stdout)
    return EXIT_OK if report.ok else EXIT_FAILED


def print_verify_report(report: VerifyReport, out: TextIO) -> None:
    c = report.counts
    say(f"{report.dest} against {report.source}: {len(report.subjects)} subject(s)", out)
    for status in ("ok", "mismatched", "missing", "unlisted", "unverifiable"):
        say(f"{status:<13} {c[status]:>8} files", out)
    say(f"hashed {report.hashed_files} files, {human(report.hashed_bytes)} in {report.hash_seconds:.2f} s "
          f"({report.rate / 1e6:.1f} MB/s, {report.jobs} threads); {report.cached_files} from the checksum cache", out)
    for chk in report.by_status("mismatched")[:50]:
        why = chk.detail or f"expected {chk.expected}, got {chk.actual}"
        say(f"  MISMATCHED {chk.relpath}: {why}", out)
    for status in ("missing", "unlisted", "unverifiable"):
        items = [chk for chk in report.checks if chk.status == status]
        for chk in items[:20]:
            say(f"  {status.upper()} {chk.relpath}{': ' + chk.detail if chk.detail else ''}", out)
        if len(items) > 20:
            say(f"  ... and {len(items) - 20} more {status} (see --json)", out)
    for problem in report.problems[:20]:
        say(f"  problem: {problem}", out)
    for note in report.notes:
        say(f"  note: {note}", out)


async def cmd_packages(args: argparse.Namespace) -> int:
    rep = await list_packages(args.subject, bucket=args.bucket, release=args.release, storage=storage_from(args))
    if args.json:
        emit_json(rep.to_json())
        return EXIT_OK
    for p in rep.packages:
        unsized = f" (+{p.unsized} of unknown size)" if p.unsized else ""
        say(f"{p.subject}  {p.name:<40} {p.files:>7} files  {human(p.bytes):>11}{unsized}")
    for problem in rep.problems:
        say(f"  problem: {problem}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "plan": cmd_plan,
    "pull": cmd_pull,
    "verify": cmd_verify,
    "packages": cmd_packages,
    "status": cmd_status,
    "demo": cmd_demo,
}


async def _run_with_signals(coro: Awaitable[int]) -> int:
    """Run the command; SIGINT/SIGTERM cancel it (connections and files are closed on the way out)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:
            received.append(signum)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return EXIT_SIGINT if received[0] == signal.SIGINT else EXIT_SIGTERM
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's final flush
    except BrokenPipeError:  # `hcpsync plan --json | head`: stop quietly, as Unix tools do
        _discard_stdout()
        return EXIT_PIPE
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        code = asyncio.run(_run_with_signals(COMMANDS[args.command](args)))
    except HcpsyncError as err:
        say(f"hcpsync: error: {err}", sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        code = EXIT_SIGINT
    except BrokenPipeError:
        raise
    except Exception as exc:  # never a traceback for the user; HCPSYNC_DEBUG=1 shows it
        if os.environ.get("HCPSYNC_DEBUG"):
            raise
        say(f"hcpsync: internal error: {type(exc).__name__}: {exc} (set HCPSYNC_DEBUG=1 for details)", sys.stderr)
        return 3
    if code in (EXIT_SIGINT, EXIT_SIGTERM):
        say("hcpsync: interrupted; run the same command again to resume", sys.stderr)
    return code


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that nothing more (the exit-time flush) fails on the closed pipe."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):  # stdout is no real file (redirected in-process)
        pass


def entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
