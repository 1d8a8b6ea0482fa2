"""``regner serve`` stays up and bounded under hostile requests, over real loopback HTTP: body-size limit
before parsing, capped error lists, bounded queue (503 + Retry-After), per-request deadline (504),
work of departed clients dropped, 503 while draining, bearer token, one error shape everywhere.

The model here is a stand-in whose predictions wait on a gate the test opens, so every queueing and
timing situation is reached deterministically; the endpoints and the batcher are regner's."""

import http.client
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


class GatedModel:
    """A LoadedModel stand-in: predict() records its texts and, while the gate is closed, waits."""

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[str]] = []
        self.config = {"backend": "torch"}
        self.model = SimpleNamespace(labels=["PER"])

    def predict(self, texts, batch_size=64, threshold=None, progress=False):
        self.calls.append(list(texts))
        assert self.gate.wait(30), "the test never opened the gate"
        return [[{"start": 0, "end": 1, "type": "PER", "text": t[:1], "score": 0.9}] if t else [] for t in texts]


class InProcessServer:
    """regner's app under regner's uvicorn server in a thread, on a free loopback port."""

    def __init__(self, **settings):
        from regner.inference.serving import ServerState, ServeSettings, create_app
        from regner.inference.serving.server import draining_server

        self.model, self.state = GatedModel(), ServerState()
        self.settings = ServeSettings(**{"max_wait_ms": 0, **settings})
        app = create_app(self.model, self.settings, "stand-in", self.state)
        self.server = draining_server(app, self.state, self.settings.grace_s, "error")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        assert len(self.model.calls) == 1  # the warm-up call at start
        self.model.calls.clear()

    def request(self, method="POST", path="/predict", body=None, headers=None, timeout=30):
        """(status, JSON answer, headers)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        return response.status, json.loads(raw) if raw else None, dict(response.getheaders())

    def in_background(self, *args, **kwargs):
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("answer", self.request(*args, **kwargs)))
        thread.start()
        return thread, result

    def wait_for(self, condition, what: str, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    def stop(self):
        self.model.gate.set()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def serve():
    servers = []

    def start(**settings):
        servers.append(InProcessServer(**settings))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(serve):
    server = serve(max_texts=8, max_length=300)
    assert server.settings.body_limit == 8 * (6 * 300 + 8) + 4096
    huge = json.dumps({"texts": [1] * 1_000_000}).encode()  # 3 MB: the answer was a 148 MB list of errors
    started = time.monotonic()
    status, answer, _ = server.request(body=huge)
    assert status == 413 and "at most 18560" in answer["error"] and list(answer) == ["error"]
    assert time.monotonic() - started < 5 and server.model.calls == []
    chunked = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # no Content-Length: counted
    chunked.request("POST", "/predict", body=iter([b'{"texts": ["', b"a" * 20000, b'"]}']),
                    headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    response = chunked.getresponse()
    assert response.status == 413 and "over 18560 bytes" in json.loads(response.read())["error"]
    chunked.close()
    assert server.request("GET", "/health")[0] == 200


def test_validation_errors_echoed_back_are_capped(serve):
    server = serve(max_texts=8, max_length=300)
    body = {"text": "a", **{f"key{i}": i for i in range(500)}}
    status, answer, _ = server.request(body=body)
    assert status == 422 and len(answer["detail"]) == 10 and "and 490 more errors" in answer["error"]
    assert len(json.dumps(answer)) < 4000


def test_a_full_queue_answers_503_with_retry_after(serve):
    server = serve(max_batch=1, max_queue=1)
    server.model.gate.clear()
    first, first_result = server.in_background(body={"text": "甲"})
    server.wait_for(lambda: server.model.calls, "the first request never reached the model")
    second, second_result = server.in_background(body={"text": "乙"})
    server.wait_for(lambda: server.request("GET", "/health")[1]["batching"]["waiting"] == 1, "nothing queued")
    status, answer, headers = server.request(body={"text": "丙"})
    assert status == 503 and "queues at most 1" in answer["error"] and headers["retry-after"] == "1"
    server.model.gate.set()
    first.join(30)
    second.join(30)
    assert first_result["answer"][0] == second_result["answer"][0] == 200
    assert server.model.calls == [["甲"], ["乙"]]


def test_past_its_deadline_a_request_gets_504_and_its_work_is_dropped(serve):
    server = serve(max_batch=1, timeout_s=0.5)
    server.model.gate.clear()
    first, first_result = server.in_background(body={"text": "甲"})
    server.wait_for(lambda: server.model.calls, "the first request never reached the model")
    status, answer, headers = server.request(body={"text": "乙"})  # queued behind the stuck one
    assert status == 504 and "within 0.5 s" in answer["error"] and "retry-after" in headers
    first.join(30)
    assert first_result["answer"][0] == 504
    server.model.gate.set()
    server.wait_for(lambda: server.request("GET", "/health")[1]["batching"]["dropped"] == 1, "乙 was not dropped")
    assert server.model.calls == [["甲"]]  # 乙 was never predicted


def test_the_work_of_a_client_that_left_is_dropped(serve):
    server = serve(max_batch=1)
    server.model.gate.clear()
    first, _ = server.in_background(body={"text": "甲"})
    server.wait_for(lambda: server.model.calls, "the first request never reached the model")
    body = json.dumps({"text": "乙"}).encode()
    leaver = socket.create_connection(("127.0.0.1", server.port))
    leaver.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
    server.wait_for(lambda: server.request("GET", "/health")[1]["batching"]["waiting"] == 1, "乙 not queued")
    leaver.close()
    time.sleep(0.3)  # the server notices the disconnect
    server.model.gate.set()
    first.join(30)
    server.wait_for(lambda: server.request("GET", "/health")[1]["batching"]["dropped"] == 1, "乙 was not dropped")
    assert server.model.calls == [["甲"]]


def test_on_shutdown_new_requests_get_503_and_the_one_in_flight_finishes(serve):
    server = serve(max_batch=1, grace_s=10)
    server.model.gate.clear()
    flight, flight_result = server.in_background(body={"text": "甲"})
    server.wait_for(lambda: server.model.calls, "the request never reached the model")
    late = socket.create_connection(("127.0.0.1", server.port))  # an open keep-alive connection
    started = time.monotonic()
    server.server.handle_exit(15, None)  # what SIGTERM calls
    body = json.dumps({"text": "乙"}).encode()
    late.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    late.settimeout(10)
    reply = b""
    while not reply.endswith(b"}"):  # headers and body may come in separate packets
        reply += late.recv(4096)
    reply = reply.decode()
    late.close()
    assert reply.startswith("HTTP/1.1 503") and "shutting down" in reply and "retry-after: 5" in reply.lower()
    server.model.gate.set()
    flight.join(30)
    assert flight_result["answer"][0] == 200 and flight_result["answer"][1]["text"] == "甲"
    server.thread.join(30)
    assert not server.thread.is_alive() and time.monotonic() - started < 10
    assert server.model.calls == [["甲"]]


def test_bearer_token(serve):
    server = serve(token="s3cret")
    assert server.request("GET", "/health")[0] == 200  # probes need no token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, answer, got = server.request(body={"text": "甲"}, headers=headers)
        assert status == 401 and "Authorization: Bearer" in answer["error"] and got["www-authenticate"] == "Bearer"
    assert server.request("GET", "/labels")[0] == 401
    status, answer, _ = server.request(body={"text": "甲"}, headers={"Authorization": "Bearer s3cret"})
    assert status == 200 and answer["text"] == "甲"


@pytest.mark.parametrize("method,path,body,headers,status,says", [
    ("GET", "/nope", None, {}, 404, "no such endpoint /nope"),
    ("GET", "/predict", None, {}, 405, "GET is not allowed on /predict"),
    ("POST", "/predict", b'{"text": "\xff"}', {}, 400, "not valid UTF-8: byte 0xff at offset 10"),
    ("POST", "/predict", b"text=a", {"Content-Type": "text/plain"}, 415, "Content-Type text/plain is not JSON"),
    ("POST", "/predict", b'{"text": "a"', {}, 400, "not valid JSON"),
    ("GET", "/docs", None, {}, 404, "no such endpoint /docs"),
])
def test_every_error_has_the_documented_shape(serve, method, path, body, headers, status, says):
    server = serve()
    got, answer, _ = server.request(method, path, body, headers)
    assert got == status and says in answer["error"], answer
    assert server.request("GET", "/openapi.json")[0] == 200  # the schema stays (no CDN needed)


def test_docs_only_when_asked(serve):
    connection_server = serve(docs=True)
    connection = http.client.HTTPConnection("127.0.0.1", connection_server.port, timeout=30)
    connection.request("GET", "/docs")
    assert connection.getresponse().status == 200
    connection.close()


def test_a_request_that_cannot_meet_its_deadline_is_refused_at_once():
    """Admission by the work ahead: with 100 characters/s measured and 10 s of work queued, a
    request with a 5 s deadline gets QueueFull (503) at once instead of a 504 after 5 s."""
    import asyncio

    from regner.inference.serving import Batcher, QueueFull
    from regner.inference.serving.batcher import cost

    async def scenario():
        batcher = Batcher(lambda texts: [[] for _ in texts], max_batch=4, max_wait_s=0, deadline_s=5)
        batcher.rate, batcher.queued_chars = 100.0, 1000
        with pytest.raises(QueueFull, match=r"about 10 s of work is ahead of this request, more than its 5 s"):
            await batcher.submit(["甲乙"])
        batcher.queued_chars = 300  # 3 s ahead + this request: admitted
        batcher.start()
        try:
            return await asyncio.wait_for(batcher.submit(["甲乙"]), 5)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [[]]
    assert cost(["甲乙", ""]) == 4
