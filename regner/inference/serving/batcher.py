"""Dynamic batching for ``regner serve``: the texts of concurrent requests share model calls.

The batcher takes the first waiting request, then keeps collecting for up to ``max_wait_s`` or until
``max_batch`` texts, and runs the model in one worker thread (so the event loop keeps accepting
requests meanwhile and inference never runs twice at once). A request of more than ``max_batch``
texts is predicted alone. The answers are the same as unbatched: texts are windowed, predicted and
merged independently.

It is bounded: at most ``max_queue`` texts wait (:class:`QueueFull` beyond that, which the app turns
into 503 + ``Retry-After``); a request whose client has gone or whose deadline passed is cancelled
and dropped before its batch is computed; a batch whose prediction fails is predicted request by
request, so only the failing request gets the error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More texts are waiting than the server takes (``max_queue``)."""


class Batcher:
    """Collects the texts of concurrent requests into model calls of at most ``max_batch`` texts."""

    def __init__(self, predict, max_batch: int, max_wait_s: float, max_queue: int | None = None):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.max_queue = max_queue
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="regner-model")
        self.task: asyncio.Task | None = None
        self.waiting = 0  # texts submitted and not yet handed to the model
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch": 0, "dropped": 0, "refused": 0}

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop batching: waiting requests are cancelled, and the model call in flight is not waited for
        (its thread ends with it), so a shutdown is bounded by the server's grace period, not the model."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        while not self.queue.empty():
            _, future = self.queue.get_nowait()
            future.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        """The entities of ``texts``; raises :class:`QueueFull` when the queue is full. Cancelling the
        caller (client gone, deadline) drops the request if its batch has not started."""
        if self.max_queue is not None and self.waiting + len(texts) > max(self.max_queue, len(texts)):
            self.stats["refused"] += 1
            raise QueueFull(f"{self.waiting} texts are waiting; this server queues at most {self.max_queue}")
        future = asyncio.get_running_loop().create_future()
        self.waiting += len(texts)
        await self.queue.put((texts, future))
        return await future

    async def _collect(self, carry):
        """One batch: the carried-over or first waiting request, then whatever arrives in time."""
        loop = asyncio.get_running_loop()
        items = [carry if carry is not None else await self.queue.get()]
        size = len(items[0][0])
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            try:
                item = await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                break
            if size + len(item[0]) > self.max_batch:
                return items, item  # it starts the next batch
            items.append(item)
            size += len(item[0])
        return items, None

    async def _loop(self) -> None:
        loop, carry = asyncio.get_running_loop(), None
        while True:
            items, carry = await self._collect(carry)
            self.waiting -= sum(len(texts) for texts, _ in items)  # a carried-over request counts until its batch
            live = [(texts, future) for texts, future in items if not future.done()]  # cancelled: client gone
            self.stats["dropped"] += len(items) - len(live)
            if not live:
                continue
            texts = [text for request, _ in live for text in request]
            try:
                results = await loop.run_in_executor(self.executor, self.predict, texts)
            except Exception as err:  # noqa: BLE001 - the server lives on; only the failing requests fail
                if len(live) == 1:
                    log.exception("prediction failed for a request of %d texts", len(texts))
                    _settle(live[0][1], error=err)
                    continue
                log.warning("a batch of %d requests failed (%s); predicting each on its own", len(live), err)
                await self._one_by_one(live)
                continue
            self._count(len(live), len(texts))
            offset = 0
            for request, future in live:
                _settle(future, results[offset : offset + len(request)])
                offset += len(request)

    async def _one_by_one(self, items) -> None:
        """After a failed batch: each request predicted alone; a failing one gets its own error."""
        loop = asyncio.get_running_loop()
        for texts, future in items:
            if future.done():
                continue
            try:
                result = await loop.run_in_executor(self.executor, self.predict, texts)
            except Exception as err:  # noqa: BLE001
                log.exception("prediction failed for a request of %d texts", len(texts))
                _settle(future, error=err)
                continue
            self._count(1, len(texts))
            _settle(future, result)

    def _count(self, requests: int, texts: int) -> None:
        self.stats["requests"] += requests
        self.stats["texts"] += texts
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], texts)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # its client went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
