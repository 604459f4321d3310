"""The ``hcpsync`` argument parser: subcommands, argument groups, help texts."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from ..config import TransferConfig
from ..models import DEFAULT_BUCKET, DEFAULT_RELEASE
from ..text import escape
from ..version import __version__
from .codes import EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, escape(f"hcpsync: error: {message} (see '{self.prog} --help')") + "\n")


#: the positionals (``nargs="?"``) that operands given after options may fill, in order
_OPERANDS = ("source", "dest_dir")
_SOURCE_HELP = ("an S3 folder, as aws-cli takes it: s3://hcp-openaccess/HCP_1200/100307/T1w/ (release, subject, "
                "path) or any prefix, s3://openneuro.org/ds000001/ (the last segment is the subject folder); "
                "instead of --bucket/--release/--subject/--path")


class _Filter(argparse.Action):
    """``--include`` / ``--exclude`` into one ordered list of (kind, glob): order decides, as in aws-cli."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), (self.const, values)])


_FILTER_HELP = (
    "; filters apply in order, the last one matching a key decides, as in aws-cli "
    "(--exclude '*' --include '*.nii.gz'); with any --include, keys matching none are dropped. "
    "GLOB ('*' matches '/' too) is matched against the key relative to the subject folder when its first "
    "segment is a plain name (T1w/*, like --path), the full key when it starts with the release "
    "(HCP_1200/100307/*), else the key relative to the release (100307/T1w/*, *.nii.gz)"
)


def _add_source_args(g: Any, release_help: str, **subject: Any) -> None:
    g.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"S3 bucket (default {DEFAULT_BUCKET})")
    g.add_argument("--release", default=DEFAULT_RELEASE, help=f"release key prefix{release_help} (default {DEFAULT_RELEASE})")
    g.add_argument("--subject", action="append", default=[], metavar="ID", help="subject ID (repeatable)", **subject)


def add_selection_args(p: argparse.ArgumentParser, source: bool = False) -> None:
    if source:
        p.add_argument("source", nargs="?", metavar="s3://BUCKET/PREFIX/", help=_SOURCE_HELP)
    g = p.add_argument_group("selection")
    _add_source_args(g, ": HCP_1200, HCP_Retest, q1...")
    g.add_argument("--subjects-file", metavar="FILE", help="file of subject IDs, one a line ('#' comments allowed), "
                   "or a CSV with a header (HCP's unrestricted_*.csv: its Subject column)")
    g.add_argument("--subjects-column", metavar="NAME", help="the CSV column holding subject IDs (default Subject)")
    g.add_argument("--where", action="append", default=[], metavar="COND",
                   help="keep the CSV rows where COND holds: COLUMN=VALUE, COLUMN!=VALUE, COLUMN<N, COLUMN>N "
                        "(repeatable: all must hold), e.g. --where Gender=F --where 3T_Full_MR_Compl=TRUE")
    g.add_argument("--path", action="append", default=[], metavar="P", help="path inside the subject folder, e.g. T1w or MNINonLinear/Results/tfMRI_MOTOR_LR (repeatable)")
    g.add_argument("--include", action=_Filter, dest="filters", const="include", default=[], metavar="GLOB", help="keep keys matching GLOB (repeatable)" + _FILTER_HELP)
    g.add_argument("--exclude", action=_Filter, dest="filters", const="exclude", default=[], metavar="GLOB", help="drop keys matching GLOB (repeatable; see --include)")
    g.add_argument("--package", action="append", default=[], metavar="NAME", help="HCP package, e.g. 3T_tfMRI_MOTOR_preproc (repeatable)")


def add_storage_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("S3 access")
    g.add_argument("--endpoint-url", help="S3 endpoint (default: AWS, or $AWS_ENDPOINT_URL)")
    g.add_argument("--profile", help="AWS profile holding your HCP keys (from BALSA's HCP-YA page), e.g. hcp")
    g.add_argument("--region", help="AWS region (default: from the profile, else us-east-1)")
    g.add_argument("--no-sign-request", action="store_true", help="send anonymous requests (public buckets)")
    g.add_argument("--request-payer", action="store_true", help="accept requester-pays charges")
    g.add_argument("--ca-bundle", metavar="PATH", help="PEM file of CA certificates to trust (default: $AWS_CA_BUNDLE, the profile's ca_bundle)")
    g.add_argument("--no-verify-ssl", action="store_true", help="do not verify the endpoint's TLS certificate (aws-cli's option; unsafe)")
    g.add_argument("-v", "--debug", action="store_true",
                   help="log every S3 request, its answer and each retry on stderr (never credentials or signatures)")


_QUIET_HELP = "no progress bar, and no report unless something failed (errors are always printed)"


def add_transfer_args(p: argparse.ArgumentParser) -> None:
    d = TransferConfig()
    g = p.add_argument_group("transfer")
    g.add_argument("--concurrency", type=int, default=d.concurrency, help=f"requests in flight across all files (default {d.concurrency})")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes moving bytes, each with its share of --concurrency; 1: one process "
                        "(default: one per usable core, started once there is enough to fetch)")
    g.add_argument("--part-size", default=None, metavar="SIZE", help="byte-range size for large objects, e.g. 8MiB (default 8MiB)")
    g.add_argument("--multipart-threshold", default=None, metavar="SIZE", help="objects above this are split into ranges (default 16MiB)")
    g.add_argument("--max-bandwidth", default=None, metavar="RATE", help="cap across all workers, e.g. 200MB/s or 1Gbit/s")
    g.add_argument("--retries", type=int, default=d.retries, help=f"retries per request for throttling/5xx/resets (default {d.retries})")
    g.add_argument("--read-timeout", type=float, default=d.read_timeout, help=f"seconds without data before a connection is retried (default {d.read_timeout:g})")
    g.add_argument("--low-speed-limit", default=None, metavar="RATE", help="a body slower than RATE over --low-speed-time is retried, e.g. 10KB/s; 0: off (default 1KiB/s)")
    g.add_argument("--low-speed-time", type=float, default=d.low_speed_time, metavar="S", help=f"seconds of network wait the low-speed limit is measured over (default {d.low_speed_time:g})")


_JOURNAL_HELP = "journal file (default DIR/.hcpsync/journal.sqlite)"

#: one example a subcommand, shown at the end of its --help
EXAMPLES = {
    "plan": "hcpsync plan --profile hcp s3://hcp-openaccess/HCP_1200/100307/T1w/ --include '*.nii.gz'",
    "pull": "hcpsync pull --profile hcp s3://hcp-openaccess/HCP_1200/100307/T1w/ /data/hcp",
    "status": "hcpsync status --dest /data/hcp",
    "verify": "hcpsync verify --dest /data/hcp --offline   # the last pull's selection, its kept manifests",
    "packages": "hcpsync packages --profile hcp --subject 100307",
    "demo": "hcpsync demo --dest /tmp/hcpsync-demo",
    "doctor": "hcpsync doctor --profile hcp --dest /data/hcp",
}


def _subparser(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand's parser: ``summary`` in the command list and atop its --help, an example below."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary[:1].upper() + summary[1:] + ".",
                                                epilog=f"example:\n  {EXAMPLES[name]}",
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    return p


_LIST_HELP = "listing requests in flight while planning (default 64)"


def _add_plan(sub: Any) -> None:
    p = _subparser(sub, "plan", "list what a selection covers (files, bytes, per subject): the dry run of pull")
    add_selection_args(p, source=True)
    add_storage_args(p)
    p.add_argument("--json", action="store_true",
                   help="print JSON Lines: one object a line as it is planned, then a summary line")
    p.add_argument("--save", metavar="FILE", help="write the plan to FILE (SQLite) for 'pull --plan FILE': no listing again")
    p.add_argument("--coverage", action="store_true",
                   help="fetch the subjects' .xdlm manifests (one GET each) and report the files they list that S3 "
                        "does not have (done anyway with --package; a plan saved with it keeps it)")
    p.add_argument("--list-concurrency", type=int, default=None, metavar="N", help=_LIST_HELP)


def _add_pull(sub: Any) -> None:
    p = _subparser(sub, "pull", "download a selection")
    add_selection_args(p, source=True)
    p.add_argument("dest_dir", nargs="?", metavar="DEST", help="local folder, as --dest")
    p.add_argument("--dest", metavar="DIR", help="local folder: keys land at DIR/<key minus release prefix>")
    p.add_argument("--plan", metavar="FILE", dest="plan_file",
                   help="pull the plan saved by 'hcpsync plan ... --save FILE' (no listing; it gives the selection)")
    add_transfer_args(p)
    p.add_argument_group("transfer").add_argument("--list-concurrency", type=int, default=None, metavar="N",
                                                  help=_LIST_HELP)
    g = p.add_argument_group("shards (many machines, one destination)")
    g.add_argument("--shard", metavar="K/N", help="pull the K-th of N disjoint parts of the selection (0 <= K < N); "
                   "auto/N takes K from SLURM_ARRAY_TASK_ID")
    g.add_argument("--shard-by", choices=("subject", "key"), default="subject",
                   help="split by subject (default: whole subjects per shard) or by a hash of each key")
    g.add_argument("--dask", metavar="ADDRESS",
                   help="run the shards as tasks of a Dask cluster: a scheduler's address (tcp://HOST:8786), or "
                        "local:N for a cluster of N processes on this machine, started and stopped here "
                        "(needs pip install \"hcpsync[dask]\"; every worker must see DEST at the same path)")
    g.add_argument("--shards", type=int, default=None, metavar="M",
                   help="with --dask: the number of shards (default: one per Dask worker)")
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    p.add_argument("--dryrun", "--dry-run", action="store_true", help="download nothing: print what would be fetched, as 'hcpsync plan'")
    p.add_argument("--no-verify", action="store_true", help="do not check MD5s against the .xdlm manifests / S3 ETags (size only)")
    p.add_argument("--no-space-check", action="store_true",
                   help="do not refuse to start when DEST has less space or fewer inodes free than the plan still needs")
    p.add_argument("--checksum", action="store_true",
                   help="check files already in DEST by checksum, not size alone (manifest MD5, else S3 ETag; hashed "
                        "on every core, checksums cached in the journal reused), and fetch again those that differ")
    g = p.add_argument_group("journal (resume)")
    g.add_argument("--journal", metavar="PATH", help=_JOURNAL_HELP)
    g.add_argument("--reset-journal", action="store_true", help="start a new journal (complete files are still skipped)")
    g.add_argument("--no-journal", action="store_true", help="keep no journal: an interrupted file restarts from byte 0")


def _add_status(sub: Any) -> None:
    p = _subparser(sub, "status", "what a destination's journal says: complete / partial / pending, last run")
    p.add_argument("--dest", required=True, metavar="DIR", help="the destination folder of a pull")
    p.add_argument("--journal", metavar="PATH", help=_JOURNAL_HELP)
    p.add_argument("--json", action="store_true", help="print the status as JSON on stdout")


_VERIFY_DETAILS = (
    "Each file is ok, mismatched, missing, refused (a symlink leading out of DIR: not followed), absent_from_s3 "
    "(a manifest lists it, S3 and DIR lack it), unlisted (in no manifest, not on S3) or unverifiable. Online, files "
    "no manifest lists are checked against their S3 ETag (plain or multipart; SSE-KMS/SSE-C ones are unverifiable). "
    "Symlinks are followed inside DIR only (DataLad datasets), read only.",
    "Exit 0 when nothing is mismatched, missing or refused; 1 otherwise; 2 for bad input.",
)


def _add_verify(sub: Any) -> None:
    p = _subparser(sub, "verify", "check a local tree against HCP's .xdlm checksum manifests and S3")
    p.description = "\n\n".join([p.description or "", *map(textwrap.fill, _VERIFY_DETAILS)])
    add_selection_args(p)
    p.add_argument("--dest", required=True, metavar="DIR",
                   help="local tree (default selection: the last pull's into DIR, else every subject folder in DIR)")
    p.add_argument("--offline", action="store_true",
                   help="use the manifests under DIR/<subject>/.xdlm/; no network (so no S3 listing: no coverage or ETag checks)")
    p.add_argument("--full", action="store_true", help="hash every file, even those whose checksum is cached")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="hashing threads (default: one per CPU)")
    p.add_argument("--repair", action="store_true",
                   help="fetch again what is mismatched or missing (through the pull's engine and journal), then "
                        "check again; exit 0 when all is then ok")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    add_storage_args(p)


def _add_packages(sub: Any) -> None:
    p = _subparser(sub, "packages", "list the HCP download packages of subjects, with files and sizes")
    _add_source_args(p.add_argument_group("selection"), "", required=True)
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the packages as JSON")


def _add_demo(sub: Any) -> None:
    p = _subparser(sub, "demo", "pull a synthetic HCP subject from a local S3 endpoint (no credentials needed)")
    p.add_argument("--dest", default="hcpsync-demo", metavar="DIR", help="where to download (default ./hcpsync-demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout (the demo's talk goes to stderr)")


def _add_doctor(sub: Any) -> None:
    p = _subparser(sub, "doctor", "check credentials, clock, region, release access, TLS, proxy and free space")
    p.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"S3 bucket (default {DEFAULT_BUCKET})")
    p.add_argument("--release", action="append", default=[], help="release prefix to check access to (repeatable; default HCP_1200 and HCP_Retest)")
    p.add_argument("--dest", metavar="DIR", help="where you will download: checks it is writable, and its free space")
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the checks as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hcpsync", description="Fast, resumable, verified downloads of HCP data from S3.")
    parser.add_argument("--version", action="version", version=f"hcpsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in (_add_plan, _add_pull, _add_status, _add_verify, _add_packages, _add_demo, _add_doctor):
        add(sub)
    for command in sub.choices.values():  # so that a stray argument is reported by its command's parser
        command.set_defaults(command_parser=command)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but operands after options (``pull s3://b/p/ --no-sign-request DEST``)
    fill the positionals left empty, as aws-cli allows, and a stray argument points at the
    subcommand's ``--help``, not hcpsync's."""
    args, extra = parser.parse_known_args(argv)
    for item in extra:
        slot = next((n for n in _OPERANDS if getattr(args, n, "") is None), None)
        if item.startswith("-") or slot is None:
            getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
        else:
            setattr(args, slot, item)
    return args
