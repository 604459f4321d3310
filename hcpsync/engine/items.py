"""The pool's work items, handed to its workers one at a time (``async for item in items``).

A collection of objects is expanded lazily; batches that arrive while the pool runs (a plan still
being listed) are read one after the other: workers wait for the next, the end of the batches
ends the items, and an error the batches raise reaches the worker that asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from typing import Generic, TypeVar

from ..models import PlannedObject

T = TypeVar("T")


class Items(Generic[T]):
    """The work items of ``objects`` for the workers, one at a time (``async for``): a collection
    is expanded lazily; batches that arrive while the pool runs are read one after the other
    (workers wait for the next; the end of the batches ends the items)."""

    def __init__(self, expand: Callable[[Iterable[PlannedObject]], Generator[T, None, None]],
                 objects: Iterable[PlannedObject] | AsyncIterator[Sequence[PlannedObject]]) -> None:
        self._expand = expand
        self._batches = objects if isinstance(objects, AsyncIterator) else None
        self._items = None if isinstance(objects, AsyncIterator) else expand(objects)
        self._lock = asyncio.Lock()
        self._ended = False

    def __aiter__(self) -> Items[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            items = self._items
            if items is not None:
                for item in items:
                    return item
                if self._items is items:
                    self._items = None
            if self._batches is None or self._ended:
                raise StopAsyncIteration
            async with self._lock:
                if self._items is None and not self._ended:
                    await self._next_batch(self._batches)

    async def _next_batch(self, batches: AsyncIterator[Sequence[PlannedObject]]) -> None:
        try:
            batch = await anext(batches)
        except StopAsyncIteration:
            self._ended = True
            return
        self._items = self._expand(batch)

    def close(self) -> None:
        if self._items is not None:
            self._items.close()
        self._ended = True
