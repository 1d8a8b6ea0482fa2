"""Dynamic batching for ``regner serve``: the texts of concurrent requests share model calls.

The batcher takes the first waiting request, then keeps collecting for up to ``max_wait_s`` or until
``max_batch`` texts, and runs the model in one worker thread (so the event loop keeps accepting
requests meanwhile and inference never runs twice at once). A request of more than ``max_batch``
texts is predicted alone. The answers are the same as unbatched: texts are windowed, predicted and
merged independently.

It is bounded: at most ``max_queue`` texts wait, and a request is admitted only while the work ahead
of it (queued and running characters, at the model's measured characters per second) fits in its
deadline — otherwise :class:`QueueFull`, which the app answers 503 + ``Retry-After`` at once instead
of a 504 later; a request whose client has gone or whose deadline passed is cancelled and dropped
before its batch is computed; a batch whose prediction fails is predicted request by
request, so only the failing request gets the error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More texts are waiting than the server takes (``max_queue``)."""


class Batcher:
    """Collects the texts of concurrent requests into model calls of at most ``max_batch`` texts."""

    def __init__(self, predict, max_batch: int, max_wait_s: float, max_queue: int | None = None,
                 deadline_s: float | None = None):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.max_queue, self.deadline_s = max_queue, deadline_s
        self.rate: float | None = None  # characters per second of recent model calls (exponential average)
        self.queued_chars = self.running_chars = 0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="regner-model")
        self.task: asyncio.Task | None = None
        self.waiting = 0  # texts submitted and not yet handed to the model
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch": 0, "dropped": 0, "refused": 0}

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def warm_up(self, texts: list[str]) -> None:
        """One model call before the first request: loads lazy kernels and gives admission its first
        characters-per-second figure (until there is one, a request is admitted only into an idle queue)."""
        await self._run(texts)

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
        chars, ahead_chars = cost(texts), self.queued_chars + self.running_chars
        if self.deadline_s and ahead_chars and (self.rate is None or (ahead_chars + chars) / self.rate > self.deadline_s):
            self.stats["refused"] += 1
            ahead = f"about {ahead_chars / self.rate:.0f} s of work" if self.rate else "work of unknown length"
            raise QueueFull(f"the model is busy: {ahead} is ahead of this request, more than its {self.deadline_s:g} s "
                            "deadline allows")
        future = asyncio.get_running_loop().create_future()
        self.waiting += len(texts)
        self.queued_chars += chars
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
        carry = None
        while True:
            items, carry = await self._collect(carry)
            self.waiting -= sum(len(texts) for texts, _ in items)  # a carried-over request counts until its batch
            self.queued_chars -= sum(cost(texts) for texts, _ in items)
            live = [(texts, future) for texts, future in items if not future.done()]  # cancelled: client gone
            self.stats["dropped"] += len(items) - len(live)
            if not live:
                continue
            texts = [text for request, _ in live for text in request]
            try:
                results = await self._run(texts)
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
        for texts, future in items:
            if future.done():
                continue
            try:
                result = await self._run(texts)
            except Exception as err:  # noqa: BLE001
                log.exception("prediction failed for a request of %d texts", len(texts))
                _settle(future, error=err)
                continue
            self._count(1, len(texts))
            _settle(future, result)

    async def _run(self, texts: list[str]):
        """One model call in the worker thread, timed into the characters-per-second estimate."""
        chars, started = cost(texts), time.perf_counter()
        self.running_chars = chars
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, texts)
        finally:
            self.running_chars = 0
        rate = chars / max(time.perf_counter() - started, 1e-6)
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        return result

    def _count(self, requests: int, texts: int) -> None:
        self.stats["requests"] += requests
        self.stats["texts"] += texts
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], texts)


def cost(texts: list[str]) -> int:
    """The work of ``texts`` in characters; each text also costs one (its windows' fixed part)."""
    return sum(len(t) + 1 for t in texts)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # its client went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
