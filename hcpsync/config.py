"""The one typed configuration object for transfers, and parsers for its CLI values."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Smaller parts are all request overhead and no throughput.
MIN_PART_SIZE = 64 * KiB


@dataclass(frozen=True)
class TransferConfig:
    """How a pull moves bytes.

    Knobs:

    ``concurrency``
        Requests in flight at once, across all files (one global bound, not per file).
        The default, 64, saturates a 10 Gbit/s link from EC2: S3 gives a single stream
        roughly 50-100 MB/s, so ~16 streams fill the pipe with large objects, and the rest
        hide first-byte latency when most objects are small.
    ``part_size``
        Size of each byte range an object larger than ``multipart_threshold`` is split into.
        Ranges of one object run concurrently, so a single 1 GB file also fills the link.
    ``multipart_threshold``
        Objects up to this size are fetched in one GET.
    ``chunk_size``
        How much of a response body is read and written at a time.  Bodies are streamed:
        no part is ever held whole in memory.
    ``max_bandwidth``
        Bytes per second across all workers, or ``None`` for no cap.
    ``retries``
        Further attempts for a request that failed with a retryable error (503 SlowDown,
        5xx, reset, timeout, short body).  A retried range resumes from its last written byte.
    ``backoff_base`` / ``backoff_max``
        Full-jitter exponential backoff: sleep ``uniform(0, min(max, base * 2**attempt))``.
    ``workers``
        Processes that move bytes (see :mod:`hcpsync.engine.procs`): ``None`` (the default)
        for one per core this process may run on, started only once a pull has enough to
        fetch; ``1`` for a single process (no child process at all); ``N`` for exactly ``N``
        worker processes, each with its share of ``concurrency`` and ``max_bandwidth``.
    ``list_concurrency``
        Listing requests in flight at once while planning (64 by default).  Subjects are listed
        side by side and a subject's sub-folders too, and downloads start with the first page.
    ``connect_timeout`` / ``read_timeout``
        Seconds; a connection that sends no byte for ``read_timeout`` is abandoned and retried.
    ``low_speed_limit`` / ``low_speed_time``
        A body arriving slower than ``low_speed_limit`` bytes/s over ``low_speed_time`` seconds
        (1 KiB/s over 30 s by default; 0 turns it off) is abandoned and retried, resuming from
        its last byte, like curl's ``--speed-limit``/``--speed-time``: a server that drips a
        byte now and then never trips ``read_timeout``.  Only time spent waiting on the network
        counts, not time waiting on ``max_bandwidth``, so a bandwidth cap never trips it.

    Memory: the bytes hcpsync itself holds for bodies are bounded by
    ``concurrency x chunk_size`` (64 x 256 KiB = 16 MiB by default), whatever the file
    sizes, plus aiohttp's per-connection read buffer (about 64-128 KiB per connection).
    """

    concurrency: int = 64
    part_size: int = 8 * MiB
    multipart_threshold: int = 16 * MiB
    chunk_size: int = 256 * KiB
    max_bandwidth: int | None = None
    retries: int = 5
    backoff_base: float = 0.1
    backoff_max: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    low_speed_limit: int = 1 * KiB
    low_speed_time: float = 30.0
    workers: int | None = None
    list_concurrency: int = 64

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.concurrency > 4096:
            raise UsageError(f"concurrency must be between 1 and 4096, got {self.concurrency}")
        if self.part_size < MIN_PART_SIZE:
            raise UsageError(f"part size must be at least {MIN_PART_SIZE} bytes, got {self.part_size}")
        if self.multipart_threshold < 1:
            raise UsageError("multipart threshold must be positive")
        if self.chunk_size < 1024:
            raise UsageError(f"chunk size must be at least 1024 bytes, got {self.chunk_size}")
        if self.max_bandwidth is not None and self.max_bandwidth < 1024:
            raise UsageError(f"max bandwidth must be at least 1 KiB/s, got {self.max_bandwidth}")
        if self.workers is not None and not 1 <= self.workers <= 256:
            raise UsageError(f"workers must be between 1 and 256, got {self.workers}")
        if not 1 <= self.list_concurrency <= 1024:
            raise UsageError(f"list concurrency must be between 1 and 1024, got {self.list_concurrency}")
        if self.retries < 0:
            raise UsageError(f"retries must be >= 0, got {self.retries}")
        if self.read_timeout <= 0 or self.connect_timeout <= 0:
            raise UsageError("timeouts must be positive")
        if self.low_speed_limit < 0 or self.low_speed_time <= 0:
            raise UsageError("the low-speed limit must be >= 0 (0: off) and the low-speed time positive")

    @property
    def memory_bound(self) -> int:
        """Upper bound of body bytes held in memory: concurrency x chunk size."""
        return self.concurrency * self.chunk_size


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, what: str = "size", example: str = "8MiB") -> int:
    """Parse ``8MiB``, ``8M``, ``8MB``, ``512k`` or ``1048576`` into bytes (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"invalid {what} {text!r}: use a number with an optional unit, e.g. {example}")
    number, unit = float(m.group(1)), m.group(2).lower()
    value = int(number * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"invalid {what} {text!r}: must be positive")
    return value


def parse_rate(text: str) -> int:
    """Parse a bandwidth like ``100MB/s``, ``100M`` or ``800Mbit/s`` into bytes per second."""
    t = text.strip()
    lowered = t.lower()
    for suffix in ("/s", "ps"):
        if lowered.endswith(suffix):
            t, lowered = t[: -len(suffix)], lowered[: -len(suffix)]
    bits = lowered.endswith("bit")
    if bits:
        t = t[:-3]
    value = parse_size(t, "bandwidth", "200MB/s or 1Gbit/s")
    return value // 8 if bits else value
