"""uvicorn for ``regner serve``: from the moment a SIGTERM/SIGINT arrives, new requests get 503 while
requests in flight get ``grace_s`` to finish."""

from __future__ import annotations


def draining_server(app, state, grace_s: float, log_level: str = "info"):
    """A ``uvicorn.Server`` over ``app`` that sets ``state.draining`` when asked to exit."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            state.draining = True
            super().handle_exit(sig, frame)

    return DrainingServer(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=grace_s))
