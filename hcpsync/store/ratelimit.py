"""A bandwidth cap shared by every worker: a pacing token bucket."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Paces byte consumption to ``rate`` bytes/s across all callers.

    Each :meth:`acquire` books its bytes on a shared virtual clock; a caller sleeps until its
    booking is due.  ``burst`` seconds of credit let short idle periods be caught up.
    """

    def __init__(self, rate: int, burst: float = 0.05) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._next = time.monotonic()

    async def acquire(self, nbytes: int) -> None:
        now = time.monotonic()
        start = max(self._next, now - self.burst)
        self._next = start + nbytes / self.rate
        delay = self._next - now - self.burst
        if delay > 0:
            await asyncio.sleep(delay)
