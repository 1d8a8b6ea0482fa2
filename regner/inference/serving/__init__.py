"""``regner serve``: an HTTP service over a trained model (FastAPI + uvicorn), with dynamic batching.

Endpoints:

- ``POST /predict`` — ``{"text": "..."}`` answers ``{"text", "entities"}``, exactly one line of
  ``regner predict``; ``{"texts": ["...", ...]}`` answers a JSON array of such objects, in order.
- ``GET /health`` — liveness (``draining`` during a shutdown), the model served, the batcher's counters.
- ``GET /labels`` — the entity types the model predicts.

Modules: :mod:`.settings` (every bound), :mod:`.guard` (refusals before parsing: shutdown, token,
body size, content type, UTF-8), :mod:`.app` (the endpoints and the error shape),
:mod:`.batcher` (dynamic batching, bounded queue, per-request isolation), :mod:`.process` (the server
in a subprocess, for the load script and the tests).
"""

from regner.inference.serving.app import PredictRequest, ServerState, create_app
from regner.inference.serving.batcher import Batcher, QueueFull
from regner.inference.serving.process import ServerProcess
from regner.inference.serving.settings import ServeSettings

__all__ = ["Batcher", "PredictRequest", "QueueFull", "ServeSettings", "ServerProcess", "ServerState", "create_app"]
