"""What bounds ``regner serve``: sizes, queue, deadline, shutdown grace, access."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    max_length: int = 10000  # characters per text (longer: 413)
    max_texts: int = 64  # texts per request (more: 413)
    max_batch: int = 32  # texts per model call (several requests)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    threshold: float | None = None  # None: the checkpoint's head.threshold
    max_body_bytes: int | None = None  # None: what max_texts texts of max_length characters can take as JSON
    max_queue: int = 256  # texts waiting for the model (more: 503 + Retry-After)
    timeout_s: float = 30.0  # a request not answered by then: 504, and its work is dropped
    grace_s: float = 10.0  # on SIGTERM: how long requests in flight may take to finish
    token: str | None = None  # bearer token every endpoint but /health asks for (None: no auth)
    docs: bool = False  # /docs (its page loads JavaScript from a CDN, so it is off unless asked for)
    max_errors: int = 10  # validation errors echoed back per request

    @property
    def body_limit(self) -> int:
        """Bytes of one request body: given, or enough for ``max_texts`` texts of ``max_length``
        characters each escaped as ``\\uXXXX`` (6 bytes), plus the JSON around them."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_texts * (6 * self.max_length + 8) + 4096
