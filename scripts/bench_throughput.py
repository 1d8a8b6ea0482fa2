#!/usr/bin/env python
"""Training-step throughput of every regularizer, measured side by side in one process.

    python scripts/bench_throughput.py                          # CPU-sized: tiny encoder, fp32
    python scripts/bench_throughput.py --encoder base --precision bf16 --batch-sizes 32,64,128,256

For each batch size it times `--steps` optimizer steps (after `--warmup`) of `none` and each
regularizer on the same random-token batches with CLUENER-like lengths (uniform 20–50 characters,
10 entity types), and prints tokens/s, peak memory and the cost ratio against `none` at that batch
size. On CUDA it also prints model FLOP utilisation: 6·N·tokens for the dense layers plus the
attention and GlobalPointer score matmuls, counted for the *data* tokens (so R-Drop's second pass
shows up as cost, not as useful work), over the device's dense bf16 peak.

    python scripts/bench_throughput.py --loss-memory 32,10,512   # batch, types, length

measures instead the peak tensor memory of the span-score loss alone (forward + backward of the
CE, and of the CE of two halves plus R-Drop's KL), on any device, by counting live tensor storages
(regner.training.profiling), next to the textbook dense formulation that regner used before, in copies of
one [B, T, L, L] fp32 score tensor.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regner.model.encoder import tiny_encoder  # noqa: E402
from regner.model.head import span_mask  # noqa: E402
from regner.model.span_model import SpanModel  # noqa: E402
from regner.regularizers.awp import AWP  # noqa: E402
from regner.regularizers.base import TrainingStep  # noqa: E402
from regner.regularizers.fgm import FGM  # noqa: E402
from regner.regularizers.gp import GradientPenalty  # noqa: E402
from regner.regularizers.kl import KL_VARIANTS, globalpointer_kl  # noqa: E402
from regner.regularizers.mean_teacher import MeanTeacher  # noqa: E402
from regner.regularizers.noise import GaussianNoise  # noqa: E402
from regner.regularizers.none import NoRegularizer  # noqa: E402
from regner.regularizers.pgd import PGD  # noqa: E402
from regner.regularizers.rdrop import RDrop  # noqa: E402
from regner.regularizers.stack import Stack  # noqa: E402
from regner.regularizers.vat import VAT  # noqa: E402
from regner.training.callbacks.ema import EMA  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}
# name → (regularizer factory, EMA of the weights on?, KL). AWP from the first step (its start_epoch would make
# the measured steps plain ones); "+ema" rows add the EMA update after every optimizer step; "/softmax" rows use
# the softmax KL instead of the per-logit one.
REGULARIZERS = {"none": (NoRegularizer, False, "globalpointer"), "rdrop": (RDrop, False, "globalpointer"),
                "fgm": (FGM, False, "globalpointer"), "gp": (GradientPenalty, False, "globalpointer"),
                "vat": (VAT, False, "globalpointer"), "noise": (GaussianNoise, False, "globalpointer"),
                "pgd": (PGD, False, "globalpointer"), "awp": (lambda: AWP(start_epoch=1), False, "globalpointer"),
                "rdrop_fgm": (lambda: Stack({"rdrop": RDrop(), "fgm": FGM()}), False, "globalpointer"),
                "none+ema": (NoRegularizer, True, "globalpointer"), "fgm+ema": (FGM, True, "globalpointer"),
                "rdrop/softmax": (RDrop, False, "softmax"), "vat/softmax": (VAT, False, "softmax")}
DEFAULT_ROWS = [name for name in REGULARIZERS if "/" not in name]
# Semi-supervised rows, "<method>+u<μ>": the labeled step of <method> plus μ unlabeled batches of the same size
# through its consistency term (mean_teacher: its EMA teacher, updated every step). `--regularizers semi` = these.
SEMI_RATIOS = (1, 3, 7)
SEMI_METHODS = {"rdrop": RDrop, "vat": VAT, "mean_teacher": MeanTeacher}
for _method, _factory in SEMI_METHODS.items():
    if _method == "mean_teacher":
        REGULARIZERS[_method] = (_factory, True, "globalpointer")
    for _ratio in SEMI_RATIOS:
        REGULARIZERS[f"{_method}+u{_ratio}"] = (_factory, _method == "mean_teacher", "globalpointer")
SEMI_ROWS = ["none", *(f"{m}{suffix}" for m in SEMI_METHODS for suffix in ("", *(f"+u{r}" for r in SEMI_RATIOS)))]


def unlabeled_ratio(name: str) -> int:
    """μ of a row name ("vat+u3" → 3; 0 for a supervised row)."""
    return int(name.rsplit("+u", 1)[1]) if "+u" in name else 0
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM
VOCAB, TYPES, HEAD_SIZE = 21128, 10, 64


def encoder_shape(name: str) -> tuple[dict, int]:
    """(sizes, vocabulary) of a named shape, or of a BERT directory's config.json."""
    if name in SIZES:
        return SIZES[name], VOCAB
    config_file = Path(name) / "config.json"
    if not config_file.exists():
        sys.exit(f"bench_throughput: --encoder {name}: neither {', '.join(sorted(SIZES))} nor a directory with a config.json")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    return ({"hidden_size": config["hidden_size"], "num_layers": config["num_hidden_layers"],
             "num_heads": config["num_attention_heads"], "intermediate_size": config["intermediate_size"]},
            int(config["vocab_size"]))


def make_batches(batch_size: int, count: int, device: torch.device, seed: int = 0,
                 vocab: int = VOCAB, lengths: tuple[int, int] = (20, 50)) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    lengths_range, batches = lengths, []
    for _ in range(count):
        lengths = torch.randint(lengths_range[0], lengths_range[1] + 1, (batch_size,), generator=g) + 2
        length = int(lengths.max())
        ids = torch.randint(5, vocab, (batch_size, length), generator=g)
        attention = (torch.arange(length)[None, :] < lengths[:, None]).long()
        token_mask = attention.bool().clone()
        token_mask[:, 0] = False
        token_mask[torch.arange(batch_size), lengths - 1] = False
        rows = []
        for b in range(batch_size):
            for _ in range(2):
                start = int(torch.randint(1, int(lengths[b]) - 4, (1,), generator=g))
                rows.append((b, int(torch.randint(0, TYPES, (1,), generator=g)), start, start + 2))
        batches.append({"input_ids": ids.to(device), "attention_mask": attention.to(device),
                        "token_mask": token_mask.to(device), "spans": torch.tensor(rows).to(device)})
    return batches


def model_flops_per_step(batch: dict[str, torch.Tensor], size: dict, params: int) -> float:
    """6·N per token for the dense layers, plus attention (QKᵀ, AV) and the span-score matmuls."""
    tokens = int(batch["attention_mask"].sum())
    b, length = batch["input_ids"].shape
    hidden, layers = size["hidden_size"], size["num_layers"]
    attention = 6 * 2 * 2 * b * length * length * hidden * layers
    spans = 6 * 2 * b * TYPES * length * length * HEAD_SIZE
    return 6 * params * tokens + attention + spans


class CPUPeakMemory:
    """Peak resident memory of this process above where it stood at :meth:`reset` (Linux: VmHWM,
    reset through /proc/self/clear_refs), the CPU stand-in for CUDA's max_memory_allocated. It
    counts what the allocator really holds, so run under MALLOC_MMAP_THRESHOLD_ (fixed by
    :func:`main`): otherwise glibc keeps freed tensors in its heap and one row's peak hides the next."""

    def __init__(self):
        self.available = Path("/proc/self/clear_refs").exists()
        self.base_kb = 0

    @staticmethod
    def _status_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset(self) -> None:
        if not self.available:
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.available = False
            return
        self.base_kb = self._status_kb("VmRSS")

    def peak_mb(self) -> float:
        return (self._status_kb("VmHWM") - self.base_kb) / 1024 if self.available else float("nan")


def bench(args) -> list[dict]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    size, vocab = encoder_shape(args.encoder)
    autocast = (functools.partial(torch.autocast, device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[args.precision])
                if args.precision != "fp32" else contextlib.nullcontext)
    rows = []
    for number, batch_size in enumerate(args.batch_sizes):
        batches = make_batches(batch_size, args.warmup + args.steps, device, vocab=vocab, lengths=args.lengths)
        baseline = None
        # The process's first run also pays for thread pools, the allocator and first-call dispatch (it made
        # `none` look ~20 % slow): one untimed run of the baseline first.
        for discard, name in [(True, args.regularizers[0])] * (number == 0) + [(False, n) for n in args.regularizers]:
            torch.manual_seed(0)
            cfg = OmegaConf.create({**size, "max_position_embeddings": max(512, args.lengths[1] + 2), "dropout": 0.1,
                                    "attn_implementation": "sdpa"})
            model = SpanModel(tiny_encoder(vocab, cfg), [f"T{i}" for i in range(TYPES)], "globalpointer", HEAD_SIZE).to(device)
            dense_params = sum(p.numel() for n, p in model.named_parameters() if "word_embeddings" not in n)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
            factory, with_ema, kl = REGULARIZERS[name]
            regularizer = factory()
            ema = EMA(getattr(regularizer, "decay", 0.999)) if with_ema else None
            if ema:
                ema.attach(model)
            ratio = unlabeled_ratio(name)
            # the unlabeled batches: the next μ batches of the same generator (other texts, no labels used)
            unlabeled = make_batches(batch_size, ratio * (args.warmup + args.steps), device, seed=1 + number,
                                     vocab=vocab, lengths=args.lengths) if ratio else []
            cpu_memory = CPUPeakMemory()
            tokens, flops, elapsed = 0, 0.0, 0.0
            for index, batch in enumerate(batches):
                if index == args.warmup:  # memory from the first timed step, once the optimizer has its state
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    else:
                        cpu_memory.reset()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                b, length = batch["input_ids"].shape
                teacher = ema.teacher if ema and isinstance(regularizer, MeanTeacher) else None
                step = TrainingStep(model=model, batch=batch, targets=batch["spans"],
                                    mask=span_mask(batch["token_mask"]), kl=KL_VARIANTS[kl], autocast=autocast,
                                    teacher=teacher, blockwise=args.blockwise)
                regularizer.step(step)
                for extra in unlabeled[index * ratio:(index + 1) * ratio]:
                    regularizer.unlabeled_step(TrainingStep(model=model, batch=extra, targets=None,
                                                            mask=span_mask(extra["token_mask"]), kl=KL_VARIANTS[kl],
                                                            autocast=autocast, teacher=teacher,
                                                            blockwise=args.blockwise))
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema:
                    ema.update()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if index >= args.warmup:
                    elapsed += time.perf_counter() - start
                    tokens += int(batch["attention_mask"].sum())
                    flops += model_flops_per_step(batch, size, dense_params)
            if discard:
                del model, optimizer
                continue
            row = {"batch": batch_size, "regularizer": name, "tokens_per_s": tokens / elapsed,
                   "ms_per_step": 1000 * elapsed / args.steps,
                   "peak_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                               else cpu_memory.peak_mb()),
                   "tflops": flops / elapsed / 1e12}
            baseline = baseline or row
            row["cost"] = baseline["tokens_per_s"] / row["tokens_per_s"]
            row["memory"] = row["peak_mb"] / baseline["peak_mb"] if baseline["peak_mb"] > 0 else float("nan")
            rows.append(row)
            print(f"  batch {batch_size:>4} {name:<10} {row['tokens_per_s']:>10.0f} tok/s  x{row['cost']:.2f}", file=sys.stderr)
            del model, optimizer
    return rows


def textbook_kl(s, t, mask):
    contribution = (torch.sigmoid(s) - torch.sigmoid(t)) * (s - t)
    return torch.where(mask, contribution, torch.zeros_like(contribution)).sum(dim=(-1, -2)).mean()


def loss_memory(batch: int, types: int, length: int, device: torch.device) -> str:
    from regner.data.batching import dense_targets
    from regner.model.loss import dense_crossentropy as textbook_crossentropy
    from regner.model.loss import multilabel_crossentropy
    from regner.training.profiling import TensorMemoryTracker

    g = torch.Generator().manual_seed(0)
    rows = torch.tensor([(b, int(torch.randint(0, types, (1,), generator=g)), s, s + 2)
                         for b in range(batch) for s in (3, 40)]).to(device)
    mask = span_mask(torch.ones(batch, length, dtype=torch.bool, device=device))
    dense = dense_targets(rows, batch, types, length, device)
    one = batch * types * length * length * 4
    results = []
    cases = {
        "CE": (lambda s: multilabel_crossentropy(s, rows, mask), lambda s: textbook_crossentropy(s, dense, mask), 1),
        "R-Drop: CE of both halves + KL": (
            lambda s: multilabel_crossentropy(s, torch.cat((rows, rows + torch.tensor([batch, 0, 0, 0], device=device))),
                                              torch.cat((mask, mask))) + globalpointer_kl(s[:batch], s[batch:], mask),
            lambda s: (textbook_crossentropy(s[:batch], dense, mask) + textbook_crossentropy(s[batch:], dense, mask)) / 2
            + textbook_kl(s[:batch], s[batch:], mask), 2),
    }
    for name, (regner_loss, textbook_loss, copies) in cases.items():
        peaks = []
        for loss in (textbook_loss, regner_loss):
            scores = torch.randn(copies * batch, types, length, length, device=device, requires_grad=True)
            with TensorMemoryTracker() as tracker:
                loss(scores).backward()
            peaks.append(tracker.peak_bytes)
            del scores
        results.append(f"| {name} | {peaks[0] / 2**20:,.0f} MiB ({peaks[0] / one:.1f}×) | "
                       f"{peaks[1] / 2**20:,.0f} MiB ({peaks[1] / one:.1f}×) | {peaks[0] / peaks[1]:.1f}× less |")
    header = (f"Peak tensor memory of the span loss, forward + backward (the score gradient included), batch {batch}, "
              f"{types} types, length {length}: one fp32 score tensor is {one / 2**20:,.0f} MiB; "
              f"{device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.\n\n"
              "| loss | textbook dense form | regner | |\n|---|---|---|---|\n")
    return header + "\n".join(results)


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def table(rows: list[dict], args) -> str:
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    peak = peak_tflops(device_name) if cuda else None
    size, vocab = encoder_shape(args.encoder)
    lines = [f"Encoder `{args.encoder}` ({size}, vocabulary {vocab:,}), random init, GlobalPointer {TYPES} types × head {HEAD_SIZE}, "
             f"{'blockwise head, ' if args.blockwise else ''}precision {args.precision}, {args.steps} timed steps after "
             f"{args.warmup} warm-up, lengths "
             f"{args.lengths[0]}–{args.lengths[1]} + specials; "
             f"{device_name}, torch {torch.__version__}, {platform.machine()}, {time.strftime('%Y-%m-%d')}.", "",
             ("Peak MB: CUDA's max allocated memory" if cuda else
              "Peak MB: the process's peak resident memory during the timed steps above its level before them, when "
              "the model, its gradients' buffers, the optimizer state and the batches already existed (VmHWM; glibc's "
              "mmap threshold fixed so freed tensors leave the process): what a step itself adds") +
             "; memory × is that peak relative to `none`.", "",
             "| batch | regularizer | tokens/s | ms/step | cost vs none | peak MB | memory vs none" +
             (" | MFU (data tokens) |" if peak else " |"),
             "|---|---|---|---|---|---|---|" + ("---|" if peak else "")]
    for r in rows:
        mfu = f" {100 * r['tflops'] / peak:.1f}% |" if peak else ""
        peak_mb = "—" if r["peak_mb"] != r["peak_mb"] else f"{r['peak_mb']:.0f}"
        memory = "—" if r["memory"] != r["memory"] else f"{r['memory']:.2f}×"
        lines.append(f"| {r['batch']} | {r['regularizer']} | {r['tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | "
                     f"{r['cost']:.2f}× | {peak_mb} | {memory} |{mfu}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="tiny", help=f"{', '.join(sorted(SIZES))}, or a BERT directory (its "
                        "config.json gives the sizes and vocabulary; its weights are not loaded: random init)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32])
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--lengths", metavar="MIN,MAX", type=lambda s: tuple(int(x) for x in s.split(",")),
                        default=(20, 50), help="characters per text, uniform in [MIN, MAX] (+ 2 specials); "
                                               "MIN = MAX for one fixed length (e.g. 126,126: windows of 128)")
    parser.add_argument("--blockwise", action="store_true",
                        help="the head's loss, KL and R-Drop pair block by block (head.blockwise=true)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--regularizers", type=lambda s: SEMI_ROWS if s == "semi" else s.split(","),
                        default=DEFAULT_ROWS,
                        help=f"comma list, none first (default: {','.join(DEFAULT_ROWS)}; also: "
                             f"{','.join(n for n in REGULARIZERS if n not in DEFAULT_ROWS)}); `semi`: none and the "
                             "semi-supervised rows (<method>+u<μ>: μ unlabeled batches per labeled one)")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--json", help="also write the rows (JSON list) to this file")
    parser.add_argument("--loss-memory", metavar="B,T,L", type=lambda s: [int(x) for x in s.split(",")],
                        help="measure the span loss's peak memory at batch B, T types, length L instead")
    args = parser.parse_args()
    if args.loss_memory:
        device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        text = loss_memory(*args.loss_memory, device)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        return
    if args.regularizers[0] != "none":
        parser.error("--regularizers must start with none (the baseline of the cost ratios)")
    unknown = [name for name in args.regularizers if name not in REGULARIZERS]
    if unknown:
        parser.error(f"--regularizers: unknown {unknown}; choose from {', '.join(REGULARIZERS)}")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        # A fixed mmap threshold (glibc otherwise raises it after each free) returns freed tensors to the system,
        # so the CPU peak-memory figure of one row does not hide inside the heap left by the previous one.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    rows = bench(args)
    text = table(rows, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
