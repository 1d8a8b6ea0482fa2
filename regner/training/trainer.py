"""Training loop: data → encoder → head → loss/regularizer → optimizer, evaluated every epoch.

The loop itself knows nothing about any particular regularizer: it builds a
:class:`~regner.regularizers.base.TrainingStep` per batch and lets the regularizer do the
forward/backward work, then clips, steps and schedules. Everything a run produces goes to its run
directory: ``status.json`` first (``running``), ``history.jsonl`` after each evaluation, the best
checkpoint, and ``metrics.json`` only when the run has finished.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from regner.data.batching import LengthBucketSampler, collate
from regner.data.loading import load_splits
from regner.errors import ConfigError
from regner.inference.evaluation import encode_split, evaluate, to_device
from regner.model.encoder import build_encoder
from regner.model.head import span_mask
from regner.model.span_model import SpanModel
from regner.regularizers import instantiate_regularizer
from regner.regularizers.base import TrainingStep
from regner.regularizers.gp import GradientPenalty
from regner.regularizers.kl import get_kl
from regner.runs import progress
from regner.runs.directory import LAST_STATE
from regner.runs.interrupt import Interrupted, StopFlag
from regner.runs.io import HISTORY_FILE, History, atomic_target
from regner.training.callbacks import build_callbacks
from regner.training.device import (
    autocast_factory,
    make_deterministic,
    peak_memory_mb,
    process_max_rss_mb,
    resolve_device,
    seed_everything,
    set_threads,
)
from regner.training.distributed import Distributed
from regner.training.optim import build_optimizer, linear_schedule
from regner.training.state import (
    RANK_RNG,
    RANK_SEED_STRIDE,
    TrainState,
    load_optimization_state,
    optimization_state,
    rng_state,
    set_rng_state,
)
from regner.training.summary import HEADLINE, format_per_type, run_metadata, warn_no_predictions
from regner.training.unlabeled import build_stream, unlabeled_terms

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops instead of training on garbage."""


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: str | Path, base_dir: str | Path | None = None, resume: bool = False,
                 run_info: dict[str, Any] | None = None, stop: StopFlag | None = None):
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.stop = stop if stop is not None else StopFlag()
        self.run_info = run_info if run_info is not None else run_metadata(cfg)
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.tcfg = cfg.trainer
        # A run saved before trainer.patience_min_f1 existed resumes with the rule it started under
        self.patience_min_f1 = float(self.tcfg.get("patience_min_f1", 0.0))

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, tcfg = self.cfg, self.tcfg
        set_threads(tcfg.get("num_threads"), "trainer.num_threads")
        seed_everything(cfg.seed)
        make_deterministic(bool(tcfg.get("deterministic", False)))
        self.device = resolve_device(tcfg.device)
        self.dist = Distributed.from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = self.dist.device
            torch.cuda.set_device(self.device)
        self.autocast = autocast_factory(self.device, tcfg.precision)
        # Ranks > 0 run in a scratch directory; their random state for resume lives in rank 0's run directory.
        self.state_dir = Path(self.dist.broadcast_object(str(self.run_dir.resolve())))
        self.splits = load_splits(cfg.data, self.base_dir)
        log.info("data %s", self.splits.summary())
        self.tokenizer, encoder = build_encoder(cfg.encoder, (ex.text for ex in self.splits.train))
        positions = getattr(encoder.config, "max_position_embeddings", None)
        if positions and cfg.data.max_length > positions:  # a hub encoder: its size is known only now
            raise ConfigError("data.max_length", cfg.data.max_length,
                              f"an integer ≤ {positions}, the position embeddings of {cfg.encoder.name}")
        self.label2id = {label: i for i, label in enumerate(self.splits.labels)}
        self.pad_id = self.tokenizer.pad_token_id or 0
        cache, self.show_progress = tcfg.get("feature_cache"), bool(tcfg.progress and self.dist.is_main)

        def encode(name: str, examples: list):
            return encode_split(name, examples, self.tokenizer, self.label2id, cfg.data, cache, self.show_progress)

        self.train_split, self.dev_split = encode("train", self.splits.train), encode("dev", self.splits.dev)
        self.test_split = encode("test", self.splits.test) if self.splits.test else None
        seed_everything(cfg.seed)  # the head's init must not depend on how much data was read
        self.model = SpanModel(encoder, self.splits.labels, cfg.head.type, cfg.head.head_size, cfg.head.rope).to(self.device)
        self.dist.broadcast_parameters(self.model)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.regularizer = instantiate_regularizer(cfg.regularizer)
        self.kl = get_kl(cfg.kl.name, cfg.kl.get("reduction", "mean"))
        mode = cfg.head.get("blockwise") or False  # loss, KL and decoding block by block (model/blockwise.py)
        self.blockwise = {"blockwise": mode, "block_rows": cfg.head.get("block_rows")} if mode else {}
        if self.blockwise and getattr(self.regularizer, "mode", None) == "exact":
            log.info("head.blockwise with the exact gradient penalty: its double backward uses the dense scores")
        log.info("model: %s encoder (%.1fM parameters), %s head; regularizer %r, kl=%s%s",
                 cfg.encoder.name, sum(p.numel() for p in self.model.parameters()) / 1e6,
                 cfg.head.type, self.regularizer, cfg.kl.name,
                 f"; data parallel over {self.dist.world_size} processes" if self.dist.enabled else "")
        self.sampler = LengthBucketSampler([len(w) for w in self.train_split.windows], tcfg.batch_size,
                                           shuffle=True, seed=cfg.seed, bucket_batches=tcfg.bucket_batches)
        self.steps_per_epoch = len(self.dist.shard(self.sampler.batches()))
        self.optimizer = build_optimizer(self.model, tcfg)
        self.scheduler = linear_schedule(self.optimizer, self.steps_per_epoch * tcfg.max_epochs, tcfg.warmup_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=tcfg.precision == "fp16")
        self.compiled = bool(tcfg.get("compile")) and self._compile()
        self.callbacks = build_callbacks(tcfg, self.regularizer)
        self.callbacks.on_train_start(self)
        if self.dist.enabled:  # same init and data order on every rank, but each its own dropout/noise/VAT draws
            seed_everything((cfg.seed + RANK_SEED_STRIDE * self.dist.rank) % 2**32)
        self.unlabeled = build_stream(self)  # None unless unlabeled.ratio > 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _compile(self) -> bool:
        """``torch.compile`` the encoder in place (state-dict keys unchanged); False if unavailable."""
        if isinstance(self.regularizer, GradientPenalty) and self.regularizer.mode == "exact":
            log.warning("trainer.compile ignored: compiled graphs have no double backward (regularizer=gp, mode=exact)")
            return False
        try:
            self.model.encoder.compile()
        except Exception as err:  # noqa: BLE001 - any backend problem means: run eagerly
            log.warning("torch.compile unavailable (%s); training eagerly", err)
            return False
        return True

    def _uncompile(self, err: BaseException) -> None:
        log.warning("torch.compile failed on the first step (%s: %s); falling back to eager mode",
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        self.model.encoder._compiled_call_impl = None
        self.optimizer.zero_grad(set_to_none=True)
        self.compiled = False

    def epoch_loader(self, epoch: int, skip: int = 0) -> torch.utils.data.DataLoader:
        """This rank's batches of ``epoch``, minus the first ``skip`` (already trained before a resume)."""
        self.sampler.set_epoch(epoch)
        batches = self.dist.shard(self.sampler.batches())[skip:]
        # A private generator: creating the loader's iterator must not draw from the global RNG, or a
        # resumed run (which creates it mid-epoch) would get different dropout masks afterwards.
        return torch.utils.data.DataLoader(
            self.train_split.windows, batch_sampler=batches, collate_fn=partial(collate, pad_id=self.pad_id),
            num_workers=self.tcfg.num_workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))

    # -- one step ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.compiled and self.state.global_step == 0:
            try:
                return self._training_step(batch)
            except TrainingDiverged:
                raise
            except Exception as err:  # noqa: BLE001 - compile errors surface on the first call
                self._uncompile(err)
        return self._training_step(batch)

    def _training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step. Returns the detached terms as device tensors: nothing here waits for
        the device (the non-finite check and the progress bar read them every ``check_every`` steps)."""
        tokens = int(batch["attention_mask"].numpy().sum())  # the host copy (before .to(device)): no device sync
        batch = to_device(batch, self.device)
        scaler = self.scaler
        step = TrainingStep(
            model=self.model, batch=batch, targets=batch["spans"], mask=span_mask(batch["token_mask"]), kl=self.kl,
            backward=lambda loss: scaler.scale(loss).backward(), autocast=self.autocast,
            grad_scale=scaler.get_scale() if scaler.is_enabled() else 1.0, epoch=self.state.epoch,
            global_step=self.state.global_step, teacher=self.callbacks.teacher, **self.blockwise)
        terms = self.regularizer.step(step)
        if self.unlabeled is not None:  # semi-supervised: the consistency term of μ unlabeled batches
            extra = unlabeled_terms(self, step)
            terms = {**terms, **{k: v for k, v in extra.items() if k != "loss"}, "loss": terms["loss"] + extra["loss"]}
        terms["loss"] = self.dist.average_gradients(self.parameters, terms["loss"])
        if self.tcfg.max_grad_norm:
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.tcfg.max_grad_norm)
        scaler.step(self.optimizer)
        scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.callbacks.on_step_end(self)
        self.state.global_step += 1
        self.state.train_tokens += tokens * self.dist.world_size
        return {k: v.detach().float() for k, v in terms.items()}

    def check_finite(self, pending: dict[str, torch.Tensor], first_step: int) -> dict[str, float]:
        """Read the terms summed since the last check (one host sync) and stop on a non-finite loss."""
        values = {k: float(v) for k, v in pending.items()}
        if not math.isfinite(values.get("loss", 0.0)):
            raise TrainingDiverged(
                f"non-finite loss between steps {first_step} and {self.state.global_step} with regularizer "
                f"{self.regularizer.name} and kl={self.cfg.kl.name}; summed terms: {values}. Lower the learning "
                f"rate or the regularizer strength, or use trainer.precision=fp32")
        return values

    # -- checkpoints -------------------------------------------------------------------------
    def save_best(self) -> None:
        self.model.save_pretrained(self.run_dir / "checkpoint", self.tokenizer, extra={
            "max_length": self.cfg.data.max_length, "window_overlap": self.cfg.data.window_overlap,
            "threshold": self.cfg.head.threshold})

    def save_last(self) -> None:
        """Everything needed to continue exactly: weights, optimizer, scheduler, scaler, RNG, state.
        Ranks > 0 save only their random state (their weights equal rank 0's)."""
        if not self.dist.is_main:
            with atomic_target(self.state_dir / RANK_RNG.format(rank=self.dist.rank)) as tmp:
                torch.save(rng_state(), tmp)
            return
        self.state.wall_time = self.elapsed()
        with atomic_target(self.run_dir / LAST_STATE) as tmp:
            torch.save(optimization_state(self.model, self.optimizer, self.scheduler, self.scaler,
                                          state=asdict(self.state), callbacks=self.callbacks.state_dict()), tmp)

    def load_last(self) -> None:
        path = self.state_dir / LAST_STATE  # every rank resumes from rank 0's saved state
        if not path.exists():
            log.warning("resume: %s has no saved state; starting from scratch", self.run_dir)
            return
        saved = torch.load(path, map_location=self.device, weights_only=False)
        load_optimization_state(saved, self.model, self.optimizer, self.scheduler, self.scaler)
        self.callbacks.load_state_dict(saved.get("callbacks", {}))
        rank_rng = self.state_dir / RANK_RNG.format(rank=self.dist.rank)
        set_rng_state(torch.load(rank_rng, weights_only=False) if self.dist.rank and rank_rng.exists() else saved["rng"])
        self.state = TrainState(**saved["state"])
        log.info("resumed %s at epoch %d, batch %d (step %d, best dev F1 %.4f)", self.run_dir, self.state.epoch,
                 self.state.batches_done, self.state.global_step, self.state.best_f1)

    # -- the loop ----------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall time of the run: the earlier invocations' (to their last save) and this one's."""
        return self.wall_before + time.perf_counter() - self.started

    def fit(self) -> dict[str, Any]:
        self.started, self.wall_before = time.perf_counter(), 0.0
        self.setup()
        self.state = TrainState()
        history = History(self.run_dir / HISTORY_FILE, enabled=self.dist.is_main)
        if self.resume:
            self.load_last()
            history.load()
            self.wall_before = self.state.wall_time
        self.callbacks.on_train_begin(self)
        try:
            metrics = self._fit(history)
        except BaseException:
            self.callbacks.on_train_end(self, None)
            raise
        self.callbacks.on_train_end(self, metrics)
        return metrics

    def _fit(self, history: History) -> dict[str, Any]:
        tcfg = self.tcfg
        state = self.state
        save_every = tcfg.get("save_every_steps") or 0
        check_every = max(1, tcfg.get("check_every") or 1)
        with progress.display(self.show_progress):
            while state.epoch <= tcfg.max_epochs and not state.stopped:
                epoch = state.epoch
                self.model.train()
                epoch_start = time.perf_counter()
                pending: dict[str, torch.Tensor] = {}
                first_pending = state.global_step + 1
                with progress.step(f"epoch {epoch}/{tcfg.max_epochs}", self.steps_per_epoch, self.show_progress,
                                   completed=state.batches_done) as bar:
                    for batch in self.epoch_loader(epoch, skip=state.batches_done):
                        terms = self.training_step(batch)
                        state.batches_done += 1
                        for k, v in terms.items():
                            pending[k] = pending[k] + v if k in pending else v
                        due = state.batches_done == self.steps_per_epoch or state.global_step % check_every == 0
                        stopping = self.stop_requested(due) and state.batches_done < self.steps_per_epoch
                        saving = stopping or (save_every and state.global_step % save_every == 0
                                              and state.batches_done < self.steps_per_epoch)
                        logging_now = tcfg.log_every and state.global_step % tcfg.log_every == 0
                        if due or saving or logging_now:
                            values = self.check_finite(pending, first_pending)
                            for k, v in values.items():
                                state.sums[k] = state.sums.get(k, 0.0) + v
                            steps = state.global_step - first_pending + 1
                            self.callbacks.on_terms(self, {k: v / steps for k, v in values.items()})
                            pending, first_pending = {}, state.global_step + 1
                            bar.info(f"loss {state.sums['loss'] / state.batches_done:.4f}")
                        bar.advance()
                        if logging_now:
                            log.info("epoch %d step %d: %s", epoch, state.global_step,
                                     ", ".join(f"{k} {v / state.batches_done:.4f}" for k, v in state.sums.items()))
                        if saving:
                            state.train_time += time.perf_counter() - epoch_start
                            epoch_start = time.perf_counter()
                            self.save_last()
                        if stopping:
                            raise Interrupted(self.stop.signum, state.global_step)
                state.train_time += time.perf_counter() - epoch_start
                self.end_of_epoch(history)
                if self.stop_requested(True):  # the state of the finished epoch is saved
                    raise Interrupted(self.stop.signum, state.global_step)
        self.in_sync = self.dist.in_sync(self.model)
        if not self.in_sync:
            log.error("data-parallel ranks ended with different weights")
        self.model.load_state_dict(SpanModel.from_pretrained(self.run_dir / "checkpoint")[0].state_dict()
                                   if self.dist.is_main else self.model.state_dict())
        metrics = self.final_metrics(state.best_epoch, state.epochs_done, state.train_time, self.elapsed())
        self.dist.close()
        return metrics

    def stop_requested(self, sync_point: bool) -> bool:
        """Whether a SIGTERM/SIGINT asks to stop here. Data-parallel ranks follow rank 0's flag, read
        only at sync points (every ``check_every`` steps), so they all stop at the same step."""
        if not self.dist.enabled:
            return bool(self.stop)
        return sync_point and self.dist.broadcast_flag(bool(self.stop))

    def end_of_epoch(self, history: History) -> None:
        """Evaluate, log, keep the best checkpoint, decide early stopping and save resumable state
        (the decision included, so a resumed run stops where the uninterrupted one did)."""
        state, tcfg = self.state, self.tcfg
        with self.callbacks.evaluation_weights(self):  # EMA: the averaged weights are evaluated and saved
            dev, _ = evaluate(self.model, self.dev_split, self.device, tcfg.eval_batch_size,
                              self.cfg.head.threshold, self.autocast, self.pad_id, name="dev", progress=self.show_progress,
                              **self.blockwise)
            improved = dev["f1"] > state.best_f1
            if improved and self.dist.is_main:
                self.save_best()
        n = max(state.batches_done, 1)
        train = {k: v / n for k, v in state.sums.items()}
        record = {"epoch": state.epoch, "step": state.global_step, "train": train,
                  "dev": {k: dev[k] for k in ("precision", "recall", "f1", "predicted")},
                  "lr": self.scheduler.get_last_lr()[0], "elapsed_s": self.elapsed()}
        history.append(record)
        self.callbacks.on_evaluate(self, record)
        log.info("epoch %d: dev P %.4f R %.4f F1 %.4f (%d spans predicted)%s", state.epoch, dev["precision"],
                 dev["recall"], dev["f1"], dev["predicted"], " (best)" if improved else "")
        if dev["predicted"] == 0:
            warn_no_predictions(state.epoch, train, self.regularizer, self.cfg, self.scheduler.get_last_lr()[0])
        if improved:
            state.best_f1, state.best_epoch, state.stale = dev["f1"], state.epoch, 0
        elif state.best_f1 > 0 and state.best_f1 >= self.patience_min_f1:  # patience starts once the model has
            state.stale += 1  # found something real: a slow start (or an untrained head's chance hits) is no plateau
        stop = bool(tcfg.patience) and state.stale >= tcfg.patience
        state.stopped = self.dist.broadcast_flag(stop)  # rank 0 decides: ranks can never disagree and hang
        if state.stopped:
            log.info("early stopping: no dev F1 improvement for %d epochs (trainer.patience=%d; set "
                     "trainer.patience=0 to train all trainer.max_epochs=%d epochs)", state.stale, tcfg.patience,
                     tcfg.max_epochs)
        state.epoch, state.batches_done, state.sums = state.epoch + 1, 0, {}
        self.save_last()

    def final_metrics(self, best_epoch: int, epochs: int, train_time: float, wall_time: float) -> dict[str, Any]:
        kwargs = dict(device=self.device, batch_size=self.tcfg.eval_batch_size, threshold=self.cfg.head.threshold,
                      autocast=self.autocast, pad_id=self.pad_id, with_seqeval=True, progress=self.show_progress,
                      **self.blockwise)
        dev, _ = evaluate(self.model, self.dev_split, name="dev", **kwargs)
        test = evaluate(self.model, self.test_split, name="test", **kwargs)[0] if self.test_split else None
        for name, split in (("dev", dev), ("test", test)):
            if split is not None:
                log.info("%s (best epoch %d): P %.4f R %.4f F1 %.4f\n%s", name, best_epoch, split["precision"],
                         split["recall"], split["f1"], format_per_type(split))
        steps = self.state.global_step
        return {
            "status": "completed",
            "run": self.run_info,
            "best_epoch": best_epoch, "epochs": epochs,
            "early_stopping": {"stopped": self.state.stopped, "patience": self.tcfg.patience,
                               "max_epochs": self.tcfg.max_epochs},
            "headline": HEADLINE,
            "dev": dev, "test": test,
            "train": {"steps": steps, "train_time_s": train_time, "wall_time_s": wall_time,
                      "steps_per_s": steps / train_time if train_time else 0.0,
                      "tokens_per_s": self.state.train_tokens / train_time if train_time else 0.0,
                      "peak_memory_mb": peak_memory_mb(self.device), "process_max_rss_mb": process_max_rss_mb(),
                      "device": str(self.device),
                      "world_size": self.dist.world_size, "ranks_in_sync": self.in_sync,
                      "precision": self.tcfg.precision,
                      "compiled": self.compiled},
            "encoding": {name: asdict(s.stats) for name, s in
                         (("train", self.train_split), ("dev", self.dev_split), ("test", self.test_split)) if s},
        }
