"""Encoder + GlobalPointer head, with Hugging Face–style save/load.

Regularizers perturb the *embedding output*: the word-embedding lookup that is fed to the encoder as
``inputs_embeds`` (position and segment embeddings and LayerNorm are added inside the encoder).
:meth:`SpanModel.embed` and ``SpanModel(..., inputs_embeds=e)`` expose exactly that seam.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from regner.model.blockwise import SpanField
from regner.model.head import build_head

HEAD_WEIGHTS = "globalpointer_head.safetensors"
MODEL_CONFIG = "regner_config.json"


def _quiet_transformers() -> None:
    """No weight-loading/saving progress bars: one per checkpoint would drown the training bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class SpanModel(nn.Module):
    def __init__(self, encoder: nn.Module, labels: list[str], head: str = "globalpointer",
                 head_size: int = 64, rope: bool = True):
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        self.head_config = {"type": head, "head_size": head_size, "rope": rope}
        self.head = build_head(head, encoder.config.hidden_size, len(labels), head_size, rope)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings of ``input_ids``: the tensor regularizers perturb."""
        return self.encoder.get_input_embeddings()(input_ids)

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None, field: bool = False) -> torch.Tensor | SpanField:
        """Raw fp32 span scores [batch, types, len, len]; ``field=True``: the same scores as a
        :class:`SpanField`, which the blockwise loss, KL and decoder use without materialising them."""
        if inputs_embeds is not None:
            input_ids = None
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              inputs_embeds=inputs_embeds).last_hidden_state
        return self.head.field(hidden) if field else self.head(hidden)

    def save_pretrained(self, directory: str | Path, tokenizer=None, extra: dict[str, Any] | None = None) -> None:
        """Encoder (``config.json`` + weights, loadable by ``AutoModel``), tokenizer, head weights and
        the label map, all in one directory."""
        from safetensors.torch import save_file

        _quiet_transformers()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        head_state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head_state, str(directory / HEAD_WEIGHTS))
        config = {"labels": self.labels, "head": self.head_config, **(extra or {})}
        (directory / MODEL_CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu"):
        """Returns (model, tokenizer, config dict) saved by :meth:`save_pretrained`."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        directory = Path(directory)
        if not (directory / MODEL_CONFIG).exists():
            raise FileNotFoundError(f"{directory}: not a regner checkpoint (no {MODEL_CONFIG})")
        config = json.loads((directory / MODEL_CONFIG).read_text(encoding="utf-8"))
        encoder = AutoModel.from_pretrained(str(directory), add_pooling_layer=False)
        head = config["head"]
        model = cls(encoder, config["labels"], head["type"], head["head_size"], head["rope"])
        model.head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS), device=str(map_location)))
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return model, tokenizer, config
