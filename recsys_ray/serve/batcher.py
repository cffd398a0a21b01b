"""Write batching of small requests, per tenant and dataset (no Ray here).

Requests hand their decoded rows to `WriteBatcher.submit` and wait for their
own result. A batch is formed only when a slot to land it is free: while
`max_concurrent` batches are landing, new requests queue, so under load
batches grow towards `max_size` instead of multiplying. A lone request waits
at most `wait_s` for company. This replaces `@serve.batch`, which forms a
batch as soon as requests arrive (then queues it for a slot) and inspects the
call signature on every request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

Item = TypeVar("Item")

# land(key, items) -> one result per item; an Exception instance is raised to that item's caller.
Lander = Callable[[Hashable, list], Awaitable[list[Any]]]


class WriteBatcher(Generic[Item]):
    def __init__(self, land: Lander, *, max_size: int, wait_s: float, max_concurrent: int) -> None:
        if max_size < 1 or max_concurrent < 1 or wait_s < 0:
            raise ValueError("max_size and max_concurrent must be >= 1, wait_s >= 0")
        self._land = land
        self.max_size = max_size
        self.wait_s = wait_s
        self.max_concurrent = max_concurrent
        # key -> waiting (arrival time, item, future); dict order is the order keys started waiting.
        self._waiting: dict[Hashable, deque[tuple[float, Item, asyncio.Future]]] = {}
        self._full: asyncio.Event | None = None
        self._running = 0  # runners landing or about to; counted synchronously, so none is missed
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, key: Hashable, item: Item) -> Any:
        """Land `item` with others of the same `key`; returns its result once its batch is stored."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        queue = self._waiting.setdefault(key, deque())
        queue.append((loop.time(), item, future))
        if len(queue) >= self.max_size and self._full is not None:
            self._full.set()
        if self._running < self.max_concurrent:
            self._running += 1
            task = loop.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def _run(self) -> None:
        """Land batches while requests wait; exits when none is left."""
        try:
            await self._land_waiting()
        finally:
            self._running -= 1  # no await between the last look at the queue and this

    async def _land_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            # A full batch lands now; otherwise the oldest waits out its time.
            key = next((k for k, q in self._waiting.items() if len(q) >= self.max_size), next(iter(self._waiting)))
            queue = self._waiting[key]
            delay = queue[0][0] + self.wait_s - loop.time()
            if len(queue) < self.max_size and delay > 0:
                await self._wait_for_more(delay)
                continue  # the queue may have been taken by another runner meanwhile
            batch = [queue.popleft() for _ in range(min(self.max_size, len(queue)))]
            if not queue:
                del self._waiting[key]
            batch = [(item, future) for _, item, future in batch if not future.done()]
            if not batch:
                continue
            try:
                results = await self._land(key, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def _wait_for_more(self, delay: float) -> None:
        if self._full is None:
            self._full = asyncio.Event()
        full = self._full
        try:
            await asyncio.wait_for(full.wait(), delay)
        except asyncio.TimeoutError:
            pass
        finally:
            if self._full is full:
                self._full = None
