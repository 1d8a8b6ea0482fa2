"""The ASGI layer in front of the app: what is refused before any JSON is parsed.

In order: 503 while the server shuts down (``Retry-After``), 401 without the bearer token (where one
is set; ``/health`` stays open for probes), 413 for a body over the limit (by its ``Content-Length``,
or counted while it streams in; a refused body of up to 64 MiB is read away unparsed, so the client
gets the answer instead of a reset connection), 415 for a POST whose
``Content-Type`` is not JSON, 400 for a body that is not UTF-8. The body, once read, is replayed to
the app; later reads pass through, so the app still sees the client disconnect.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

OPEN_PATHS = ("/health",)
DRAIN_BYTES = 64 * 2**20  # a refused body up to this size is read (and dropped) before the answer; larger: closed


class Guard:
    def __init__(self, app, settings, state):
        self.app, self.settings, self.state = app, settings, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) <= DRAIN_BYTES:  # read it away first: closing on an unread
                await _discard(receive)  # body resets the connection, and the client may never see the answer
            await respond(send, *refusal)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body, problem = await self._read(receive)
        if problem is not None:
            await respond(send, *problem)
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            await respond(send, 400, f"the body is not valid UTF-8: byte 0x{body[err.start]:02x} at offset {err.start}")
            return
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect when the client goes

        await self.app(scope, replay, send)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple | None:
        settings = self.settings
        if self.state.draining:
            return 503, "the server is shutting down; retry on another instance or after it restarts", {"retry-after": "5"}
        if settings.token and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return 401, ("missing or wrong bearer token: send the header 'Authorization: Bearer <token>' with the "
                             "token regner serve was started with"), {"www-authenticate": "Bearer"}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.body_limit):
            return 413, (f"the body is {length} bytes; this server takes at most {settings.body_limit} (regner serve "
                         "max_body_bytes=N, or fewer/shorter texts per request)"), {}
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] == "POST" and content_type and not (content_type == "application/json"
                                                               or content_type.endswith("+json")):
            return 415, f"Content-Type {content_type} is not JSON: send the header 'Content-Type: application/json'", {}
        return None

    async def _read(self, receive) -> tuple[bytes, tuple | None]:
        limit, chunks, size = self.settings.body_limit, [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, "the client closed the connection before the body was complete", {})
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", (413, f"the body is over {limit} bytes, the most this server takes (regner serve "
                                  "max_body_bytes=N, or fewer/shorter texts per request)", {})
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


async def _discard(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


async def respond(send, status: int, error: str, headers: dict[str, str] | None = None) -> None:
    """A complete JSON answer ``{"error": ...}`` with ``status``."""
    body = json.dumps({"error": error}, ensure_ascii=False).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
