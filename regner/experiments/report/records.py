"""One finished run as the report sees it (:class:`RunRecord`), read from its run directory,
and the groups of runs a row is made of (:class:`Group`)."""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.config.tree import flatten
from regner.runs.io import METRICS_FILE, STATUS_FILE, JsonFileError, read_json_object

# Keys that do not change what a run computes: never a reason to split groups.
INERT_KEYS = {"seed", "resume", "ckpt", "alpha", "regularizer._target_", "regularizer.name", "data.root",
              "trainer.progress", "trainer.num_workers", "trainer.feature_cache", "trainer.save_every_steps",
              "trainer.log_every", "trainer.check_every", "trainer.resume", "trainer.eval_batch_size",
              "trainer.loggers", "trainer.mlflow.tracking_uri", "trainer.mlflow.experiment",
              "trainer.num_threads"}  # CPU threads change only the order of float sums, not the method


TREATMENT_PREFIXES = ("regularizer.", "kl.", "trainer.ema.")  # EMA is compared as a method: "fgm+ema" vs "none"

COLLAPSE_F1 = 0.05  # a run whose dev F1 is below this learned nothing: collapsed


@dataclass
class RunRecord:
    path: Path
    dataset: str
    encoder: str
    regularizer: str
    kl: str | None
    knobs: dict[str, Any]
    seed: Any
    status: str
    reason: str = ""
    alpha: Any = None
    config: dict[str, Any] = field(default_factory=dict)  # flattened resolved config
    dev_f1: float = math.nan
    test_f1: float = math.nan
    sec_per_step: float = math.nan
    peak_memory_mb: float = math.nan
    cost_ratio: float = math.nan

    @property
    def sweep(self) -> Path:
        return self.path.parent

    @property
    def collapsed(self) -> bool:
        return self.status == "diverged" or (self.status == "completed" and not self.dev_f1 >= COLLAPSE_F1)

    @functools.cached_property
    def relevant(self) -> dict[str, Any]:
        """The config keys that can change the result: no inert keys, no KL keys if no KL is used."""
        return {k: v for k, v in self.config.items()
                if k not in INERT_KEYS and not (self.kl is None and k.startswith("kl."))}


@dataclass
class Group:
    dataset: str
    encoder: str
    regularizer: str
    kl: str | None
    strength: str
    setting: tuple = ()  # (key, value) pairs of the non-regularizer keys that vary across the report
    runs: list[RunRecord] = field(default_factory=list)
    order: tuple = ()  # sort key of the strength: numbers compare as numbers

    @property
    def good(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "completed" and not r.collapsed]

    @property
    def counted(self) -> list[RunRecord]:
        """Runs that finished (completed or diverged): what a user would have got."""
        return [r for r in self.runs if r.status in ("completed", "diverged")]

    def values(self, attribute: str) -> list[float]:
        return [getattr(r, attribute) for r in self.good if not math.isnan(getattr(r, attribute))]

    def per_seed(self, attribute: str) -> dict[Any, float]:
        """Mean value per seed (runs repeated with one seed and an inert difference are replicates)."""
        by_seed: dict[Any, list[float]] = defaultdict(list)
        for r in self.good:
            value = getattr(r, attribute)
            if not math.isnan(value):
                by_seed[json.dumps(r.seed)].append(value)
        return {seed: statistics.fmean(v) for seed, v in by_seed.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _minimal_config(run: dict[str, Any]) -> dict[str, Any]:
    """What a run without config.yaml (an old or hand-made one) can still be told apart by."""
    config = {"data.name": run.get("dataset"), "encoder.name": run.get("encoder"),
              "regularizer.name": run.get("regularizer"), "kl.name": run.get("kl")}
    config.update({f"regularizer.{k}": v for k, v in flatten(run.get("regularizer_config") or {}).items()})
    for key in ("head", "precision"):
        if run.get(key) is not None:
            config[f"{key}.type" if key == "head" else "trainer.precision"] = run[key]
    return config


class Unreadable(ValueError):
    """A run file that cannot be read as what regner writes: the report skips the run and lists it."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def _json_object(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except JsonFileError as err:
        raise Unreadable(path, err.reason) from None


def _score(metrics: dict[str, Any], split: str, path: Path) -> float:
    """metrics[split]["f1"] as a finite number in [0, 1], or Unreadable."""
    section = metrics.get(split)
    value = section.get("f1") if isinstance(section, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise Unreadable(path, f"{split}.f1 is {value!r}, not an F1 score in [0, 1]")
    return float(value)


def _record(run_dir: Path) -> RunRecord | None:
    """The run in ``run_dir``; None when it is not a training run; Unreadable when a file is damaged."""
    status = _json_object(run_dir / STATUS_FILE)
    metrics_path = run_dir / METRICS_FILE
    metrics = _json_object(metrics_path) if metrics_path.exists() else None
    run = (metrics or {}).get("run") or status.get("run")
    if run is not None and not isinstance(run, dict):
        raise Unreadable(metrics_path if metrics and metrics.get("run") else run_dir / STATUS_FILE,
                         '"run" is not an object')
    if not run or "regularizer" not in run or (metrics or {}).get("kind") == "evaluation":
        return None  # failed before its config was read, or not a training run (e.g. regner evaluate)
    state = status.get("status", "unknown")
    if state == "failed" and status.get("diverged"):
        state = "diverged"
    if state == "completed" and metrics is None:
        state = "incomplete"
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        from omegaconf import OmegaConf

        config = flatten(OmegaConf.to_container(OmegaConf.load(config_file), resolve=False))
    else:
        config = _minimal_config(run)
    method = run["regularizer"] + ("+ema" if config.get("trainer.ema.decay") or run.get("ema_decay") else "")
    record = RunRecord(run_dir, dataset_label(run.get("dataset", "?"), config), run.get("encoder", "?"), method, run.get("kl"),
                       run.get("regularizer_config", {}), run.get("seed"), state, status.get("reason", ""),
                       run.get("alpha"), config)
    if metrics:
        record.dev_f1 = _score(metrics, "dev", metrics_path)
        record.test_f1 = _score(metrics, "test", metrics_path) if metrics.get("test") else math.nan
        train = metrics.get("train", {})
        record.sec_per_step = 1 / train["steps_per_s"] if train.get("steps_per_s") else math.nan
        if str(train.get("device", "")).startswith("cuda") and train.get("peak_memory_mb") is not None:
            record.peak_memory_mb = float(train["peak_memory_mb"])  # CPU runs have no per-run figure
    return record


def dataset_label(name: str, config: dict[str, Any]) -> str:
    """A dataset is its name *and* its files: ``jsonl`` or ``conll`` names every user file alike."""
    files = [Path(str(config[f"data.{k}"])).name for k in ("train", "dev", "test")
             if isinstance(config.get(f"data.{k}"), str) and config.get(f"data.{k}")]
    if config.get("data.path"):
        files = [str(config["data.path"])]
    return f"{name} ({', '.join(files)})" if files else name


def collect_runs(directories: list[str | Path], skipped: list[Path] | None = None,
                 unreadable: list[Unreadable] | None = None) -> list[RunRecord]:
    """Every training run under ``directories`` (each run once, however often or nested its directory
    is given); other directories with a status.json (``regner evaluate`` outputs, runs that failed
    before reading their config) go to ``skipped``, runs with a damaged file to ``unreadable``."""
    records, seen = [], set()
    for directory in directories:
        directory = Path(directory)
        if not directory.exists():
            raise FileNotFoundError(f"{directory}: no such directory")
        for status_file in sorted(directory.rglob(STATUS_FILE)):
            if status_file.parent.resolve() in seen:
                continue
            seen.add(status_file.parent.resolve())
            try:
                record = _record(status_file.parent)
            except Unreadable as err:
                if unreadable is None:
                    raise
                unreadable.append(err)
                continue
            if record is not None:
                records.append(record)
            elif skipped is not None:
                skipped.append(status_file.parent)
    _attach_cost_ratios(records)
    return records


def varying_keys(records: list[RunRecord]) -> list[str]:
    """Relevant config keys whose value is not the same in every run (a missing key counts as a value)."""
    keys = sorted({k for r in records for k in r.relevant})
    return [k for k in keys if len({json.dumps(r.relevant.get(k), sort_keys=True, default=str) for r in records}) > 1]


def is_treatment(key: str) -> bool:
    return key.startswith(TREATMENT_PREFIXES)


def setting_of(record: RunRecord, keys: list[str]) -> tuple:
    """The run's values of the varying non-regularizer keys: runs compare only within one setting."""
    relevant = record.relevant
    return tuple((k, relevant.get(k)) for k in keys if not is_treatment(k))


def _attach_cost_ratios(records: list[RunRecord]) -> None:
    keys = varying_keys(records)
    baseline: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r.regularizer == "none" and r.status == "completed" and not math.isnan(r.sec_per_step):
            baseline[(r.sweep, setting_of(r, keys))].append(r.sec_per_step)
    for r in records:
        base = baseline.get((r.sweep, setting_of(r, keys)))
        if base and not math.isnan(r.sec_per_step):
            r.cost_ratio = r.sec_per_step / statistics.fmean(base)
