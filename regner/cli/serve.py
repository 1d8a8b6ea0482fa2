"""``regner serve ckpt=RUN``: the HTTP service (FastAPI + uvicorn) over a run, checkpoint or export."""

from __future__ import annotations

import sys

from regner.cli.errors import report_error, user_errors
from regner.cli.options import Command, Option, require_extra, wants_help
from regner.errors import UserError

COMMAND = Command(
    "serve", "usage: regner serve ckpt=RUN [key=value ...]",
    'An HTTP service (FastAPI + uvicorn): POST /predict {"text": "..."} or {"texts": [...]} answers regner predict\'s '
    "JSON; GET /health; GET /labels; OpenAPI docs at /docs. Concurrent requests are batched. Needs pip install "
    "'regner[serve]'.",
    (Option("ckpt", None, "run directory, its checkpoint/ directory, or a `regner export` directory (required)",
            required="a run, checkpoint or export directory (ckpt=RUN)"),
     Option("host", "127.0.0.1", "address to listen on (0.0.0.0: every interface)"),
     Option("port", "8000", "TCP port (0: any free port, printed at start)", kind="int", low=0, high=65535),
     Option("backend", None, "torch or onnx; default: what ckpt holds", kind="choice", choices=("torch", "onnx")),
     Option("device", "cpu", "cpu, cuda, cuda:N or auto (backend torch)", kind="device"),
     Option("threshold", None, "logit threshold for a span (default: the checkpoint's head.threshold)", kind="float",
            expected="a finite number (a logit; 0 = probability 0.5)"),
     Option("max_length", "10000", "longest text accepted, in characters (longer: 413)", kind="int", low=1),
     Option("max_texts", "64", "most texts in one request (more: 413)", kind="int", low=1),
     Option("max_batch", "32", "most texts per model call when batching concurrent requests", kind="int", low=1),
     Option("max_wait_ms", "5", "how long a request waits for others to batch with (0: no waiting)", kind="float",
            low=0, expected="a finite number ≥ 0"),
     Option("threads", "auto", "CPU threads for inference: auto (the free cores, as trainer.num_threads) or N",
            kind="threads", low=1, expected="auto or an integer ≥ 1"),
     Option("max_body_bytes", None, "largest request body in bytes (larger: 413; default: what max_texts texts of "
            "max_length characters can take)", kind="int", low=1),
     Option("max_queue", "256", "most texts waiting for the model (more: 503 with Retry-After)", kind="int", low=1),
     Option("timeout_s", "30", "a request not answered by then gets 504 and its work is dropped", kind="float",
            low=0.001, expected="a finite number > 0"),
     Option("grace_s", "10", "on SIGTERM, how long requests in flight may take to finish (new ones: 503)",
            kind="float", low=0, expected="a finite number ≥ 0"),
     Option("token", None, "bearer token every endpoint but /health asks for (default: $REGNER_SERVE_TOKEN; none: "
            "no auth, and a warning when host is not loopback)"),
     Option("docs", "false", "serve the OpenAPI page at /docs (its page loads JavaScript from a CDN; "
            "/openapi.json is always served)", kind="bool"),
     Option("log_level", "info", "uvicorn's log level: critical, error, warning, info, debug", kind="choice",
            choices=("critical", "error", "warning", "info", "debug"))))


def run(argv: list[str]) -> None:
    if wants_help(argv, COMMAND):
        return
    import ipaddress
    import os
    import socket
    import threading

    options = COMMAND.parse(argv)
    require_extra("serve", ("fastapi", "uvicorn"))

    from regner.inference.loaded import LoadedModel
    from regner.inference.serving import ServerState, ServeSettings, create_app
    from regner.inference.serving.server import draining_server
    from regner.training.device import resolve_device, set_threads

    family = socket.AF_INET6 if ":" in options["host"] else socket.AF_INET
    # proto IPPROTO_TCP, as asyncio's own listeners have: only then does asyncio set TCP_NODELAY on accepted
    # connections, without which a keep-alive client waits ~40 ms (Nagle + delayed ACK) for every answer
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options["host"], options["port"]))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {options['host']}:{options['port']} ({err.strerror}): choose another "
                        f"port=N or host=ADDRESS") from None
    host, port = sock.getsockname()[:2]  # bound before the model loads: a taken port fails at once
    host = f"[{host}]" if family == socket.AF_INET6 else host
    options["threads"] = set_threads(options["threads"], "threads")
    try:
        loaded = LoadedModel.load(options["ckpt"], resolve_device(options["device"], "device"), options["backend"],
                                  threads=options["threads"])
    except user_errors() as err:
        sock.close()
        report_error("serve", err)
    token = options["token"] or os.environ.get("REGNER_SERVE_TOKEN") or None
    settings = ServeSettings(max_length=options["max_length"], max_texts=options["max_texts"],
                             max_batch=options["max_batch"], max_wait_ms=options["max_wait_ms"],
                             threshold=options["threshold"], max_body_bytes=options["max_body_bytes"],
                             max_queue=options["max_queue"], timeout_s=options["timeout_s"],
                             grace_s=options["grace_s"], token=token, docs=options["docs"])
    backend = loaded.config.get("backend", "torch")
    print(f"regner serve: {options['ckpt']} ({backend}, {len(loaded.model.labels)} entity types) on "
          f"http://{host}:{port} — POST /predict, GET /health, GET /labels"
          f"{', docs at /docs' if settings.docs else ''}{'; bearer token required' if token else ''}",
          file=sys.stderr, flush=True)
    if token is None and not ipaddress.ip_address(host.strip("[]")).is_loopback:
        print(f"regner serve: warning: listening on {host} without a token: anyone who can reach port {port} can use "
              "the model; set token=... or REGNER_SERVE_TOKEN (clients send 'Authorization: Bearer <token>')",
              file=sys.stderr, flush=True)
    state = ServerState()
    app = create_app(loaded, settings, str(options["ckpt"]), state)
    server = draining_server(app, state, settings.grace_s, options["log_level"])
    server.run(sockets=[sock])
    batcher_busy = any(t.name.startswith("regner-model") and t.is_alive() for t in threading.enumerate())
    if batcher_busy:  # a model call outlived the grace period: do not wait for it to exit
        print("regner serve: stopped with a prediction still running; it was abandoned", file=sys.stderr, flush=True)
        os._exit(0)
