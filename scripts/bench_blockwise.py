#!/usr/bin/env python
"""The GlobalPointer head's loss memory and time, dense vs blockwise (regner/model/blockwise.py).

    python scripts/bench_blockwise.py --shapes 32,10,512 8,10,2048 [--repeats 3] [--out FILE.md] [--json FILE]

For each (B, T, L): queries and keys [B, T, L, 64] (fp32 leaves, as the head hands them over) and the two
cases of issue #35 — plain CE, and R-Drop's CE of both halves of a doubled batch + the per-logit KL between
the halves (blockwise: the fused blockwise_rdrop) — each as forward + backward down to q and k. Peak: the largest total of tensors alive at once
that the step created (regner.training.profiling.TensorMemoryTracker: scores, the loss's copies, the score
gradient, the q/k gradients), against one fp32 [B, T, L, L] score tensor. Time: the median of ``--repeats``
steps, dense first, then blockwise, in one process. The
dense path is skipped where about four copies of its scores would pass ``--dense-limit-gib``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regner.model.blockwise import (  # noqa: E402
    SpanField,
    block_rows,
    blockwise_crossentropy,
    blockwise_rdrop,
)
from regner.model.head import span_mask  # noqa: E402
from regner.model.loss import multilabel_crossentropy  # noqa: E402
from regner.regularizers.kl import globalpointer_kl  # noqa: E402
from regner.training.profiling import TensorMemoryTracker  # noqa: E402

HEAD = 64


def positives(batch: int, types: int, length: int) -> torch.Tensor:
    """Two entities per sentence, as the loss benchmark of 2026-11-25 used."""
    g = torch.Generator().manual_seed(0)
    return torch.tensor([(b, int(torch.randint(0, types, (1,), generator=g)), s, s + 2)
                         for b in range(batch) for s in (3, min(40, length - 3))])


def cases(batch: int, types: int, length: int, block: int | None, device: torch.device):
    """{case: {path: step(q, k)}}: each step returns the loss to backpropagate."""
    tokens = torch.ones(batch, length, dtype=torch.bool, device=device)
    rows = positives(batch, types, length).to(device)
    doubled = torch.cat((rows, rows + torch.tensor([batch, 0, 0, 0], device=device)))
    mask, mask2 = span_mask(tokens), span_mask(torch.cat((tokens, tokens)))

    def dense_scores(q, k):
        return torch.matmul(q, k.transpose(-1, -2))

    return {
        "CE": (1, {
            "dense": lambda q, k: multilabel_crossentropy(dense_scores(q, k), rows, mask),
            "blockwise": lambda q, k: blockwise_crossentropy(SpanField(q, k), rows, tokens, block)}),
        "R-Drop: CE of both halves + KL": (2, {
            "dense": lambda q, k: (lambda s: multilabel_crossentropy(s, doubled, mask2)
                                   + globalpointer_kl(s[:batch], s[batch:], mask))(dense_scores(q, k)),
            "blockwise": lambda q, k: sum(blockwise_rdrop(SpanField(q, k), doubled, tokens, block=block))}),
    }


def measure(step, copies: int, batch: int, types: int, length: int, repeats: int,
            device: torch.device) -> tuple[int, list[float]]:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(copies * batch, types, length, HEAD, generator=g).div_(HEAD ** 0.5).to(device).requires_grad_()
    k = torch.randn(copies * batch, types, length, HEAD, generator=g).to(device).requires_grad_()
    with TensorMemoryTracker() as tracker:
        step(q, k).backward()
    times = []
    for _ in range(repeats):
        q.grad = k.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step(q, k).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return tracker.peak_bytes, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["32,10,512", "8,10,2048"], metavar="B,T,L")
    parser.add_argument("--block", type=int, default=None, help="start rows per block (default: automatic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dense-limit-gib", type=float, default=6.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = []
    for shape in args.shapes:
        batch, types, length = (int(x) for x in shape.split(","))
        one = batch * types * length * length * 4
        for name, (copies, paths) in cases(batch, types, length, args.block, device).items():
            row = {"shape": shape, "case": name, "one_copy_mib": one / 2**20,
                   "qk_grad_mib": 2 * copies * batch * types * length * HEAD * 4 / 2**20,
                   "block_rows": block_rows(torch.Size((copies * batch, types, length, length)), args.block)}
            timings: dict[str, list[float]] = {}
            for path, step in paths.items():
                if path == "dense" and copies * one * 4 > args.dense_limit_gib * 2**30:
                    continue
                peak, times = measure(step, copies, batch, types, length, args.repeats, device)
                row[f"{path}_peak_mib"] = peak / 2**20
                timings[path] = times
                row[f"{path}_s"] = statistics.median(times)
                print(f"{shape} {name} {path}: peak {peak / 2**20:,.0f} MiB, {row[f'{path}_s']:.2f} s", file=sys.stderr,
                      flush=True)
            results.append(row)
    lines = [f"GlobalPointer loss memory and time, dense vs blockwise: forward + backward from q, k [B, T, L, {HEAD}] "
             f"(fp32); peak = tensors the step created, alive at once, less the gradients of q and k themselves "
             f"(which every path allocates: the 'q/k grads' column), i.e. scores + loss + KL + their backward; "
             f"time = median of {args.repeats} steps; "
             f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'}, "
             f"torch {torch.__version__}, {platform.machine()}, "
             f"{time.strftime('%Y-%m-%d')}. `scripts/bench_blockwise.py`.", "",
             "| B, T, L | case | one fp32 score copy | q/k grads | dense peak | blockwise peak (rows/block) | dense s | "
             "blockwise s | time × |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = {path: r[f"{path}_peak_mib"] - r["qk_grad_mib"] for path in ("dense", "blockwise") if f"{path}_s" in r}
        r.update({f"{path}_head_mib": value for path, value in head.items()})
        dense = f"{head['dense']:,.0f} MiB ({head['dense'] / r['one_copy_mib']:.2f}×)" if "dense" in head else "— (not run)"
        ratio = f"{r['blockwise_s'] / r['dense_s']:.2f}×" if "dense_s" in r else "—"
        dense_s = f"{r['dense_s']:.2f}" if "dense_s" in r else "—"
        lines.append(f"| {r['shape']} | {r['case']} | {r['one_copy_mib']:,.0f} MiB | {r['qk_grad_mib']:,.0f} MiB | {dense} | "
                     f"{head['blockwise']:,.0f} MiB ({head['blockwise'] / r['one_copy_mib']:.2f}×; "
                     f"{r['block_rows']}) | {dense_s} | {r['blockwise_s']:.2f} | "
                     f"{ratio} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
