"""``hcpsync plan|pull|verify|packages|status|demo ...``: run a command, map what ends it to an exit code.

Exit codes: 0 all succeeded; 1 some objects failed (the rest downloaded) or the run
stopped (disk full); 2 bad usage or input; 130 interrupted (SIGINT), 143 (SIGTERM);
141 stdout closed by its reader (``| head``): a quiet stop, no message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Sequence

from ..errors import HcpsyncError
from .codes import EXIT_INTERNAL, EXIT_OK, EXIT_PIPE, EXIT_SIGINT, EXIT_SIGTERM

# Start-up: asyncio (with ssl), logging, the parser and each command's code are imported where
# used; ``hcpsync --version`` is answered before any of them, ``--help`` loads no network stack.
TYPE_CHECKING = False
if TYPE_CHECKING:  # (without importing typing)
    import argparse
    from typing import Any


async def _run_with_signals(coro: Awaitable[int]) -> int:
    """Run the command; SIGINT/SIGTERM cancel it (connections and files are closed on the way out)."""
    import asyncio
    import signal

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


def _debug_logging() -> None:
    """``-v``/``--debug``: hcpsync's own log (requests, answers, retries) on stderr.  Only hcpsync's
    logger: botocore's debug log prints request headers, signatures included."""
    import logging

    from ..text import escape

    class _EscapingFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return escape(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("hcpsync: debug: %(message)s"))
    log = logging.getLogger("hcpsync")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # what argparse would print, sooner
        from ..version import __version__

        print(f"hcpsync {__version__}")
        return EXIT_OK
    from .parser import build_parser, parse

    parser = build_parser()
    args = parse(parser, argv)
    if getattr(args, "debug", False):
        _debug_logging()
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's final flush
    except BrokenPipeError:  # `hcpsync plan --json | head`: stop quietly, as Unix tools do
        discard_stdout()
        return EXIT_PIPE
    return code


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from ..text import say
    from .commands import COMMANDS  # here, not atop: --version and --help load no command's code

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
        return EXIT_INTERNAL
    if code in (EXIT_SIGINT, EXIT_SIGTERM):
        say("hcpsync: interrupted; run the same command again to resume", sys.stderr)
    return code


def discard_stdout() -> None:
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
