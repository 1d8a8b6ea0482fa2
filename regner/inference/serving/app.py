"""The FastAPI application of ``regner serve``: ``POST /predict``, ``GET /health``, ``GET /labels``.

Every answer that is not 200 is ``{"error": "<one paragraph>"}`` (422 adds ``detail``, at most
``max_errors`` of pydantic's entries): 400 malformed JSON or a body that is not UTF-8; 401 without
the token; 404 / 405 an unknown path or method; 413 a body, text or list over its limit; 415 a body
that is not JSON; 422 a body that is not ``{"text": str}`` or ``{"texts": [str, ...]}`` (a text
that is not Unicode, e.g. a lone surrogate escape, named by its index); 503 a full queue or a
shutdown in progress (``Retry-After``); 504 a request not answered within ``timeout_s``; 500 a
failure of the model on this request (other requests of its batch are answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, model_validator
from starlette.exceptions import HTTPException

from regner.inference.serving.batcher import Batcher, QueueFull
from regner.inference.serving.guard import Guard
from regner.inference.texts import text_problem

log = logging.getLogger(__name__)
SHAPE = 'expected a JSON object {"text": "..."} or {"texts": ["...", ...]}'


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
        for index, text in enumerate([self.text] if self.text is not None else self.texts):
            problem = text_problem(text)
            if problem:
                raise ValueError(f"{'text' if self.text is not None else f'texts[{index}]'} {problem}")
        return self


class ServerState:
    """What the guard and the app share: whether a shutdown has begun."""

    draining = False


def _paragraph(errors: list[dict[str, Any]], more: int = 0) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return f"{SHAPE}; " + "; ".join(parts) + (f"; and {more} more errors" if more else "")


def _jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's error entries as JSON: exception objects as text, echoed inputs only when short."""
    return [{k: ({name: str(x) for name, x in v.items()} if k == "ctx" else v) for k, v in e.items()
             if k not in ("input", "url") or (isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 100))}
            for e in errors]


def create_app(loaded, settings, source: str = "", state: ServerState | None = None):
    """The ASGI application over ``loaded`` (a :class:`~regner.inference.loaded.LoadedModel`): the
    FastAPI app behind its :class:`~regner.inference.serving.guard.Guard`."""
    from regner import __version__

    state = state if state is not None else ServerState()

    def predict(texts: list[str]):
        return loaded.predict(texts, settings.max_batch, settings.threshold, progress=False)

    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = app.state.batcher = Batcher(predict, settings.max_batch, settings.max_wait_ms / 1000,
                                              settings.max_queue, settings.timeout_s)
        batcher.start()
        await batcher.warm_up(["张伟在北京。"])
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="regner", version=__version__, lifespan=lifespan, redoc_url=None,
                  docs_url="/docs" if settings.docs else None,
                  description="Named entities (GlobalPointer spans) for raw texts.")

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        headers = extra.pop("headers", None)
        return JSONResponse(status_code=status, content={"error": message, **extra}, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        known = {404: f"no such endpoint {request.url.path}: POST /predict, GET /health, GET /labels",
                 405: f"{request.method} is not allowed on {request.url.path}"}
        return error(exc.status_code, known.get(exc.status_code, str(exc.detail)), headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("request to %s failed", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}: {exc}); the server goes on")

    def parse(raw: bytes) -> PredictRequest | JSONResponse:
        if not raw.strip():
            return error(422, f"{SHAPE}; the body is empty")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as err:
            return error(400, f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}")
        texts = data.get("texts") if isinstance(data, dict) else None
        if isinstance(texts, list) and len(texts) > settings.max_texts:  # before validating a million items
            return error(413, f"{len(texts)} texts in one request; this server takes at most {settings.max_texts} "
                              f"(regner serve max_texts=N): split the list")
        try:
            return PredictRequest.model_validate(data)
        except ValidationError as err:
            errors = err.errors()
            shown = errors[: settings.max_errors]
            return error(422, _paragraph(shown, len(errors) - len(shown)), detail=_jsonable(shown))

    async def disconnected(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    schema = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": PredictRequest.model_json_schema()}}}}

    @app.post("/predict", openapi_extra=schema)
    async def predict_endpoint(request: Request):
        body = parse(await request.body())
        if isinstance(body, JSONResponse):
            return body
        texts = [body.text] if body.text is not None else body.texts
        for index, text in enumerate(texts):
            if len(text) > settings.max_length:
                where = "text" if body.text is not None else f"texts[{index}]"
                return error(413, f"{where} is {len(text)} characters; this server takes at most "
                                  f"{settings.max_length} per text (regner serve max_length=N)")
        work = asyncio.ensure_future(app.state.batcher.submit(texts))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            done, _ = await asyncio.wait({work, gone}, timeout=settings.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if work not in done:
            work.cancel()  # dropped by the batcher unless its batch is running already
            if gone in done:  # nobody reads this answer; the batcher drops the work
                return error(499, "the client closed the connection")
            return error(504, f"not answered within {settings.timeout_s:g} s (regner serve timeout_s=N); the server "
                              "is busy: retry later, or send fewer texts per request",
                         headers={"retry-after": "5"})
        try:
            entities = work.result()
        except QueueFull as err:
            return error(503, f"{err}: retry in a moment", headers={"retry-after": "1"})
        records = [{"text": text, "entities": found} for text, found in zip(texts, entities)]
        return records[0] if body.text is not None else records

    @app.get("/health")
    async def health():
        batcher = getattr(app.state, "batcher", None)
        return {"status": "draining" if state.draining else "ok", "model": source,
                "backend": loaded.config.get("backend", "torch"), "labels": len(loaded.model.labels),
                "uptime_s": round(time.time() - started, 3),
                "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                             "max_queue": settings.max_queue, "waiting": batcher.waiting if batcher else 0,
                             **(batcher.stats if batcher else {})}}

    @app.get("/labels")
    async def labels():
        return {"labels": list(loaded.model.labels)}

    return Guard(app, settings, state)
