#!/usr/bin/env python
"""How R-Drop's KL weighs against the CE as windows get longer, for each KL reduction.

    python scripts/measure_kl_scale.py [--data msra] [--lengths 26,98,385]

Builds the default tiny encoder (random init, dropout 0.1) on the dataset's training texts, and for
batches of 16 windows of each length (texts cut or concatenated to that many characters) runs
R-Drop's doubled forward and prints CE, the GlobalPointer KL with `sum` and `mean` reduction, and
their ratios. With `sum` the ratio grows with about the square of the length; with `mean` it does not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regner.data.batching import collate  # noqa: E402
from regner.data.loading import load_splits  # noqa: E402
from regner.inference.evaluation import encode_split  # noqa: E402
from regner.model.encoder import build_encoder  # noqa: E402
from regner.model.head import span_mask  # noqa: E402
from regner.model.loss import multilabel_crossentropy  # noqa: E402
from regner.model.span_model import SpanModel  # noqa: E402
from regner.regularizers.kl import globalpointer_kl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="msra")
    parser.add_argument("--lengths", default="26,98,385")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("REGNER_DATA", str(REPO.parent / "shared" / "data"))
    from hydra import compose, initialize_config_dir

    from regner.config.paths import config_dir

    lengths = [int(x) for x in args.lengths.split(",")]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={args.data}", "data.max_train_samples=2000",
                                           f"data.max_length={max(lengths) + 2}", "seed=1"])
    splits = load_splits(cfg.data, REPO)
    torch.manual_seed(1)
    tokenizer, encoder = build_encoder(cfg.encoder, (ex.text for ex in splits.train))
    label2id = {label: i for i, label in enumerate(splits.labels)}
    model = SpanModel(encoder, splits.labels, cfg.head.type, cfg.head.head_size, cfg.head.rope)
    model.train()
    text = "".join(ex.text for ex in splits.train)  # a stream of real text, cut into windows
    print(f"{args.data}, default tiny encoder at init, dropout {cfg.encoder.dropout}, batch {args.batch}\n")
    print("| window (chars) | CE | KL (sum) | KL (mean) | KL/CE (sum) | KL/CE (mean) |\n|---|---|---|---|---|---|")
    for length in lengths:
        from regner.data.types import Example

        examples = [Example(text[i * length:(i + 1) * length]) for i in range(args.batch)]
        split = encode_split("probe", examples, tokenizer, label2id, OmegaConf.merge(cfg.data, {"max_length": length + 2}))
        batch = collate(split.windows, tokenizer.pad_token_id or 0)
        torch.manual_seed(2)
        with torch.no_grad():
            ids = torch.cat((batch["input_ids"], batch["input_ids"]))
            scores = model(ids, torch.cat((batch["attention_mask"], batch["attention_mask"])))
        first, second = scores.chunk(2)
        mask = span_mask(batch["token_mask"])
        ce = float(multilabel_crossentropy(first, batch["spans"], mask))
        kl_sum, kl_mean = (float(globalpointer_kl(first, second, mask, r)) for r in ("sum", "mean"))
        print(f"| {length} | {ce:.4g} | {kl_sum:.4g} | {kl_mean:.4g} | {kl_sum / ce:.4g} | {kl_mean / ce:.4g} |")


if __name__ == "__main__":
    main()
