"""The exit codes of ``hcpsync`` (README: "Exit codes")."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
#: stdout's reader went away (`| head`): the status a shell reports for a tool killed by SIGPIPE
EXIT_PIPE = 141
#: an unexpected exception (a bug), reported in one line
EXIT_INTERNAL = 3
