#!/usr/bin/env python
"""Hostile load on ``regner serve``: many concurrent clients mixing valid, invalid and maximal requests.

    python scripts/serve_load_test.py --ckpt RUN [--clients 200] [--seconds 60] [--out docs/benchmarks/X.md]

Starts ``regner serve ckpt=RUN`` (its default limits unless ``--serve-args`` says otherwise) on
loopback, then runs ``--clients`` asyncio clients for ``--seconds``; each sends, one after another, a
request drawn with fixed odds from three kinds: **valid** (one demo-sized text, or a list of four),
**invalid** (malformed JSON, a lone surrogate, an unknown key, a wrong type, a non-JSON
Content-Type, a body over the size limit) and **maximal** (``max_texts`` texts of ``max_length``
characters: the most the server accepts). The server's RSS is sampled every second. It checks what
``docs/RELIABILITY.md`` promises: every valid or maximal request answered 200 within the deadline,
or refused at once with 503 (no 500, no 504, no dropped connection), every invalid one a 4xx with
``{"error"}``, the RSS bounded, and the server up at the end; each broken promise is counted in the
table, and the script exits 1 if any is. Client and server share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regner.experiments.benchmark.execution import machine_description  # noqa: E402
from regner.inference.serving import ServerProcess  # noqa: E402

TEXTS = ["张伟担任北京大学校长。", "华为在深圳发布了新手机。", "李娜出生于湖北武汉，是一名网球运动员。", "这家店的菜很好吃，下次还来。"]


def requests_of(kind: str, rng: random.Random, max_texts: int, max_length: int) -> tuple[bytes, str]:
    """(body, content type) of one request of ``kind``."""
    if kind == "valid":
        body = {"text": rng.choice(TEXTS)} if rng.random() < 0.5 else {"texts": rng.sample(TEXTS, 4)}
        return json.dumps(body, ensure_ascii=False).encode(), "application/json"
    if kind == "maximal":
        text = (rng.choice(TEXTS) * (max_length // 10 + 1))[:max_length]
        return json.dumps({"texts": [text] * max_texts}, ensure_ascii=False).encode(), "application/json"
    choice = rng.randrange(6)
    if choice == 0:
        return b'{"text": "unfinished', "application/json"
    if choice == 1:
        return b'{"texts": ["ok", "\\ud800x"]}', "application/json"
    if choice == 2:
        return json.dumps({"text": "a", **{f"k{i}": i for i in range(200)}}).encode(), "application/json"
    if choice == 3:
        return b'{"texts": [1, 2, 3]}', "application/json"
    if choice == 4:
        return b'{"text": "a"}', "text/plain"
    return b'{"texts": ["' + b"a" * (max_texts * (6 * max_length + 8) + 8192) + b'"]}', "application/json"


async def send(host: str, port: int, body: bytes, content_type: str, timeout: float) -> tuple[int, dict | None]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:  # refused before the whole body was sent (413): its answer is still there
            pass
        raw = await asyncio.wait_for(_read_all(reader), timeout)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


async def load(address: str, clients: int, seconds: float, max_texts: int, max_length: int, deadline: float,
               odds: dict[str, float], seed: int):
    host, port = address.rsplit(":", 1)
    stop_at = time.monotonic() + seconds
    results: list[tuple[str, int, float, bool]] = []  # kind, status, seconds, has {"error"} (non-200)
    failures: Counter = Counter()  # why a request got no answer (status -1)

    async def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        kinds, weights = list(odds), list(odds.values())
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            body, content_type = requests_of(kind, rng, max_texts, max_length)
            started = time.monotonic()
            try:
                status, answer = await send(host, int(port), body, content_type, deadline + 30)
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as err:
                status, answer = -1, None  # no answer at all
                failures[type(err).__name__] += 1
            shaped = status == 200 or (isinstance(answer, dict) and isinstance(answer.get("error"), str))
            results.append((kind, status, time.monotonic() - started, shaped))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return results, failures


async def _read_all(reader) -> bytes:
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionError:  # the server closed after answering (a refused body)
        pass
    return b"".join(chunks)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a run, checkpoint or export directory")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--serve-args", default="", help="extra key=value arguments for regner serve")
    parser.add_argument("--odds", default="valid=0.7,invalid=0.2,maximal=0.1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the result table here (markdown; a .json beside it)")
    args = parser.parse_args(argv)
    serve_args = [f"ckpt={args.ckpt}", "log_level=warning", *args.serve_args.split()]
    options = dict(a.split("=", 1) for a in serve_args)
    max_texts, max_length = int(options.get("max_texts", 64)), int(options.get("max_length", 10000))
    deadline = float(options.get("timeout_s", 30))
    odds = {k: float(v) for k, v in (p.split("=") for p in args.odds.split(","))}
    samples: list[float] = []
    with ServerProcess(serve_args) as server:
        pid = server.process.pid
        samples.append(rss_mb(pid))

        async def sample() -> None:
            while True:
                await asyncio.sleep(1)
                samples.append(rss_mb(pid))

        async def run():
            sampler = asyncio.ensure_future(sample())
            try:
                return await load(server.address, args.clients, args.seconds, max_texts, max_length, deadline,
                                  odds, args.seed)
            finally:
                sampler.cancel()

        started = time.monotonic()
        results, failures = asyncio.run(run())
        wall = time.monotonic() - started
        health_status, health = server.get("/health")
        samples.append(rss_mb(pid))
    statuses: dict[str, Counter] = defaultdict(Counter)
    for kind, status, _, _ in results:
        statuses[kind][status] += 1
    served = [s for kind, status, s, _ in results if kind == "valid" and status == 200]
    broken = {
        "valid or maximal answered other than 200 or 503": sum(
            n for kind in ("valid", "maximal") for status, n in statuses[kind].items() if status not in (200, 503)),
        "any request answered 500 or not at all": sum(n for c in statuses.values() for s, n in c.items()
                                                      if s >= 500 and s not in (503, 504) or s == -1),
        "invalid answered other than 4xx": sum(n for s, n in statuses["invalid"].items() if not 400 <= s < 500),
        "an error without the {\"error\"} shape": sum(1 for *_, shaped in results if not shaped),
        "valid 200 later than the deadline": sum(1 for s in served if s > deadline),
        "server down at the end": int(health_status != 200),
    }
    summary = {"date": datetime.date.today().isoformat(), "machine": machine_description(), "clients": args.clients,
               "seconds": round(wall, 1), "serve_args": serve_args[1:], "odds": odds, "requests": len(results),
               "statuses": {k: dict(sorted(v.items())) for k, v in statuses.items()},
               "valid_200_latency_s": {"p50": statistics.median(served) if served else None,
                                       "p99": sorted(served)[int(0.99 * (len(served) - 1))] if served else None},
               "no_answer": dict(failures), "rss_mb": {"start": round(samples[0], 1), "max": round(max(samples), 1),
                          "end": round(samples[-1], 1)}, "broken": broken,
               "health_at_end": health.get("batching") if isinstance(health, dict) else None}
    table = markdown(summary)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
        Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 1 if any(broken.values()) else 0


def markdown(summary: dict) -> str:
    lines = [f"# `regner serve` under hostile load ({summary['date']})", "",
             f"{summary['machine']}; {summary['clients']} concurrent clients for {summary['seconds']} s "
             f"(`scripts/serve_load_test.py`), odds {summary['odds']}, server `regner serve "
             f"{' '.join(summary['serve_args'])}` with its default limits otherwise; {summary['requests']} requests.",
             "", "| kind | answers (status: count) |", "|---|---|"]
    for kind, counts in summary["statuses"].items():
        lines.append(f"| {kind} | {', '.join(f'{s}: {n}' for s, n in counts.items())} |")
    latency, rss = summary["valid_200_latency_s"], summary["rss_mb"]
    lines += ["", f"Valid requests answered 200: p50 {latency['p50']:.2f} s, p99 {latency['p99']:.2f} s."
              if latency["p50"] is not None else "", f"Server RSS: {rss['start']} MB at start, at most {rss['max']} MB, "
              f"{rss['end']} MB at the end.", "", "| promise | broken (count) |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in summary["broken"].items()]
    if summary["no_answer"]:
        lines += ["", f"No answer at all (status -1), by the client's error: {summary['no_answer']}."]
    lines += ["", f"Batcher at the end: {summary['health_at_end']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
