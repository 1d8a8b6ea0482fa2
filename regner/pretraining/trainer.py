"""Masked-language-model pretraining of a BERT encoder: from scratch (``encoder=tiny``, character
vocabulary built from the corpus) or continued from any BERT directory or hub id.

The objective is transformers' own: ``BertForMaskedLM`` (any ``AutoModelForMaskedLM`` when
continuing) and ``DataCollatorForLanguageModeling`` (15 % of tokens; 80/10/10 mask/random/keep).
The held-out slice is masked once with a fixed generator, so "before" and "after" are measured on
the same masked tokens. Everything a run writes follows ``regner train``: ``status.json`` first,
``history.jsonl`` per evaluation, resumable state under ``last/`` (bit-exact resume: data position,
optimizer, scheduler, every random state including the collator's), and ``metrics.json`` plus the
Hugging Face model directory (config, weights, tokenizer, at the run directory's top level) only
when training has finished.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from regner.pretraining.corpus import Corpus, build_corpus, pack
from regner.runs import progress
from regner.runs.interrupt import Interrupted, StopFlag
from regner.runs.io import HISTORY_FILE, METRICS_FILE, History, atomic_target, atomic_write_json, write_status
from regner.training.device import autocast_factory, process_max_rss_mb, resolve_device, seed_everything, set_threads
from regner.training.distributed import Distributed, env_rank
from regner.training.optim import linear_schedule
from regner.training.run import resume_command
from regner.training.state import load_optimization_state, optimization_state, rng_state, set_rng_state

log = logging.getLogger(__name__)

STATE = "last/pretrain_state.pt"
MODEL_FILES = ("config.json", "model.safetensors")


def build_model(encoder_cfg: DictConfig, corpus: Corpus, max_length: int):
    """(tokenizer, masked-LM model): continued from ``encoder.pretrained``, or a new BERT of the
    ``encoder`` sizes with a character vocabulary built from the training corpus."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

    from regner.model.encoder import EncoderError, build_char_vocab, quiet_transformers, tiny_tokenizer

    if encoder_cfg.get("pretrained"):
        source = str(encoder_cfg.pretrained)
        local = Path(source).expanduser()
        if local.exists() and not (local / "config.json").exists():
            raise EncoderError(f"{source}: a directory without config.json is not a transformers model")
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(source)
                model = AutoModelForMaskedLM.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise EncoderError(f"cannot load {source!r} for continued pretraining: {err}") from None
        log.info("continued pretraining from %s (%s, %.1fM parameters)", source, type(model).__name__,
                 sum(p.numel() for p in model.parameters()) / 1e6)
        return tokenizer, model
    vocab = build_char_vocab(corpus.train, encoder_cfg.get("vocab_min_freq", 1))
    tokenizer = tiny_tokenizer(vocab)
    config = BertConfig(vocab_size=len(vocab), hidden_size=encoder_cfg.hidden_size,
                        num_hidden_layers=encoder_cfg.num_layers, num_attention_heads=encoder_cfg.num_heads,
                        intermediate_size=encoder_cfg.intermediate_size,
                        max_position_embeddings=encoder_cfg.max_position_embeddings,
                        hidden_dropout_prob=encoder_cfg.dropout, attention_probs_dropout_prob=encoder_cfg.dropout,
                        pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config)
    log.info("new BERT from scratch: %d layers, hidden %d, %d heads, FFN %d, %d-token character vocabulary "
             "(%.1fM parameters)", config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
             config.intermediate_size, len(vocab), sum(p.numel() for p in model.parameters()) / 1e6)
    return tokenizer, model


def masked_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) at the masked positions only. For BERT the prediction head runs on those
    positions alone (its output layer over the vocabulary is a third of a small model's compute when
    run on every position); the loss is the same as ``BertForMaskedLM``'s. Other architectures: full forward."""
    labels = batch["labels"]
    masked = labels != -100
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    if hasattr(model, "bert") and hasattr(model, "cls"):
        hidden = model.bert(**inputs).last_hidden_state
        return model.cls(hidden[masked]), labels[masked]
    return model(**inputs).logits[masked], labels[masked]


def masked_batch(collator, windows: list[list[int]], tries: int = 100) -> dict[str, torch.Tensor]:
    """The collator's masking of ``windows``, drawn again (from its own generator, so still
    deterministic) when it happened to mask no token at all: a loss over no token is undefined."""
    for _ in range(tries):
        batch = collator([{"input_ids": w} for w in windows])
        if (batch["labels"] != -100).any():
            return batch
    return batch


@dataclass
class PretrainState:
    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # of ``epoch``
    tokens_seen: int = 0  # non-padding tokens fed to the model (all ranks)
    train_time: float = 0.0
    loss_sum: float = 0.0  # since the last evaluation
    loss_steps: int = 0


class MLMPretrainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, corpus: Corpus, resume: bool = False,
                 stop: StopFlag | None = None):
        self.cfg, self.pcfg, self.run_dir, self.corpus = cfg, cfg.pretrain, Path(run_dir), corpus
        self.resume, self.stop = resume, stop if stop is not None else StopFlag()

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from transformers import DataCollatorForLanguageModeling

        pcfg = self.pcfg
        set_threads(pcfg.get("num_threads"), "pretrain.num_threads")
        seed_everything(self.cfg.seed)
        self.device = resolve_device(pcfg.device)
        self.dist = Distributed.from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = self.dist.device
            torch.cuda.set_device(self.device)
        # ranks > 0 run in a scratch directory; their random state for resume lives in rank 0's run directory
        self.state_dir = Path(self.dist.broadcast_object(str(self.run_dir.resolve())))
        self.tokenizer, self.model = build_model(self.cfg.encoder, self.corpus, pcfg.max_length)
        positions = self.model.config.max_position_embeddings
        if pcfg.max_length > positions:
            from regner.errors import ConfigError

            raise ConfigError("pretrain.max_length", pcfg.max_length, f"an integer ≤ {positions}, the encoder's "
                              "position embeddings")
        self.model.to(self.device)
        self.dist.broadcast_parameters(self.model)
        self.show_progress = bool(pcfg.progress and self.dist.is_main)
        self.windows = pack(self.corpus.train, self.tokenizer, pcfg.max_length, progress=self.show_progress)
        held_out = pack(self.corpus.held_out, self.tokenizer, pcfg.max_length, "tokenising held-out",
                        self.show_progress)
        log.info("packed %d training windows and %d held-out windows of ≤ %d tokens", len(self.windows),
                 len(held_out), pcfg.max_length)
        self.collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=pcfg.mlm_probability,
                                                        seed=self.cfg.seed + 7919 * self.dist.rank)
        if self.collator.generator is None:  # created lazily on first use; resume restores its state now
            self.collator.create_rng(return_tensors="pt")
        fixed = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=pcfg.mlm_probability, seed=12345)
        size = pcfg.eval_batch_size
        self.eval_batches = [masked_batch(fixed, held_out[i : i + size]) for i in range(0, len(held_out), size)]
        self.steps_per_epoch = len(self.dist.shard(self.epoch_batches(1)))
        if self.steps_per_epoch == 0:
            from regner.errors import ConfigError

            raise ConfigError("pretrain.batch_size", pcfg.batch_size,
                              f"at most the number of training windows per rank ({len(self.windows)})")
        self.total_steps = pcfg.max_steps or self.steps_per_epoch * pcfg.epochs
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": pcfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=pcfg.lr, betas=(0.9, 0.999), eps=1e-6)
        self.scheduler = linear_schedule(self.optimizer, self.total_steps, pcfg.warmup_ratio)
        self.autocast = autocast_factory(self.device, pcfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=pcfg.precision == "fp16")
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        if self.dist.enabled:
            seed_everything(self.cfg.seed + 1_000_003 * self.dist.rank)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Window indices per batch: a fixed shuffle per (seed, epoch)."""
        order = list(range(len(self.windows)))
        random.Random(f"{self.cfg.seed}/{epoch}").shuffle(order)
        size = self.pcfg.batch_size
        return [order[i : i + size] for i in range(0, len(order) - size + 1, size)]

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean MLM loss, perplexity and accuracy over the held-out slice's (fixed) masked tokens."""
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with progress.step("evaluating held-out", len(self.eval_batches), self.show_progress) as bar:
            for batch in self.eval_batches:
                bar.advance()
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self.autocast():
                    logits, labels = masked_logits(self.model, batch)
                if not labels.numel():
                    continue
                logits = logits.float()
                loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(-1) == labels).sum())
                count += labels.numel()
        self.model.train()
        if not count:
            return {"loss": math.nan, "perplexity": math.nan, "accuracy": math.nan, "masked_tokens": 0}
        loss = loss_sum / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": correct / count,
                "masked_tokens": count}

    # -- state ---------------------------------------------------------------------------------
    def save_state(self) -> None:
        if not self.dist.is_main:
            with atomic_target(self.state_dir / f"last/pretrain_rng_rank{self.dist.rank}.pt") as tmp:
                torch.save({"rng": rng_state(), "collator": self.collator.generator.get_state()}, tmp)
            return
        with atomic_target(self.run_dir / STATE) as tmp:
            torch.save(optimization_state(self.model, self.optimizer, self.scheduler, self.scaler,
                                          collator=self.collator.generator.get_state(), state=asdict(self.state),
                                          before=self.before), tmp)

    def load_state(self) -> None:
        path = self.state_dir / STATE  # every rank resumes from rank 0's saved state
        if not path.exists():
            log.warning("resume: %s has no saved pretraining state; starting from scratch", self.run_dir)
            return
        saved = torch.load(path, map_location=self.device, weights_only=False)
        load_optimization_state(saved, self.model, self.optimizer, self.scheduler, self.scaler)
        own = self.state_dir / f"last/pretrain_rng_rank{self.dist.rank}.pt"
        randomness = torch.load(own, weights_only=False) if self.dist.rank and own.exists() else saved
        set_rng_state(randomness["rng"])
        self.collator.generator.set_state(randomness["collator"])
        self.state, self.before = PretrainState(**saved["state"]), saved["before"]
        log.info("resumed pretraining at step %d of %d (epoch %d)", self.state.step, self.total_steps, self.state.epoch)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.setup()
        self.state, self.before = PretrainState(), None
        history = History(self.run_dir / HISTORY_FILE, enabled=self.dist.is_main)
        if self.resume:
            self.load_state()
            history.load()
        if self.before is None:
            self.before = self.evaluate()
            log.info("held-out before pretraining: loss %.4f, perplexity %.1f, masked-token accuracy %.4f",
                     self.before["loss"], self.before["perplexity"], self.before["accuracy"])
        pcfg, state = self.pcfg, self.state
        self.model.train()
        with progress.step("pretraining", self.total_steps, self.show_progress,
                           completed=state.step) as bar:
            while state.step < self.total_steps:
                batches = self.dist.shard(self.epoch_batches(state.epoch))[state.batches_done:]
                tick = time.perf_counter()
                for indices in batches:
                    tokens = self.train_step(indices)
                    state.step += 1
                    state.batches_done += 1
                    state.tokens_seen += tokens
                    now = time.perf_counter()
                    state.train_time += now - tick
                    tick = now
                    bar.advance()
                    bar.info(f"loss {state.loss_sum / max(state.loss_steps, 1):.3f}"
                             f"  {state.tokens_seen / max(state.train_time, 1e-9):,.0f} tok/s")
                    last = state.step >= self.total_steps
                    if pcfg.eval_every and (state.step % pcfg.eval_every == 0 or last):
                        self.log_evaluation(history, start)
                        tick = time.perf_counter()
                    stopping = self.stop_requested()
                    if last or stopping or (pcfg.save_every_steps and state.step % pcfg.save_every_steps == 0):
                        self.save_state()
                        tick = time.perf_counter()
                    if stopping:
                        raise Interrupted(self.stop.signum, state.step)
                    if last:
                        break
                else:
                    state.epoch, state.batches_done = state.epoch + 1, 0
        after = self.evaluate()
        metrics = {
            "status": "completed", "kind": "pretraining",
            "held_out": {"before": self.before, "after": after},
            "corpus": self.corpus.summary(),
            "model": {"type": type(self.model).__name__, "parameters": sum(p.numel() for p in self.model.parameters()),
                      "vocab_size": self.model.config.vocab_size, "hidden_size": self.model.config.hidden_size,
                      "layers": self.model.config.num_hidden_layers, "heads": self.model.config.num_attention_heads,
                      "intermediate_size": self.model.config.intermediate_size,
                      "continued_from": self.cfg.encoder.get("pretrained")},
            "train": {"steps": state.step, "epochs": state.step / self.steps_per_epoch, "windows": len(self.windows),
                      "tokens_seen": state.tokens_seen, "train_time_s": state.train_time,
                      "wall_time_s": time.perf_counter() - start,
                      "tokens_per_s": state.tokens_seen / state.train_time if state.train_time else 0.0,
                      "device": str(self.device), "world_size": self.dist.world_size, "precision": pcfg.precision,
                      "process_max_rss_mb": process_max_rss_mb()},
        }
        log.info("held-out after pretraining: loss %.4f (was %.4f), perplexity %.1f (was %.1f), accuracy %.4f "
                 "(was %.4f)", after["loss"], self.before["loss"], after["perplexity"], self.before["perplexity"],
                 after["accuracy"], self.before["accuracy"])
        if self.dist.is_main:
            from regner.model.encoder import quiet_transformers

            with quiet_transformers():
                self.model.save_pretrained(self.run_dir)
                self.tokenizer.save_pretrained(self.run_dir)
        self.dist.close()
        return metrics

    def train_step(self, indices: list[int]) -> int:
        batch = masked_batch(self.collator, [self.windows[i] for i in indices])
        tokens = int(batch["attention_mask"].sum())
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self.autocast():
            logits, labels = masked_logits(self.model, batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)  # fp32, as the fine-tuning losses
        self.scaler.scale(loss).backward()
        loss = self.dist.average_gradients(self.parameters, loss.detach())
        if self.pcfg.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.pcfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss)
        if not math.isfinite(value):
            from regner.training.trainer import TrainingDiverged

            raise TrainingDiverged(f"non-finite MLM loss at step {self.state.step + 1}; lower pretrain.lr or use "
                                   "pretrain.precision=fp32")
        self.state.loss_sum += value
        self.state.loss_steps += 1
        return tokens * self.dist.world_size

    def stop_requested(self) -> bool:
        return self.dist.broadcast_flag(bool(self.stop)) if self.dist.enabled else bool(self.stop)

    def log_evaluation(self, history: History, start: float) -> None:
        state = self.state
        held = self.evaluate()
        train_loss = state.loss_sum / max(state.loss_steps, 1)
        history.append({"step": state.step, "epoch": state.epoch, "train_loss": train_loss, "held_out": held,
                        "lr": self.scheduler.get_last_lr()[0], "tokens_seen": state.tokens_seen,
                        "tokens_per_s": state.tokens_seen / state.train_time if state.train_time else 0.0,
                        "elapsed_s": time.perf_counter() - start})
        log.info("step %d/%d: train loss %.4f, held-out loss %.4f (perplexity %.1f, accuracy %.4f)", state.step,
                 self.total_steps, train_loss, held["loss"], held["perplexity"], held["accuracy"])
        state.loss_sum, state.loss_steps = 0.0, 0


def corpus_for(cfg: DictConfig, base_dir: Path | None = None) -> Corpus:
    pcfg = cfg.pretrain
    return build_corpus(list(pcfg.corpus or []), list(pcfg.from_data or []), list(pcfg.splits),
                        pcfg.held_out_fraction, pcfg.held_out_max, cfg.seed, pcfg.get("encoding", "utf-8"), base_dir)


def fingerprint(cfg: DictConfig, corpus: Corpus) -> str:
    """What decides the result: the config (minus how it is run) and the corpus content."""
    import hashlib
    import json

    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in ("progress", "device", "num_threads", "save_every_steps", "eval_batch_size"):
        tree["pretrain"].pop(key, None)
    tree.pop("resume", None)
    payload = json.dumps(tree, sort_keys=True, default=str) + corpus.fingerprint()
    return hashlib.sha256(payload.encode()).hexdigest()


def run_pretraining(cfg: DictConfig, run_dir: str | Path, corpus: Corpus, resume: bool = False,
                    stop: StopFlag | None = None) -> dict[str, Any]:
    """Pretrain, then write the model directory and ``metrics.json``; ``status.json`` says
    ``failed`` or ``interrupted`` (with the resume command) otherwise."""
    run_dir = Path(run_dir)
    main = env_rank() == 0
    info = {"kind": "pretraining", "fingerprint": fingerprint(cfg, corpus)}

    def status(*args, **kwargs):
        if main:
            write_status(run_dir, *args, **info, **kwargs)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        for name in MODEL_FILES:  # a model file is only ever the finished model
            (run_dir / name).unlink(missing_ok=True)
    try:
        status("running")
        metrics = MLMPretrainer(cfg, run_dir, corpus, resume=resume, stop=stop).fit()
    except Interrupted as err:
        status("interrupted", str(err), resume_command=resume_command(run_dir, "pretrain"))
        raise
    except BaseException as err:
        status("failed", f"{type(err).__name__}: {err}")
        raise
    if main:
        atomic_write_json(run_dir / METRICS_FILE, metrics)
    status("completed")
    log.info("pretrained encoder: %s (load with encoder=pretrained encoder.pretrained=%s)", run_dir.resolve(),
             run_dir.resolve())
    return metrics

