"""One retry policy for listing, HEAD and GET: full-jitter exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..config import TransferConfig
from ..errors import HcpsyncError, ThrottledError

T = TypeVar("T")
log = logging.getLogger("hcpsync.store")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait again: ``retries`` further attempts for a retryable error,
    sleeping ``uniform(0, min(backoff_max, base * 2**attempt))`` before each (``base`` four times
    longer when throttled)."""

    retries: int = 5
    backoff_base: float = 0.1
    backoff_max: float = 10.0

    @classmethod
    def from_config(cls, config: TransferConfig) -> RetryPolicy:
        return cls(config.retries, config.backoff_base, config.backoff_max)

    def delay(self, attempt: int, error: HcpsyncError | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); throttling waits longer."""
        base = self.backoff_base * (4 if isinstance(error, ThrottledError) else 1)
        return random.uniform(0, min(self.backoff_max, base * 2**attempt))

    def should_retry(self, error: HcpsyncError, attempt: int) -> bool:
        """Whether a request that failed with ``error`` after ``attempt`` retries gets another go."""
        return error.retryable and attempt < self.retries

    async def pause(self, attempt: int, error: HcpsyncError | None = None) -> None:
        delay = self.delay(attempt, error)
        log.debug("retry %d of %d in %.2f s after: %s", attempt, self.retries, delay, error)
        await asyncio.sleep(delay)

    async def call(
        self,
        op: Callable[[], Awaitable[T]],
        translate: Callable[[Exception], HcpsyncError],
        on_retry: Callable[[HcpsyncError], None] | None = None,
    ) -> T:
        """``await op()``, again after a pause while it fails with a retryable error.

        ``translate`` turns what ``op`` raises into an :class:`HcpsyncError` (the one raised,
        chained to the original, once given up); ``on_retry`` is told of each retry.
        """
        attempt = 0
        while True:
            try:
                return await op()
            except Exception as exc:
                err = translate(exc)
                if not self.should_retry(err, attempt):
                    if err is exc:
                        raise
                    raise err from exc
            attempt += 1
            if on_retry is not None:
                on_retry(err)
            await self.pause(attempt, err)
