#!/usr/bin/env python
"""Load test of ``regner serve``: requests/s and latency percentiles, PyTorch vs ONNX Runtime.

    python scripts/bench_serve.py --ckpt RUN [--texts FILE] [--out docs/benchmarks/serve-DATE.md]

For each backend (torch: the run's checkpoint; onnx: its ``regner export``, made into a temporary
directory unless ``--onnx DIR`` is given) it starts ``regner serve`` on loopback, sends warm-up
requests, then for every request size (``--batch-sizes``: texts per request) and every number of
concurrent clients (``--concurrency``) sends ``--requests`` requests over keep-alive connections and
reports requests/s, texts/s and the p50/p99 latency of a request, plus how many model calls the
server's dynamic batching made. Texts are cycled from ``--texts`` (one per line; default: demo
sentences). Client and server share the machine, so run it on an otherwise idle one; the table
records the machine, date, model and thread settings.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regner.experiments.benchmark.execution import machine_description  # noqa: E402
from regner.inference.serving import ServerProcess  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def load(address: str, payloads: list[bytes], concurrency: int) -> tuple[list[float], float]:
    """Send every payload (POST /predict) from ``concurrency`` clients with one keep-alive connection
    each; returns the latency of every request (s) and the wall time of all of them."""
    host, port = address.rsplit(":", 1)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    work = iter(enumerate(payloads))

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        connection.connect()
        # http.client sends headers and body in two writes: without TCP_NODELAY, Nagle's algorithm holds
        # the body until the server's delayed ACK (~40 ms on Linux), which would dwarf the model's time
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                with lock:
                    item = next(work, None)
                if item is None:
                    return
                tick = time.perf_counter()
                connection.request("POST", "/predict", body=item[1], headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - tick
                with lock:
                    latencies.append(elapsed)
                    if response.status != 200:
                        errors.append(f"HTTP {response.status}: {body[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return latencies, wall


def read_texts(path: str | None) -> list[str]:
    if path:
        texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise SystemExit(f"bench_serve: {path} holds no text")
        return texts
    from regner.data.demo import generate_split

    return [ex.text for ex in generate_split(500, 0, "dev")]


def payloads(texts: list[str], batch: int, count: int, offset: int = 0) -> list[bytes]:
    out = []
    for i in range(count):
        chosen = [texts[(offset + i * batch + j) % len(texts)] for j in range(batch)]
        body = {"text": chosen[0]} if batch == 1 else {"texts": chosen}
        out.append(json.dumps(body, ensure_ascii=False).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a regner run (or checkpoint) directory")
    parser.add_argument("--onnx", help="its `regner export` directory (default: exported into a temporary directory)")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--texts", help="one text per line (default: 500 demo sentences)")
    parser.add_argument("--batch-sizes", default="1,32", help="texts per request")
    parser.add_argument("--concurrency", default="1,8", help="concurrent clients")
    parser.add_argument("--requests", type=int, default=200, help="requests per (batch size, concurrency) cell")
    parser.add_argument("--warmup", type=int, default=10, help="requests before measuring")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="server inference threads")
    parser.add_argument("--max-wait-ms", default="5", help="the server's dynamic-batching wait")
    parser.add_argument("--max-batch", default="32", help="the server's texts per model call")
    parser.add_argument("--model-note", default="", help="how the model was made, for the table's header")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)
    texts = read_texts(args.texts)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    clients = [int(x) for x in args.concurrency.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    common = [f"threads={args.threads}", f"max_wait_ms={args.max_wait_ms}", f"max_batch={args.max_batch}",
              f"max_texts={max(sizes)}", "log_level=warning"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="regner-bench-serve-") as scratch:
        onnx_dir = args.onnx
        if "onnx" in backends and not onnx_dir:
            from regner.inference.export import export_onnx

            onnx_dir = str(Path(scratch) / "onnx")
            export_onnx(args.ckpt, onnx_dir)
        for backend in backends:
            ckpt = args.ckpt if backend == "torch" else onnx_dir
            with ServerProcess([f"ckpt={ckpt}", f"backend={backend}", *common], env) as server:
                load(server.address, payloads(texts, max(sizes), args.warmup), 1)
                for batch in sizes:
                    for concurrency in clients:
                        before = server.get("/health")[1]["batching"]
                        latencies, wall = load(server.address, payloads(texts, batch, args.requests, len(rows)),
                                               concurrency)
                        after = server.get("/health")[1]["batching"]
                        rows.append({"backend": backend, "batch": batch, "concurrency": concurrency,
                                     "requests": len(latencies), "requests_per_s": len(latencies) / wall,
                                     "texts_per_s": len(latencies) * batch / wall,
                                     "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
                                     "mean_ms": 1000 * statistics.fmean(latencies),
                                     "model_calls": after["batches"] - before["batches"]})
                        print(f"{backend} batch {batch} × {concurrency} clients: {rows[-1]['requests_per_s']:.1f} req/s, "
                              f"p50 {rows[-1]['p50_ms']:.1f} ms, p99 {rows[-1]['p99_ms']:.1f} ms", file=sys.stderr)
    table = render(rows, args, len(texts))
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


def render(rows: list[dict], args, n_texts: int) -> str:
    from regner.inference.checkpoint import checkpoint_dir

    bert = json.loads((checkpoint_dir(args.ckpt) / "config.json").read_text(encoding="utf-8"))
    encoder = (f"BERT {bert['num_hidden_layers']} layers × {bert['hidden_size']}, "
               f"vocabulary {bert['vocab_size']}")
    lines = [
        f"# regner serve: latency and throughput ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {machine_description()}. Server: `regner serve` with {args.threads} inference thread(s), "
        f"dynamic batching `max_wait_ms={args.max_wait_ms}`, `max_batch={args.max_batch}`; clients on the same "
        f"machine over loopback, one keep-alive connection each. Model: `{args.ckpt}` ({encoder}"
        + (f"; {args.model_note}" if args.model_note else "") + f"). Texts: {n_texts} "
        + (f"lines of `{args.texts}`" if args.texts else "demo sentences") + f", {args.requests} requests per row "
        f"after {args.warmup} warm-up requests. Command: `python scripts/bench_serve.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`.",
        "",
        "| backend | texts / request | clients | requests/s | texts/s | p50 ms | p99 ms | model calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['batch']} | {r['concurrency']} | {r['requests_per_s']:.1f} | "
                     f"{r['texts_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['model_calls']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
