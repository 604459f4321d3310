"""Retry policy shared by listing and transfers: full-jitter exponential backoff."""

from __future__ import annotations

import asyncio
import random

from ..config import TransferConfig
from ..errors import HcpsyncError, ThrottledError


def backoff_delay(config: TransferConfig, attempt: int, error: HcpsyncError | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based); throttling waits longer."""
    base = config.backoff_base * (4 if isinstance(error, ThrottledError) else 1)
    return random.uniform(0, min(config.backoff_max, base * 2**attempt))


def should_retry(config: TransferConfig, error: HcpsyncError, attempt: int) -> bool:
    """Whether a request that failed with ``error`` after ``attempt`` retries gets another go."""
    return error.retryable and attempt < config.retries


async def pause(config: TransferConfig, attempt: int, error: HcpsyncError | None = None) -> None:
    await asyncio.sleep(backoff_delay(config, attempt, error))
