"""``regner serve`` over real HTTP on loopback: concurrent requests answer exactly what ``regner
predict`` writes, requests are batched, and bad requests get clear 4xx errors. Every wait is bounded."""

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .test_cli import cli_env, regner

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

def Server(*args: str):
    from regner.inference.serving import ServerProcess

    return ServerProcess(list(args), cli_env(), timeout=120)


@pytest.fixture(scope="module")
def server(trained_run):
    server = Server(f"ckpt={trained_run}", "max_wait_ms=50", "max_batch=16", "max_length=300", "max_texts=8")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dev_texts():
    from regner.data.demo import generate_split

    return [ex.text for ex in generate_split(48, 0, "dev")] + [""]


@pytest.fixture(scope="module")
def predicted(trained_run, dev_texts, tmp_path_factory):
    """What ``regner predict`` writes for ``dev_texts``."""
    source = tmp_path_factory.mktemp("serve") / "texts.txt"
    source.write_text("\n".join(dev_texts) + "\n", encoding="utf-8")
    result = regner("predict", f"ckpt={trained_run}", f"input={source}", cwd=source.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def spans(record):
    return record["text"], [(e["start"], e["end"], e["type"], e["text"]) for e in record["entities"]]


def assert_same(got, expected, tolerance=1e-5):
    """Same texts and spans; scores equal up to float noise from batching texts of other lengths together."""
    assert spans(got) == spans(expected)
    for a, b in zip(got["entities"], expected["entities"]):
        assert abs(a["score"] - b["score"]) <= tolerance


def concurrent_answers(server, dev_texts):
    """One request per text and two list requests, all at once from 16 threads."""
    payloads = [{"text": t} for t in dev_texts] + [{"texts": dev_texts[:8]}, {"texts": dev_texts[8:16]}]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(server.post, payloads))
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    return [body for _, body in answers]


def test_health_and_labels(server, trained_run):
    status, health = server.get("/health")
    assert status == 200 and health["status"] == "ok" and health["backend"] == "torch"
    labels = json.loads((trained_run / "checkpoint" / "regner_config.json").read_text())["labels"]
    assert server.get("/labels") == (200, {"labels": labels}) and health["labels"] == len(labels)


def test_concurrent_requests_answer_what_predict_writes_and_are_batched(server, dev_texts, predicted):
    before = server.get("/health")[1]["batching"]
    answers = concurrent_answers(server, dev_texts)
    singles, lists = answers[: len(dev_texts)], answers[len(dev_texts):]
    for got, expected in zip(singles, predicted):
        assert_same(got, expected)
    for got, expected in zip(lists[0] + lists[1], predicted[:16]):
        assert_same(got, expected)
    assert sum(len(r["entities"]) for r in singles) > 20  # the model finds entities: the comparison means something
    after = server.get("/health")[1]["batching"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == len(dev_texts) + 2 and after["texts"] - before["texts"] == len(dev_texts) + 16
    assert batches < requests and 1 < after["largest_batch"] <= 16  # concurrent requests shared model calls


@pytest.mark.parametrize("body,status,says", [
    (b"", 422, "the body is empty"),
    (b'{"text": "a"', 400, "not valid JSON"),
    (b"[1]", 422, "valid dictionary"),
    (b"{}", 422, 'exactly one of "text"'),
    (b'{"text": "a", "texts": ["b"]}', 422, 'exactly one of "text"'),
    (b'{"text": 3}', 422, "text: Input should be a valid string"),
    (b'{"texts": ["a", 2]}', 422, "texts.1: Input should be a valid string"),
    (b'{"texts": []}', 422, '"texts" is empty'),
    (b'{"text": "a", "lang": "zh"}', 422, "lang: Extra inputs are not permitted"),
    (json.dumps({"text": "字" * 301}).encode(), 413, "text is 301 characters; this server takes at most 300"),
    (json.dumps({"texts": ["a", "字" * 301]}).encode(), 413, "texts[1] is 301 characters"),
    (json.dumps({"texts": ["a"] * 9}).encode(), 413, "9 texts in one request; this server takes at most 8"),
    (b'{"text": "\\ud800x"}', 422, "text holds an unpaired surrogate \\ud800 at character 1"),
    (b'{"texts": ["a", "b\\udfff"]}', 422, "texts[1] holds an unpaired surrogate \\udfff at character 2"),
])
def test_bad_requests_get_a_clear_4xx(server, body, status, says):
    got, answer = server.post(body)
    assert got == status and says in answer["error"], answer
    assert server.get("/health")[0] == 200  # and the server goes on


def test_onnx_backend_serves_the_same_entities(exported, dev_texts, predicted):
    server = Server(f"ckpt={exported}", "backend=onnx", "max_wait_ms=50")
    try:
        assert server.get("/health")[1]["backend"] == "onnx"
        answers = concurrent_answers(server, dev_texts)
    finally:
        server.stop()
    for got, expected in zip(answers[: len(dev_texts)], predicted):
        assert_same(got, expected, tolerance=1e-4)  # onnxruntime's kernels: scores within 1e-4 of PyTorch's


def test_bad_checkpoint_or_taken_port_fails_cleanly(tmp_path):
    result = regner("serve", f"ckpt={tmp_path / 'nope'}", "port=0", cwd=tmp_path)
    assert result.returncode == 2 and "no such run or checkpoint directory" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = regner("serve", f"ckpt={tmp_path}", f"port={port}", cwd=tmp_path)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    result = regner("serve", f"ckpt={tmp_path}", "max_texts=0", cwd=tmp_path)
    assert result.returncode == 2 and "max_texts" in result.stderr
    assert not os.listdir(tmp_path)  # serving writes nothing


@pytest.mark.slow  # ~40 s: a measurement script; the hostile load script runs in the fast suite
def test_load_script_reports_every_cell_for_both_backends(trained_run, exported, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "serve.md"
    result = subprocess.run([sys.executable, "scripts/bench_serve.py", "--ckpt", str(trained_run), "--onnx", str(exported),
                             "--requests", "4", "--warmup", "1", "--batch-sizes", "1,3", "--concurrency", "1,2",
                             "--threads", "1", "--out", str(out)], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=300, env={**cli_env(), "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| torch") or
            line.startswith("| onnx")]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        (b, n, c) for b in ("torch", "onnx") for n in ("1", "3") for c in ("1", "2")]
    for row in rows:
        requests_per_s, texts_per_s, p50, p99, calls = (float(x) for x in row[3:])
        assert requests_per_s > 0 and texts_per_s == pytest.approx(requests_per_s * int(row[1]), rel=0.01, abs=0.1)
        assert 0 < p50 <= p99 and 1 <= calls <= 4


def test_a_request_with_a_bad_text_never_fails_the_others(server, dev_texts, predicted):
    """Lone surrogates are valid JSON: each such request gets its own 422 naming the item, and every
    valid request sent with them in the same instant still answers 200 with predict's entities."""
    bad = [b'{"text": "\\ud800x"}', b'{"texts": ["ok", "\\udc00"]}'] * 10
    good = [{"text": t} for t in dev_texts[:30]]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(server.post, [x for pair in zip(good, bad + bad) for x in pair]))
    statuses = [status for status, _ in answers]
    assert statuses[0::2] == [200] * 30 and statuses[1::2] == [422] * 30
    for (_, body), expected in zip(answers[0::2], predicted[:30]):
        assert_same(body, expected)


def test_a_failing_batch_fails_only_its_failing_request():
    """The batcher predicts a failed batch request by request: only the request whose text breaks
    the model gets the error (the model here refuses the text "boom")."""
    import asyncio

    from regner.inference.serving import Batcher

    calls = []

    def predict(texts):
        calls.append(list(texts))
        if "boom" in texts:
            raise ValueError("the tokenizer refused a text")
        return [[{"text": t}] for t in texts]

    async def scenario():
        batcher = Batcher(predict, max_batch=16, max_wait_s=0.05)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(texts) for texts in (["a"], ["boom"], ["b", "c"])),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    first, broken, last = asyncio.run(scenario())
    assert first == [[{"text": "a"}]] and last == [[{"text": "b"}], [{"text": "c"}]]
    assert isinstance(broken, ValueError)
    assert calls[0] == ["a", "boom", "b", "c"] and ["a"] in calls[1:] and ["b", "c"] in calls[1:]


def test_hostile_load_script_checks_its_promises(trained_run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "load.md"
    result = subprocess.run([sys.executable, "scripts/serve_load_test.py", "--ckpt", str(trained_run), "--clients", "8",
                             "--seconds", "3", "--serve-args", "max_length=300 max_texts=8", "--out", str(out)],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
                            env={**cli_env(), "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert set(summary["statuses"]) <= {"valid", "invalid", "maximal"} and summary["requests"] > 0
    assert not any(summary["broken"].values()) and summary["rss_mb"]["max"] > 0
    assert all(400 <= int(s) < 500 for s in summary["statuses"].get("invalid", {}))
