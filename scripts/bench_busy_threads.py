#!/usr/bin/env python
"""The default run on an idle and on a busy machine: what ``trainer.num_threads=auto`` buys.

    python scripts/bench_busy_threads.py [--pairs 2] [--out docs/benchmarks/DATE-busy-threads-cpu.md]

Runs the README's first command (``regner train``, the offline demo default) in interleaved pairs —
idle (once the load average is below 0.5), then with one competing single-threaded job (a pure-Python busy loop pinned to nothing, as
another user's job would be) — with ``trainer.num_threads=auto`` (the default), and, with
``--all-cores-epochs N``, once more busy with torch's own default (all cores, ``num_threads=null``)
for N epochs as the contrast (that arm is slow: it is what ``auto`` replaces). Reports each run's
wall time from its ``metrics.json`` and the busy/idle ratio per pair. Absolute times are noisy on a
shared machine; the ratio of neighbouring runs is the figure.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regner.experiments.benchmark.execution import machine_description  # noqa: E402

BUSY = "import time\nend = time.time() + 36000\nwhile time.time() < end:\n    pass\n"


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when this script dies, however it dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(command, preexec_fn=_die_with_parent, **kwargs)


def settle(below: float = 0.5, limit_s: float = 600) -> None:
    """Wait until the 1-minute load average is below ``below`` (the machine looks idle)."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(5)


def train(out: Path, extra: list[str]) -> dict:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    child = spawn([sys.executable, "-m", "regner", "train", f"hydra.run.dir={out}", "trainer.progress=false", *extra],
                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = child.communicate(timeout=7200)
    finally:  # interrupted or timed out: the training run must not outlive the measurement
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0:
        raise SystemExit(f"regner train failed:\n{stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    threads = next((line.split("auto: ")[1].split(" CPU")[0] for line in stderr.splitlines()
                    if "num_threads=auto:" in line), "—")
    return {"load": load, "wall_s": time.perf_counter() - started, "train_s": metrics["train"]["train_time_s"],
            "tokens_per_s": metrics["train"]["tokens_per_s"], "dev_f1": metrics["dev"]["f1"], "threads": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--all-cores-epochs", type=int, default=0, help="also run torch's all-cores default, busy, "
                        "for this many epochs (0: skip)")
    parser.add_argument("--out", help="markdown result (a .json beside it)")
    parser.add_argument("--rewrite", metavar="JSON", help="only rewrite the markdown of an earlier result (its .json)")
    args = parser.parse_args(argv)
    if args.rewrite:
        saved = json.loads(Path(args.rewrite).read_text())
        text = markdown(saved["rows"], saved["ratios"], saved.get("date"))
        Path(args.rewrite).with_suffix(".md").write_text(text)
        print(text)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no job is left running
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for pair in range(1, args.pairs + 1):
            for arm in ("idle", "busy"):
                if arm == "idle":
                    settle()  # the machine is idle (no other job left over)
                competitor = spawn([sys.executable, "-c", BUSY]) if arm == "busy" else None
                try:
                    time.sleep(5 if competitor else 0)  # the other job is running when this one starts
                    rows.append({"pair": pair, "arm": arm, "num_threads": "auto",
                                 **train(root / f"{pair}-{arm}", [])})
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                print(rows[-1], file=sys.stderr, flush=True)
        if args.all_cores_epochs:
            competitor = spawn([sys.executable, "-c", BUSY])
            try:
                time.sleep(5)
                epochs = f"trainer.max_epochs={args.all_cores_epochs}"
                for threads in ("null", "auto"):
                    rows.append({"pair": "contrast", "arm": f"busy, {args.all_cores_epochs} epoch(s)",
                                 "num_threads": threads,
                                 **train(root / f"contrast-{threads}", [epochs, f"trainer.num_threads={threads}"])})
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                competitor.kill()
                competitor.wait()
    ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(rows[0::2], rows[1::2]) if a["pair"] == b["pair"] != "contrast"]
    text = markdown(rows, ratios)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps({"date": datetime.date.today().isoformat(), "rows": rows, "ratios": ratios}, indent=2) + "\n")
    return 0


def markdown(rows: list[dict], ratios: list[float], date: str | None = None) -> str:
    lines = [f"# The default run on a busy machine ({date or datetime.date.today().isoformat()})", "",
             f"{machine_description()}; `scripts/bench_busy_threads.py`: the README's first command (`regner train`, "
             "demo data, tiny BERT), interleaved idle / busy pairs; busy = one competing single-threaded Python busy "
             "loop, started 5 s before.", "",
             "| pair | machine | load average at start | trainer.num_threads | threads used | wall s | training s | "
             "tokens/s | dev F1 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['arm']} | {r['load']:.2f} | {r['num_threads']} | {r['threads']} | "
                     f"{r['wall_s']:.1f} | "
                     f"{r['train_s']:.1f} | {r['tokens_per_s']:.0f} | {r['dev_f1']:.4f} |")
    if ratios:
        lines += ["", f"Busy / idle wall time per pair: {', '.join(f'{x:.2f}×' for x in ratios)} (mean "
                  f"{statistics.fmean(ratios):.2f}×; the target is ≤ 1.5×)."]
    contrast = [r for r in rows if r["pair"] == "contrast"]
    if len(contrast) == 2:
        slow, fast = contrast
        lines.append(f"Busy, same epochs: torch's all-cores default took {slow['wall_s']:.1f} s in all and "
                     f"{slow['train_s']:.1f} s of training, auto {fast['wall_s']:.1f} s and {fast['train_s']:.1f} s "
                     f"({slow['wall_s'] / fast['wall_s']:.1f}× slower in all, {slow['train_s'] / fast['train_s']:.1f}× "
                     "in training; start-up and evaluation are most of a one-epoch run).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
