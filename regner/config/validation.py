"""One place where a resolved config is checked before any data is read.

Each rule names a dotted key, what it accepts, and why; :func:`validate_config` applies every rule
that concerns a key present in the config and raises :class:`~regner.errors.ConfigError` for the
first violation, so ``trainer.batch_size=0`` or ``alpha=-1`` stops at once with the key, the bad
value and the allowed range, instead of a traceback deep inside training (or worse, a run that
quietly maximises its KL).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from regner.errors import ConfigError

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    expected: str
    ok: Callable[[Any], bool]
    optional: bool = False  # null allowed (means "off" / "derive it")

    def check(self, value: Any) -> None:
        if value is None and self.optional:
            return
        try:
            good = self.ok(value)
        except (TypeError, ValueError, LookupError):
            good = False
        if not good:
            raise ConfigError(self.key, value, self.expected + (" or null" if self.optional else ""))


def integer(key: str, low: int, high: int | None = None, optional: bool = False) -> Rule:
    span = f"an integer ≥ {low}" if high is None else f"an integer in [{low}, {high}]"
    return Rule(key, span, lambda v: _is_int(v) and v >= low and (high is None or v <= high), optional)


def number(key: str, low: float, high: float | None = None, low_open: bool = False, high_open: bool = False,
           optional: bool = False) -> Rule:
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    span = ("a finite number" if high is None and low == float("-inf") else
            f"a number > {low:g} (finite)" if high is None and low_open else f"a number ≥ {low:g} (finite)"
            if high is None else f"a number in {left}{low:g}, {high:g}{right}")

    def ok(v: Any) -> bool:
        if not _is_number(v) or not math.isfinite(v):  # NaN and ±inf never mean a strength, a rate or a size
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    return Rule(key, span, ok, optional)


def choice(key: str, *options: Any) -> Rule:
    return Rule(key, "one of " + ", ".join(str(o) for o in options), lambda v: v in options)


def boolean(key: str) -> Rule:
    return Rule(key, "true or false", lambda v: isinstance(v, bool))


def _codec(name: Any) -> bool:
    codecs.lookup(name)
    return True


def optimization_rules(section: str) -> list[Rule]:
    """The keys ``trainer`` and ``pretrain`` share: how the optimizer steps and where it runs."""
    return [
        number(f"{section}.lr", 0.0, low_open=True),
        number(f"{section}.weight_decay", 0.0),
        number(f"{section}.warmup_ratio", 0.0, 1.0, high_open=True),
        number(f"{section}.max_grad_norm", 0.0),
        choice(f"{section}.precision", "fp32", "bf16", "fp16"),
        Rule(f"{section}.device", "auto, cpu, mps, cuda or cuda:N",
             lambda v: isinstance(v, str) and bool(DEVICE.match(v))),
        Rule(f"{section}.num_threads", "auto or an integer ≥ 1",
             lambda v: v == "auto" or (_is_int(v) and v >= 1), optional=True),
        integer(f"{section}.eval_batch_size", 1),
        integer(f"{section}.save_every_steps", 0),
        boolean(f"{section}.progress"),
    ]


RULES: list[Rule] = [
    integer("seed", 0, 2**32 - 1),  # numpy and CUDA seed with 32 bits
    number("alpha", 0.0),
    # trainer
    integer("trainer.max_epochs", 1),
    integer("trainer.batch_size", 1),
    *optimization_rules("trainer"),
    number("trainer.head_lr", 0.0, low_open=True, optional=True),
    number("trainer.adam_beta1", 0.0, 1.0, high_open=True),
    number("trainer.adam_beta2", 0.0, 1.0, high_open=True),
    number("trainer.adam_epsilon", 0.0, low_open=True),
    integer("trainer.patience", 0),
    number("trainer.patience_min_f1", 0.0, 1.0),
    integer("trainer.num_workers", 0),
    integer("trainer.bucket_batches", 1),
    integer("trainer.log_every", 0),
    integer("trainer.check_every", 1),
    boolean("trainer.compile"),
    number("trainer.layer_lr_decay", 0.0, 1.0, low_open=True),
    number("trainer.ema.decay", 0.0, 1.0, low_open=True, high_open=True, optional=True),
    Rule("trainer.loggers", "a list of tensorboard, mlflow (or [])",
         lambda v: isinstance(v, (list, ListConfig)) and all(x in ("tensorboard", "mlflow") for x in v), optional=True),
    # data
    integer("data.max_length", 8),
    integer("data.window_overlap", 0),
    integer("data.max_train_samples", 1, optional=True),
    integer("data.max_eval_samples", 1, optional=True),
    number("data.dev_fraction", 0.0, 1.0, low_open=True, high_open=True),
    Rule("data.encoding", "a Python codec name such as utf-8, utf-8-sig, gb18030, big5", _codec),
    Rule("data.labels", "a list of entity type names", lambda v: isinstance(v, list) and all(isinstance(x, str) and x
                                                                                            for x in v), optional=True),
    integer("data.columns.token", -99, optional=True),
    Rule("data.unlabeled", "a file or directory path (or null)", lambda v: isinstance(v, str) and bool(v), optional=True),
    choice("data.unlabeled_format", "text", "cluener", "jsonl", "conll", "hf"),
    boolean("data.unlabeled_from_train"),
    boolean("data.unlabeled_dedup"),
    boolean("trainer.deterministic"),
    Rule("head.blockwise", "true, false or auto", lambda v: isinstance(v, bool) or v == "auto"),
    integer("head.block_rows", 1, optional=True),
    integer("unlabeled.ratio", 0, 64),
    integer("unlabeled.batch_size", 1, optional=True),
    number("unlabeled.weight", 0.0),
    number("unlabeled.rampup_epochs", 0.0),
    number("unlabeled.threshold", 0.5, 1.0, low_open=True, high_open=True, optional=True),
    integer("data.columns.tag", -99, optional=True),
    # encoder (the tiny random BERT's sizes; a pretrained encoder brings its own)
    integer("encoder.hidden_size", 1),
    integer("encoder.num_layers", 1),
    integer("encoder.num_heads", 1),
    integer("encoder.intermediate_size", 1),
    integer("encoder.max_position_embeddings", 8),
    number("encoder.dropout", 0.0, 1.0, high_open=True, optional=True),
    number("encoder.lr", 0.0, low_open=True),
    boolean("encoder.random_init"),
    # head
    integer("head.head_size", 2),
    number("head.threshold", float("-inf")),
    boolean("head.rope"),
    choice("head.type", "globalpointer", "efficient"),
    # kl
    choice("kl.name", "globalpointer", "softmax", "mse"),
    choice("kl.reduction", "mean", "sum"),
    # regularizer knobs, where the chosen regularizer has them
    number("regularizer.alpha", 0.0),
    number("regularizer.weight", 0.0),
    number("regularizer.epsilon", 0.0),
    number("regularizer.sigma", 0.0),
    number("regularizer.xi", 0.0, low_open=True),
    integer("regularizer.power_iterations", 1),
    boolean("regularizer.relative"),
    boolean("regularizer.consistency"),
    number("regularizer.step_size", 0.0, low_open=True),
    integer("regularizer.steps", 1),
    number("regularizer.gamma", 0.0),
    number("regularizer.decay", 0.0, 1.0, low_open=True, high_open=True),
    choice("regularizer.evaluate", "teacher", "student"),
    boolean("regularizer.warmup"),
    integer("regularizer.start_epoch", 1),
    integer("regularizer.rampup_steps", 0),
    # pretrain (regner pretrain)
    Rule("pretrain.corpus", "a list of text file paths", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    Rule("pretrain.from_data", "a list of data config names", lambda v: isinstance(v, list)
         and all(isinstance(x, str) for x in v)),
    Rule("pretrain.splits", "a non-empty list drawn from train, dev, test", lambda v: isinstance(v, list) and bool(v)
         and all(x in ("train", "dev", "test") for x in v)),
    Rule("pretrain.encoding", "a Python codec name such as utf-8, gb18030", _codec),
    number("pretrain.held_out_fraction", 0.0, 0.5, low_open=True),
    integer("pretrain.held_out_max", 1),
    integer("pretrain.max_length", 8),
    number("pretrain.mlm_probability", 0.0, 1.0, low_open=True, high_open=True),
    *optimization_rules("pretrain"),
    integer("pretrain.batch_size", 1),
    integer("pretrain.epochs", 1),
    integer("pretrain.max_steps", 1, optional=True),
    integer("pretrain.eval_every", 0),
]


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key, resolving interpolations; a failing interpolation is an error."""
    node: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    if not isinstance(node, DictConfig) or parts[-1] not in node:
        return False, None
    try:
        value = node[parts[-1]]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        return True, value
    except OmegaConfBaseException as err:
        raise ConfigError(key, OmegaConf.to_container(node, resolve=False).get(parts[-1]),
                          f"a value that resolves ({type(err).__name__}: {str(err).splitlines()[0]})") from None


def validate_config(cfg: DictConfig) -> None:
    """Check every rule, then the relations between keys; raise ConfigError on the first problem.
    The ``regularizer.*`` rules apply to each part of a stack too (``regularizer.parts.<part>.*``)."""
    parts = cfg.regularizer.get("parts") if isinstance(cfg.get("regularizer"), DictConfig) else None
    prefixes = [f"regularizer.parts.{name}." for name in parts] if isinstance(parts, DictConfig) else []
    for rule in RULES:
        keys = [rule.key] + ([p + rule.key.split(".", 1)[1] for p in prefixes]
                             if rule.key.startswith("regularizer.") else [])
        for key in keys:
            present, value = _lookup(cfg, key)
            if present:
                Rule(key, rule.expected, rule.ok, rule.optional).check(value)
    _check_relations(cfg)
    _check_regularizer(cfg)
    _check_loggers(cfg)


def _check_loggers(cfg: DictConfig) -> None:
    """A tracker that is asked for must be installed: said before any data is read."""
    trainer = cfg.get("trainer")
    loggers = list(trainer.get("loggers") or []) if isinstance(trainer, DictConfig) else []
    for name, module, extra in (("mlflow", "mlflow", "track"), ("tensorboard", "tensorboard", "")):
        if name in loggers:
            import importlib.util

            if importlib.util.find_spec(module) is None:
                install = f"pip install 'regner[{extra}]'" if extra else f"pip install {module}"
                raise ConfigError("trainer.loggers", loggers, f"trackers that are installed: {name} needs "
                                  f"`{install}` (or drop it: trainer.loggers=[])")


def _check_relations(cfg: DictConfig) -> None:
    data, encoder = cfg.get("data"), cfg.get("encoder")
    if encoder is not None and cfg.get("pretrain") is not None:
        positions, source = _position_limit(encoder)
        length = cfg.pretrain.get("max_length")
        if positions is not None and length is not None and length > positions:
            raise ConfigError("pretrain.max_length", length, f"an integer ≤ {positions}, the encoder's position "
                              f"embeddings ({source})")
    if data is None or encoder is None:
        return
    max_length, overlap = data.get("max_length"), data.get("window_overlap")
    if max_length is not None and overlap is not None and overlap > max_length - 3:
        raise ConfigError("data.window_overlap", overlap,
                          f"an integer ≤ data.max_length − 3 = {max_length - 3} (a window holds [CLS], [SEP] and at "
                          "least one new token)")
    positions, source = _position_limit(encoder)
    if max_length is not None and positions is not None and max_length > positions:
        raise ConfigError("data.max_length", max_length,
                          f"an integer ≤ {positions}, the encoder's position embeddings ({source})",
                          "Longer texts are split into overlapping windows anyway; lower data.max_length")
    if not encoder.get("pretrained"):
        hidden, heads = encoder.get("hidden_size"), encoder.get("num_heads")
        if hidden and heads and hidden % heads:
            raise ConfigError("encoder.num_heads", heads, f"a divisor of encoder.hidden_size={hidden}")


def _position_limit(encoder: DictConfig) -> tuple[int | None, str]:
    """The encoder's max_position_embeddings where it is known without loading weights."""
    pretrained = encoder.get("pretrained")
    if not pretrained:
        return encoder.get("max_position_embeddings"), "encoder.max_position_embeddings"
    config = Path(str(pretrained)).expanduser() / "config.json"
    if config.is_file():
        try:
            return int(json.loads(config.read_text(encoding="utf-8"))["max_position_embeddings"]), str(config)
        except (ValueError, KeyError, TypeError):
            return None, ""
    return None, ""  # a hub id: checked once its config is loaded (regner.model.encoder.load_pretrained)


def _check_regularizer(cfg: DictConfig) -> None:
    """The regularizer's own constructor checks its enumerations (fgm.target, gp.mode, ...)."""
    if cfg.get("regularizer") is None:
        return
    from regner.regularizers import instantiate_regularizer

    try:
        regularizer = instantiate_regularizer(cfg.regularizer)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra wraps the constructor's ValueError
        cause = err.__cause__ or err
        raise ConfigError("regularizer", cfg.regularizer.get("name"), str(cause).splitlines()[0]) from None
    ema = ((cfg.get("trainer") or {}).get("ema") or {}).get("decay")
    if regularizer.name == "mean_teacher" and ema:
        raise ConfigError("trainer.ema.decay", ema, "null with regularizer=mean_teacher",
                          "The mean teacher is itself an EMA of the weights: set regularizer.decay instead")
    check_unlabeled(cfg, regularizer)


def check_unlabeled(cfg: DictConfig, regularizer) -> None:
    """``unlabeled.ratio`` > 0 needs unlabeled text and a regularizer with a label-free term."""
    ratio = (cfg.get("unlabeled") or {}).get("ratio") or 0
    if ratio and getattr(regularizer, "unlabeled_term", None) is None:
        raise ConfigError("unlabeled.ratio", ratio, f"0 with regularizer={regularizer.name}",
                          "Only a consistency regularizer uses unlabeled text: regularizer=rdrop, vat or mean_teacher")
    threshold = (cfg.get("unlabeled") or {}).get("threshold")
    kl = (cfg.get("kl") or {}).get("name")
    if ratio and threshold is not None and kl == "softmax":
        raise ConfigError("unlabeled.threshold", threshold, "null with kl=softmax",
                          "The threshold keeps span cells by their own probability σ(s), which only a per-logit "
                          "divergence has: use kl=globalpointer or kl=mse")
    data = cfg.get("data")
    if ratio and data is not None and not data.get("unlabeled") and not data.get("unlabeled_from_train"):
        raise ConfigError("unlabeled.ratio", ratio, "0 when there is no unlabeled text",
                          "Give data.unlabeled=FILE, or data.unlabeled_from_train=true with data.max_train_samples=N")
