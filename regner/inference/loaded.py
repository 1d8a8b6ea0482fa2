"""Use a saved model: predict entities for raw texts, or score it on a labelled dataset.

Both go through the same windows and merging as training, so long texts behave identically.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from regner.data.errors import DataError
from regner.data.types import Example
from regner.inference.checkpoint import checkpoint_dir, json_file, load_checked
from regner.model.span_model import MODEL_CONFIG, SpanModel

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: SpanModel
    tokenizer: Any
    config: dict[str, Any]
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", backend: str | None = None,
             threads: int | None = None) -> LoadedModel:
        """``backend``: torch (a checkpoint) or onnx (a ``regner export`` directory); None = what the
        directory holds. ``threads``: onnxruntime's intra-op threads (torch's are process-wide)."""
        directory = checkpoint_dir(path)
        config = json_file(directory, MODEL_CONFIG)
        backend = backend or config.get("backend", "torch")
        if backend == "onnx":
            from transformers import AutoTokenizer

            from regner.inference.onnx import ONNX_FILE, OnnxSpanModel

            if config.get("backend") != "onnx" and not (directory / ONNX_FILE).exists():
                raise DataError(f"backend=onnx needs an exported model: no {ONNX_FILE} here; run regner export "
                                f"ckpt={path} first", str(directory))
            return load_checked(directory, lambda: cls(OnnxSpanModel(directory, config["labels"], threads),
                                                       AutoTokenizer.from_pretrained(str(directory)), config,
                                                       torch.device("cpu")))
        if config.get("backend") == "onnx":
            raise DataError("this is an ONNX export (no PyTorch weights): use backend=onnx", str(directory))
        model, tokenizer, config = load_checked(directory, lambda: SpanModel.from_pretrained(directory))
        device = torch.device(device)
        return cls(model.to(device).eval(), tokenizer, config, device)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.model.labels)}

    def encode(self, name: str, examples: list[Example], max_length: int | None = None, overlap: int | None = None,
               progress: bool = True):
        from omegaconf import OmegaConf

        from regner.inference.evaluation import encode_split

        cfg = OmegaConf.create({"max_length": max_length or self.config.get("max_length", 512),
                                "window_overlap": overlap if overlap is not None else self.config.get("window_overlap", 64)})
        return encode_split(name, examples, self.tokenizer, self.label2id, cfg, progress=progress)

    def predict(self, texts: list[str], batch_size: int = 64, threshold: float | None = None,
                progress: bool = True) -> list[list[dict[str, Any]]]:
        """Entities per text: ``{start, end, type, text, score}`` (end exclusive, score = σ(logit));
        ``progress``: bars for tokenising and predicting (drawn only on a terminal)."""
        from regner.inference.evaluation import predict
        from regner.model.decoding import merge_window_predictions

        split = self.encode("input", [Example(text) for text in texts], progress=progress)
        threshold = self.config.get("threshold", 0.0) if threshold is None else threshold
        found = predict(self.model, split.windows, self.device, batch_size, threshold, progress=progress)
        merged = merge_window_predictions(split.windows, found, self.model.labels, len(texts))
        return [[{"start": e.start, "end": e.end, "type": e.type, "text": text[e.start : e.end],
                  "score": round(1 / (1 + math.exp(-score)), 6)}
                 for e, score in sorted(entities.items())]
                for text, entities in zip(texts, merged)]
