"""Parsed arguments -> the library's inputs: Selection, StorageOptions, TransferConfig, journal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import TransferConfig, parse_rate, parse_size
from ..dest import refuse_uri
from ..errors import UsageError
from ..models import DEFAULT_BUCKET, DEFAULT_RELEASE, Selection
from ..store.options import StorageOptions
from ..text import say
from ..uri import parse_s3_uri

if TYPE_CHECKING:
    from ..planfile import Plan
    from ..shard import Shard


def subjects_from(args: argparse.Namespace) -> list[str]:
    """``--subject`` IDs, then those of ``--subjects-file`` (a CSV's rows kept by ``--where``: how
    many is said on stderr)."""
    from ..subjects import Condition, read_subjects

    column, where = getattr(args, "subjects_column", None), getattr(args, "where", None) or []
    if not args.subjects_file:
        if column or where:
            raise UsageError("--subjects-column and --where select rows of --subjects-file FILE (a CSV)")
        return list(args.subject)
    conditions = [Condition.parse(w) for w in where]
    found = read_subjects(args.subjects_file, column, conditions)
    if found.csv:
        say(f"hcpsync: {found.summary(args.subjects_file, conditions)}", sys.stderr)
    return list(args.subject) + found.subjects


def selection_from(args: argparse.Namespace, subjects: Sequence[str] | None = None) -> Selection:
    """The selection the arguments describe (``subjects`` instead of the arguments' own, if given)."""
    uri = getattr(args, "source", None)
    if uri is not None:
        return _uri_selection(args, uri)
    return Selection(
        subjects=tuple(subjects_from(args) if subjects is None else subjects), bucket=args.bucket, release=args.release,
        paths=tuple(args.path), filters=tuple(args.filters), packages=tuple(args.package),
    )


def _uri_selection(args: argparse.Namespace, uri: str) -> Selection:
    """``s3://BUCKET/PREFIX/`` in place of --bucket, --release, --subject (and --path, when it names one)."""
    src = parse_s3_uri(uri)
    given = [opt for opt, on in (("--subject", args.subject), ("--subjects-file", args.subjects_file),
                                 ("--bucket", args.bucket != DEFAULT_BUCKET), ("--release", args.release != DEFAULT_RELEASE),
                                 ("--path", args.path and src.path)) if on]
    if given:
        raise UsageError(f"{uri} already names the bucket, release, subject and path: drop {', '.join(given)}")
    return Selection(
        subjects=(src.subject,), bucket=src.bucket, release=src.release,
        paths=(src.path,) if src.path else tuple(args.path), filters=tuple(args.filters), packages=tuple(args.package),
    )


def dest_from(args: argparse.Namespace) -> str:
    """The local destination: ``DEST`` after the source, or ``--dest``; never a URI."""
    if args.dest_dir is not None and args.dest is not None:
        raise UsageError(f"two destinations: {args.dest_dir} and --dest {args.dest}; give one")
    dest: str | None = args.dest if args.dest is not None else args.dest_dir
    if dest is None:
        raise UsageError("no destination: give a local folder, as in 'hcpsync pull s3://BUCKET/PREFIX/ DEST' or --dest DIR")
    refuse_uri(dest)
    return dest


def storage_from(args: argparse.Namespace) -> StorageOptions:
    return StorageOptions(
        endpoint_url=args.endpoint_url, profile=args.profile, region=args.region,
        no_sign_request=args.no_sign_request, request_payer=args.request_payer,
        ca_bundle=args.ca_bundle, verify_ssl=not args.no_verify_ssl,
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
        workers=getattr(args, "workers", None), **list_concurrency(args),
    )


def list_concurrency(args: argparse.Namespace) -> dict[str, int]:
    """``--list-concurrency N`` as TransferConfig's keyword, when given."""
    n = getattr(args, "list_concurrency", None)
    return {} if n is None else {"list_concurrency": n}


def shard_from(args: argparse.Namespace) -> Shard | None:
    """``--shard K/N`` / ``auto/N`` and ``--shard-by``; None without ``--shard``."""
    from ..shard import Shard

    if getattr(args, "shard", None) is None:
        if getattr(args, "shard_by", "subject") != "subject" and getattr(args, "dask", None) is None:
            raise UsageError("--shard-by goes with --shard K/N or --dask")
        return None
    if args.journal:
        raise UsageError("a shard keeps its journal in DEST/.hcpsync/shards/: --journal PATH does not go with --shard")
    return Shard.parse(args.shard, args.shard_by)


def check_dask_args(args: argparse.Namespace) -> None:
    """``--dask`` runs every shard itself: no ``--shard``, no journal path; ``--shards`` needs it."""
    if getattr(args, "dask", None) is None:
        if getattr(args, "shards", None) is not None:
            raise UsageError("--shards M goes with --dask; on one machine of many, use --shard K/N")
        return
    clash = [opt for opt, on in (("--shard K/N", args.shard), ("--journal PATH", args.journal),
                                 ("--reset-journal", args.reset_journal)) if on]
    if clash:
        raise UsageError(f"--dask runs every shard, each with its journal in DEST/.hcpsync/shards/: drop {', '.join(clash)}"
                         + (" (--shards M sets their number)" if args.shard else ""))
    if args.shards is not None and args.shards < 1:
        raise UsageError(f"--shards {args.shards}: the number of shards must be at least 1")


def check_checksum_args(args: argparse.Namespace) -> None:
    """``--checksum`` checks files by checksum: not with ``--no-verify``."""
    if args.checksum and args.no_verify:
        raise UsageError("--checksum does not go with --no-verify: drop one")


def plan_source(args: argparse.Namespace) -> Plan | None:
    """The saved plan of ``pull --plan FILE`` (None without): it gives the selection, so no
    selection option may come with it."""
    if getattr(args, "plan_file", None) is None:
        return None
    given = [opt for opt, on in (("a source URI", args.source), ("--subject", args.subject),
                                 ("--subjects-file", args.subjects_file), ("--path", args.path),
                                 ("--include/--exclude", args.filters), ("--package", args.package),
                                 ("--bucket", args.bucket != DEFAULT_BUCKET),
                                 ("--release", args.release != DEFAULT_RELEASE)) if on]
    if given:
        raise UsageError(f"--plan {args.plan_file} gives the selection: drop {', '.join(given)}")
    from ..planfile import Plan

    return Plan.load(args.plan_file)


def _low_speed(text: str | None, default: int) -> int:
    if text is None:
        return default
    return 0 if text.strip() in ("0", "0/s") else parse_rate(text)


def journal_from(args: argparse.Namespace) -> str | bool:
    """``api.pull``'s ``journal``: False (none), True (the default path) or a path."""
    if args.no_journal and (args.journal or args.reset_journal):
        raise UsageError("--no-journal cannot be combined with --journal or --reset-journal")
    return False if args.no_journal else (args.journal or True)
