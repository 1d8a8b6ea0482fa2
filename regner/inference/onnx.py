"""Running an exported model: :class:`OnnxSpanModel` stands in for the PyTorch ``SpanModel``
with scores from onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ONNX_FILE = "model.onnx"


class OnnxSpanModel:
    """Stands in for :class:`~regner.model.span_model.SpanModel` at inference: same call, scores from onnxruntime."""

    def __init__(self, directory: Path, labels: list[str], threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: no third-party warnings in a default run
        self.session = ort.InferenceSession(str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.labels = list(labels)

    def eval(self) -> OnnxSpanModel:
        return self

    def to(self, device: Any) -> OnnxSpanModel:
        return self

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.session.run(["scores"], {"input_ids": input_ids.cpu().numpy().astype("int64"),
                                              "attention_mask": attention_mask.cpu().numpy().astype("int64")})[0]
        return torch.from_numpy(scores)
