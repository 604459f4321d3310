"""Fit a transfer to the process's open-file limit (``ulimit -n``).

Each request in flight holds a socket, and each file being written a descriptor, so a pull
needs about ``2 x concurrency`` descriptors plus a few for the journal, the lock and the loop.
The soft limit is raised towards the hard one when that is short; when even the hard limit is
short, the concurrency is lowered to fit, with a note, rather than failing files with EMFILE.
"""

from __future__ import annotations

from dataclasses import replace

from ..config import TransferConfig

try:
    import resource
except ImportError:  # not on POSIX
    resource = None  # type: ignore[assignment]

#: descriptors kept aside for the journal, its WAL, the lock, the event loop, stdio...
RESERVED_FDS = 64


def fds_needed(concurrency: int) -> int:
    return 2 * concurrency + RESERVED_FDS


def fit_to_fd_limit(config: TransferConfig) -> tuple[TransferConfig, list[str]]:
    """``config``, with its concurrency lowered if the open-file limit cannot hold it; and notes."""
    if resource is None:
        return config, []
    need = fds_needed(config.concurrency)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return config, []
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= need:
        return config, []
    fitted = max(1, (soft - RESERVED_FDS) // 2)
    note = (f"--concurrency {config.concurrency} lowered to {fitted}: the open-file limit (ulimit -n) is {soft}, "
            f"and {config.concurrency} requests in flight need about {need}; raise it with 'ulimit -n {need}'")
    return replace(config, concurrency=fitted), [note]
