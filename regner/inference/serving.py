"""``regner serve``: an HTTP service over a trained model (FastAPI + uvicorn), with dynamic batching.

Endpoints:

- ``POST /predict`` — ``{"text": "..."}`` answers ``{"text", "entities"}``, exactly one line of
  ``regner predict``; ``{"texts": ["...", ...]}`` answers a JSON array of such objects, in order.
- ``GET /health`` — liveness, the model served, and the batcher's counters.
- ``GET /labels`` — the entity types the model predicts.

Bad requests get a 4xx with one ``error`` paragraph (and FastAPI's ``detail`` list where it has one):
400 malformed JSON; 422 a body that is not ``{"text": str}`` or ``{"texts": [str, ...]}`` (empty,
wrong types, unknown fields, an empty list); 413 a text longer than ``max_length`` characters or
more than ``max_texts`` texts in one request.

Dynamic batching: requests that arrive together are predicted in one call. The batcher takes the
first waiting request, then keeps collecting for up to ``max_wait_ms`` or until ``max_batch`` texts,
and runs the model in one worker thread (so the event loop keeps accepting requests meanwhile and
inference never runs twice at once). A request of more than ``max_batch`` texts is predicted alone.
The answers are the same as unbatched: texts are windowed, predicted and merged independently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictStr, model_validator

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    """The body of ``POST /predict``: one text or a list of texts."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None

    @model_validator(mode="after")
    def one_of(self):
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" (a string) or "texts" (a list of strings)')
        if self.texts is not None and not self.texts:
            raise ValueError('"texts" is empty: give at least one text')
        from regner.inference.texts import text_problem

        for index, text in enumerate([self.text] if self.text is not None else self.texts):
            problem = text_problem(text)
            if problem:
                raise ValueError(f"{'text' if self.text is not None else f'texts[{index}]'} {problem}")
        return self


@dataclass
class ServeSettings:
    max_length: int = 10000  # characters per text
    max_texts: int = 64  # texts per request
    max_batch: int = 32  # texts per model call (several requests)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    threshold: float | None = None  # None: the checkpoint's head.threshold


class Batcher:
    """Collects the texts of concurrent requests into model calls of at most ``max_batch`` texts."""

    def __init__(self, predict, max_batch: int, max_wait_s: float):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="regner-model")
        self.task: asyncio.Task | None = None
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch": 0}

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        future = asyncio.get_running_loop().create_future()
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
            items = [(texts, future) for texts, future in items if not future.cancelled()]  # clients gone
            texts = [text for request, _ in items for text in request]
            if not items:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.predict, texts)
            except Exception as err:  # noqa: BLE001 - the server lives on; only the failing requests fail
                if len(items) == 1:
                    log.exception("prediction failed for a request of %d texts", len(texts))
                    if not items[0][1].done():
                        items[0][1].set_exception(err)
                    continue
                log.warning("a batch of %d requests failed (%s); predicting each on its own", len(items), err)
                await self._one_by_one(items)
                continue
            self.stats["requests"] += len(items)
            self.stats["texts"] += len(texts)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(texts))
            offset = 0
            for request, future in items:
                if not future.done():
                    future.set_result(results[offset : offset + len(request)])
                offset += len(request)

    async def _one_by_one(self, items) -> None:
        """After a failed batch: each request predicted alone; a failing one gets its own error."""
        loop = asyncio.get_running_loop()
        for texts, future in items:
            try:
                result = await loop.run_in_executor(self.executor, self.predict, texts)
            except Exception as err:  # noqa: BLE001
                log.exception("prediction failed for a request of %d texts", len(texts))
                if not future.done():
                    future.set_exception(err)
                continue
            self.stats["requests"] += 1
            self.stats["texts"] += len(texts)
            self.stats["batches"] += 1
            if not future.done():
                future.set_result(result)


def _paragraph(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing" and not where:
            message = "the body is empty"
        parts.append(f"{where}: {message}" if where else message)
    return 'expected a JSON object {"text": "..."} or {"texts": ["...", ...]}; ' + "; ".join(parts)


def create_app(loaded, settings: ServeSettings, source: str = ""):
    """The FastAPI application over ``loaded`` (a :class:`~regner.inference.loaded.LoadedModel`)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from regner import __version__

    def predict(texts: list[str]):
        return loaded.predict(texts, settings.max_batch, settings.threshold, progress=False)

    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = app.state.batcher = Batcher(predict, settings.max_batch, settings.max_wait_ms / 1000)
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="regner", version=__version__, lifespan=lifespan,
                  description="Named entities (GlobalPointer spans) for raw texts.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(status_code=400, content={
                "error": "the body is not valid JSON: " + "; ".join(str(e.get("ctx", {}).get("error", e.get("msg")))
                                                                    for e in errors),
                "detail": _jsonable(errors)})
        return JSONResponse(status_code=422, content={"error": _paragraph(errors), "detail": _jsonable(errors)})

    def too_large(message: str):
        return JSONResponse(status_code=413, content={"error": message})

    @app.post("/predict")
    async def predict_endpoint(body: PredictRequest):
        texts = [body.text] if body.text is not None else body.texts
        if len(texts) > settings.max_texts:
            return too_large(f"{len(texts)} texts in one request; this server takes at most {settings.max_texts} "
                             f"(regner serve max_texts=N): split the list")
        for index, text in enumerate(texts):
            if len(text) > settings.max_length:
                where = "text" if body.text is not None else f"texts[{index}]"
                return too_large(f"{where} is {len(text)} characters; this server takes at most {settings.max_length} "
                                 f"per text (regner serve max_length=N)")
        entities = await app.state.batcher.submit(texts)
        records = [{"text": text, "entities": found} for text, found in zip(texts, entities)]
        return records[0] if body.text is not None else records

    @app.get("/health")
    async def health():
        batcher = getattr(app.state, "batcher", None)
        return {"status": "ok", "model": source, "backend": loaded.config.get("backend", "torch"),
                "labels": len(loaded.model.labels), "uptime_s": round(time.time() - started, 3),
                "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                             **(batcher.stats if batcher else {})}}

    @app.get("/labels")
    async def labels():
        return {"labels": list(loaded.model.labels)}

    return app


def _jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's error list with the exception objects some entries carry turned into text."""
    return [{k: ({name: str(x) for name, x in v.items()} if k == "ctx" else v) for k, v in e.items()
             if k != "input" or isinstance(v, (str, int, float))}
            for e in errors]


class ServerProcess:
    """``regner serve ARGS port=0`` in a subprocess, started and waited for until ``/health`` answers
    (for the load script and the tests; the port is read from the server's start line). Use as a
    context manager, or call :meth:`stop`."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120.0):
        import subprocess
        import sys
        import threading

        self.process = subprocess.Popen([sys.executable, "-m", "regner.cli", "serve", *args, "port=0"],
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self.address: str | None = None
        announced = threading.Event()

        def drain() -> None:  # read stderr to its end, so the server never blocks on a full pipe
            for line in self.process.stderr:
                self.lines.append(line)
                if self.address is None and line.startswith("regner serve:") and "http://" in line:
                    self.address = line.split("http://", 1)[1].split()[0]
                    announced.set()
            announced.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        if not announced.wait(timeout) or self.address is None:
            self.stop()
            raise RuntimeError("regner serve did not start:\n" + self.output)
        while True:  # the start line comes just before uvicorn accepts connections
            try:
                self.request("GET", "/health", timeout=5)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("regner serve never answered /health:\n" + self.output) from None
                time.sleep(0.2)

    @property
    def output(self) -> str:
        return "".join(self.lines)[-3000:]

    def request(self, method: str, path: str, payload: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        """(status, decoded JSON answer); ``payload``: bytes as they are, anything else as JSON."""
        import json
        import urllib.error
        import urllib.request

        body = payload if isinstance(payload, bytes) or payload is None else \
            json.dumps(payload, ensure_ascii=False).encode()
        req = urllib.request.Request(f"http://{self.address}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, payload: Any, path: str = "/predict") -> tuple[int, Any]:
        return self.request("POST", path, payload)

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
