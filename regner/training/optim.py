"""The optimizer and its schedule: AdamW over named parameter groups, with layer-wise lr decay.

Groups: the head at ``head_lr``; the encoder at ``lr``, or with ``layer_lr_decay`` d < 1 at
lr · d^(L − l) for encoder layer l (l = 1 … L, the top layer at ``lr``), the embeddings (l = 0) the
lowest at lr · d^L, and encoder parameters outside the layer stack (a pooler, a final norm) with the top
layer; no weight decay on biases and norms. Every group carries a ``name`` and is logged once.
"""

from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger(__name__)

LAYER = re.compile(r"\.layers?\.(\d+)\.")  # BERT/RoBERTa/ELECTRA "encoder.layer.N.", others "layers.N."


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name


def encoder_depth(model: torch.nn.Module) -> int:
    """L, the number of layers of the model's encoder (from its config, else from parameter names)."""
    config = getattr(getattr(model, "encoder", None), "config", None)
    depth = getattr(config, "num_hidden_layers", None)
    if depth:
        return int(depth)
    found = [int(m.group(1)) for n, _ in model.named_parameters() if (m := LAYER.search(n))]
    return max(found) + 1 if found else 0


def layer_of(name: str, depth: int) -> tuple[str, int]:
    """(group name, l) of an encoder parameter: embeddings l = 0, layer N l = N + 1, others the top."""
    if "embeddings" in name:
        return "embeddings", 0
    match = LAYER.search(name)
    if match:
        return f"layer {int(match.group(1)) + 1}", int(match.group(1)) + 1
    return "encoder (other)", depth


def parameter_groups(model: torch.nn.Module, lr: float, head_lr: float | None, weight_decay: float,
                     layer_lr_decay: float = 1.0) -> list[dict]:
    """Named AdamW groups (see the module docstring); parameters not under ``head.`` are the encoder's."""
    head_lr = head_lr or lr
    depth = encoder_depth(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("head."):
            group, rate = "head", head_lr
        elif layer_lr_decay == 1.0:
            group, rate = "encoder", lr
        else:
            group, level = layer_of(name, depth)
            rate = lr * layer_lr_decay ** (depth - level)
        plain = no_weight_decay(name, param)
        key = (group, plain)
        if key not in groups:
            groups[key] = {"name": group + (" (no decay)" if plain else ""), "params": [], "lr": rate,
                           "weight_decay": 0.0 if plain else weight_decay}
        groups[key]["params"].append(param)
    if layer_lr_decay != 1.0 and not any(g.startswith("layer ") for g, _ in groups):
        log.warning("trainer.layer_lr_decay=%s: no encoder parameter name has a layer index (.layer.N.), so every "
                    "encoder parameter keeps the top rate", layer_lr_decay)
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW with the groups of :func:`parameter_groups`; logs them once."""
    groups = parameter_groups(model, cfg.lr, cfg.get("head_lr"), cfg.weight_decay,
                              float(cfg.get("layer_lr_decay") or 1.0))
    log.info("parameter groups: %s", "; ".join(
        f"{g['name']} lr {g['lr']:.3g} ({sum(p.numel() for p in g['params']):,} params)" for g in groups))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup to the configured rates over ``warmup_ratio`` of the steps, then linear decay to 0."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
