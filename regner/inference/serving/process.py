"""``regner serve ARGS port=0`` in a subprocess, for the load script and the tests."""

from __future__ import annotations

import time
from typing import Any


class ServerProcess:
    """``regner serve ARGS port=0`` in a subprocess, started and waited for until ``/health`` answers
    (for the load script and the tests; the port is read from the server's start line). Use as a
    context manager, or call :meth:`stop`."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120.0):
        import subprocess
        import sys
        import threading

        self.process = subprocess.Popen([sys.executable, "-m", "regner", "serve", *args, "port=0"],
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
