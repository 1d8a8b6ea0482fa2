"""Benchmark v2: which regularizer helps, by how much, at what cost (docs/benchmarks/PROTOCOL.md).

A *profile* (``scripts/matrices/<name>.yaml``) names the regimes (a pretrained encoder and the same
architecture from random init), the datasets, the settings every run shares, the methods with their
strength grids, and the seeds of the two stages:

1. **tune**: every method at every strength of its grid, ``tune.seeds`` (1–2 seeds), judged on dev F1;
   the best strength per (dataset, regime, method) is chosen (a collapsed or diverged run counts as
   its dev F1, 0 when diverged; ties go to the strength nearest the default);
2. **final**: ``none`` and every method at its chosen strength, ``final.seeds`` (≥ 5, disjoint from the
   tune seeds, shared across methods: same seed = same init and data order), judged on test F1 with
   paired per-seed differences against ``none``, Holm-corrected over the whole report.

Every run is a ``regner sweep`` job launched by Hydra's joblib launcher (``jobs`` in parallel with the
cores split between them). Each (dataset, regime, method, strength) is a generated ``experiment``
preset in ``<out>/presets/experiment/``, so one sweep per (dataset, stage) balances the load. A sweep
rerun skips completed runs; interrupted ones are resumed first from their saved state, so an interrupted
benchmark picks up where it stopped. Costs (time per step and peak memory relative to ``none``) come from
``scripts/bench_throughput.py``, run alone in one process once the training is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from regner.errors import UserError

GROUPS = ("data", "encoder", "head", "regularizer", "kl", "trainer")
STAGES = ("tune", "final")


class ProfileError(UserError):
    """A benchmark profile that cannot be run as written."""


@dataclass
class Method:
    name: str
    overrides: list[str]
    key: str | None = None  # the strength knob (a config key, e.g. alpha or regularizer.epsilon)
    grid: list[Any] = field(default_factory=list)
    default: Any = None  # the knob's default value (ties in stage 1 go to the value nearest it)
    throughput: str | None = None  # its row in bench_throughput.py

    @property
    def tuned(self) -> bool:
        return bool(self.key and self.grid)


@dataclass
class Profile:
    name: str
    description: str
    regimes: dict[str, list[str]]
    datasets: dict[str, list[str]]
    common: list[str]
    methods: dict[str, Method]
    tune_seeds: list[int]
    tune_regimes: list[str]
    final_seeds: list[int]
    jobs: int
    throughput: list[str]
    encoder: str | None = None  # the pretrained encoder directory ({encoder} in the regimes)
    keep_checkpoints: bool = False  # keep each finished run's checkpoint/ and last/ (else removed: disk)


def _list(spec: dict, key: str, where: str) -> list:
    value = spec.get(key)
    if not isinstance(value, list) or not value:
        raise ProfileError(f"{where}: `{key}` must be a non-empty list, got {value!r}")
    return value


def load_profile(path: Path, encoder: str | None = None) -> Profile:
    """Read and check a profile; ``{encoder}`` in its regimes becomes ``encoder`` (or the profile's own
    ``encoder`` default)."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ProfileError(f"{path}: cannot read the profile ({err})") from None
    if not isinstance(spec, dict):
        raise ProfileError(f"{path}: a profile is a mapping (description, regimes, datasets, methods, tune, final)")
    where = str(path)
    for key in ("regimes", "datasets", "methods", "tune", "final"):
        if not isinstance(spec.get(key), dict) or not spec[key]:
            raise ProfileError(f"{where}: `{key}` must be a non-empty mapping")
    encoder = encoder or spec.get("encoder")
    for section in ("regimes", "datasets"):
        for name, overrides in spec[section].items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ProfileError(f"{where}: {section}.{name} must be a list of overrides (key=value), got {overrides!r}")
    regimes = {name: [o.replace("{encoder}", str(encoder)) for o in overrides]
               for name, overrides in spec["regimes"].items()}
    if any("{encoder}" in o for overrides in spec["regimes"].values() for o in overrides) and not encoder:
        raise ProfileError(f"{where}: the regimes use {{encoder}} but no encoder directory was given: pass "
                           "--encoder DIR (with make: ENCODER=DIR), e.g. outputs/pretrained/zh-mini from `make pretrain`")
    methods = {}
    for name, m in spec["methods"].items():
        if isinstance(m, list):
            m = {"overrides": m}
        grid = m.get("grid") or {}
        if len(grid) > 1:
            raise ProfileError(f"{where}: methods.{name}.grid sweeps one knob, got {sorted(grid)}")
        key, values = next(iter(grid.items())) if grid else (None, [])
        methods[name] = Method(name, list(m.get("overrides") or []), key, list(values), m.get("default"),
                               m.get("throughput"))
    if "none" not in methods or methods["none"].tuned:
        raise ProfileError(f"{where}: methods must include `none` (the baseline), without a grid")
    tune, final = spec["tune"], spec["final"]
    tune_seeds, final_seeds = _list(tune, "seeds", f"{where}: tune"), _list(final, "seeds", f"{where}: final")
    if set(tune_seeds) & set(final_seeds):
        raise ProfileError(f"{where}: tune.seeds and final.seeds must differ (the final runs must not be the ones "
                           f"that chose the strength); shared: {sorted(set(tune_seeds) & set(final_seeds))}")
    tune_regimes = tune.get("regimes") or list(regimes)
    unknown = [r for r in tune_regimes if r not in regimes]
    if unknown:
        raise ProfileError(f"{where}: tune.regimes names unknown regimes {unknown}; regimes are {list(regimes)}")
    return Profile(Path(path).stem, str(spec.get("description", "")), regimes,
                   {name: list(o) for name, o in spec["datasets"].items()}, list(spec.get("common") or []), methods,
                   tune_seeds, tune_regimes, final_seeds, int(spec.get("jobs", 2)),
                   [str(a).replace("{encoder}", str(encoder)) for a in spec.get("throughput") or []], encoder,
                   bool(spec.get("keep_checkpoints", False)))


# -- presets -----------------------------------------------------------------------------------

def _value_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def preset_name(dataset: str, regime: str, method: str, value: Any = None) -> str:
    """``weibo.pretrained.rdrop.3``: one experiment preset (and the run directory's name)."""
    name = f"{dataset}.{regime}.{method}" + ("" if value is None else f".{_value_label(value)}")
    return name.replace("/", "-")


def _parse_value(text: str) -> Any:
    if "${" in text:
        return text
    return yaml.safe_load(text) if text else None


def preset_yaml(overrides: list[str]) -> str:
    """A ``# @package _global_`` preset that applies ``overrides`` as `regner train` would: ``group=option``
    becomes a defaults-list override, ``a.b=value`` a value."""
    defaults, values = [], {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or key.startswith(("+", "~", "hydra")):
            raise ProfileError(f"override {override!r}: a profile's overrides are group=option or key=value")
        if key in GROUPS:
            defaults.append({f"override /{key}": text})
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ProfileError(f"override {override!r}: {part} is already set to a value")
        node[leaf] = _parse_value(text)
    body = {"defaults": [*defaults, "_self_"], **values}
    return "# @package _global_\n# generated by regner.benchmark\n" + yaml.safe_dump(body, allow_unicode=True,
                                                                                   sort_keys=False)


@dataclass
class Job:
    dataset: str
    regime: str
    stage: str
    method: str
    value: Any
    overrides: list[str]

    @property
    def preset(self) -> str:
        return preset_name(self.dataset, self.regime, self.method, self.value)


def method_overrides(method: Method, value: Any = None) -> list[str]:
    extra = [] if value is None else [f"{method.key}={value}"]
    return [*method.overrides, *extra]


def tune_jobs(profile: Profile, dataset: str) -> list[Job]:
    """Stage 1: ``none`` (the reference line of the curves) and every tuned method at every grid value."""
    return [Job(dataset, regime, "tune", m.name, value,
                [*profile.datasets[dataset], *profile.regimes[regime], *profile.common, *method_overrides(m, value)])
            for regime in profile.tune_regimes for m in profile.methods.values()
            for value in (m.grid if m.tuned else [None]) if m.tuned or m.name == "none"]


def final_jobs(profile: Profile, dataset: str, chosen: dict[tuple[str, str], Any]) -> list[Job]:
    """``none`` and every method at its chosen strength (``chosen[(regime, method)]``), every regime."""
    jobs = []
    for regime in profile.regimes:
        for m in profile.methods.values():
            value = chosen[(regime, m.name)] if m.tuned else None
            jobs.append(Job(dataset, regime, "final", m.name, value,
                            [*profile.datasets[dataset], *profile.regimes[regime], *profile.common,
                             *method_overrides(m, value)]))
    return jobs


def run_dir(out: Path, job: Job, seed: int) -> Path:
    """``<out>/<dataset>/<stage>/<preset>/seed-<seed>``: names a Hydra override can quote-free (resume=DIR)."""
    return out / job.dataset / job.stage / job.preset / f"seed-{seed}"


# -- reading runs ---------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_state(directory: Path) -> str:
    """completed | diverged | failed | interrupted (resumable) | abandoned (unfinished, nothing saved) | missing."""
    from regner.rundir import LAST_STATE, lock_holder

    status = _read_json(directory / "status.json")
    if status is None:
        return "missing" if not directory.exists() else "abandoned"
    state = status.get("status")
    if state == "completed" and (directory / "metrics.json").exists():
        return "completed"
    if state == "failed":
        return "diverged" if status.get("diverged") else "failed"
    if lock_holder(directory) is not None:
        return "running"
    return "interrupted" if (directory / LAST_STATE).exists() else "abandoned"


def dev_f1(directory: Path) -> float | None:
    """The run's best dev F1; 0 for a diverged run; None when it has no result."""
    state = run_state(directory)
    if state == "diverged":
        return 0.0
    if state != "completed":
        return None
    return float(_read_json(directory / "metrics.json")["dev"]["f1"])


def epochs_run(directories: list[Path]) -> str:
    """The epochs each finished run trained, "15 (cap)" where it used every allowed epoch without
    stopping early (more epochs might have changed its dev F1): "12", "9, 15 (cap)"."""
    labels = []
    for directory in directories:
        metrics = _read_json(directory / "metrics.json") if run_state(directory) == "completed" else None
        if metrics and metrics.get("epochs") is not None:
            labels.append(f"{metrics['epochs']}{' (cap)' if hit_cap(directory)[0] else ''}")
    return ", ".join(labels)


def choose_strength(method: Method, scores: dict[Any, list[float]]) -> tuple[Any, str]:
    """The grid value with the best mean dev F1 over the tune seeds (ties: nearest the default, on a
    log scale where the values are positive); the default when no value has a result."""
    means = {v: statistics.fmean(s) for v, s in scores.items() if s}
    if not means:
        return method.default if method.default is not None else method.grid[len(method.grid) // 2], "no tune result"
    best = max(means.values())

    def distance(value: Any) -> float:
        if method.default is None:
            return abs(method.grid.index(value) - (len(method.grid) - 1) / 2)
        try:
            return abs(math.log(float(value) / float(method.default)))
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0 if value == method.default else 1.0

    tied = [v for v in method.grid if v in means and means[v] == best]
    return min(tied, key=distance), f"dev F1 {best:.4f}"


def grid_edges(grid: list) -> dict[Any, str]:
    """The lowest and highest value of a numeric grid of ≥ 3 values: a strength chosen there may have
    its optimum beyond the grid."""
    numeric = [v for v in grid if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numeric) < 3 or len(numeric) != len(grid):
        return {}
    return {min(numeric): "lowest", max(numeric): "highest"}


def select(profile: Profile, out: Path, dataset: str) -> tuple[dict[tuple[str, str], Any], list[dict]]:
    """The chosen strength of each (regime, method) and the stage-1 table rows."""
    chosen, rows = {}, []
    for regime in profile.regimes:
        source = regime if regime in profile.tune_regimes else profile.tune_regimes[0]
        if regime == source:
            none_dirs = [run_dir(out, Job(dataset, regime, "tune", "none", None, []), s) for s in profile.tune_seeds]
            none = [f for f in map(dev_f1, none_dirs) if f is not None]
            rows.append({"dataset": dataset, "regime": regime, "method": "none", "key": None, "value": None,
                         "dev_f1": statistics.fmean(none) if none else math.nan, "n": len(none), "chosen": False,
                         "edge": "", "epochs": epochs_run(none_dirs)})
        for m in profile.methods.values():
            if not m.tuned:
                continue
            scores: dict[Any, list[float]] = {}
            epochs: dict[Any, str] = {}
            for value in m.grid:
                job = Job(dataset, source, "tune", m.name, value, [])
                directories = [run_dir(out, job, s) for s in profile.tune_seeds]
                scores[value] = [f for f in map(dev_f1, directories) if f is not None]
                epochs[value] = epochs_run(directories)
            value, _ = choose_strength(m, scores)
            chosen[(regime, m.name)] = value
            # a choice is only shown once every grid value has run (a partial report shows none yet)
            complete = all(len(s) == len(profile.tune_seeds) for s in scores.values())
            edges = grid_edges(m.grid)
            if regime == source:
                rows += [{"dataset": dataset, "regime": regime, "method": m.name, "key": m.key, "value": v,
                          "dev_f1": statistics.fmean(s) if s else math.nan, "n": len(s),
                          "chosen": complete and v == value, "edge": edges.get(v, "") if complete and v == value
                          else "", "epochs": epochs[v]} for v, s in scores.items()]
    return chosen, rows


# -- running ---------------------------------------------------------------------------------

def write_presets(out: Path, jobs: list[Job]) -> Path:
    root = out / "presets"
    folder = root / "experiment"
    folder.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        text = preset_yaml(job.overrides)
        path = folder / f"{job.preset}.yaml"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return root


def sweep_command(out: Path, presets: Path, jobs: list[Job], seeds: list[int], stage: str, dataset: str,
                  parallel: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "regner.cli", "sweep",
            f"experiment={','.join(job.preset for job in jobs)}", f"seed={','.join(map(str, seeds))}",
            f"trainer.num_threads={threads}", "trainer.progress=false",
            f"hydra.searchpath=[file://{presets.resolve()}]",
            f"hydra.sweep.dir={(out / dataset / stage).resolve()}",
            "hydra.sweep.subdir=${hydra.runtime.choices.experiment}/seed-${seed}",
            *(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"] if parallel > 1 else [])]


def recover(directories: list[Path], threads: int, say, log_path: Path) -> None:
    """Before a sweep reruns: resume interrupted runs from their saved state; remove runs that were
    killed before saving anything (nothing of them can be kept, and a sweep refuses a used directory)."""
    for directory in directories:
        state = run_state(directory)
        if state == "abandoned":
            say(f"removing {directory}: killed before it saved any state")
            shutil.rmtree(directory)
        elif state == "interrupted":
            say(f"resuming {directory}")
            command = [sys.executable, "-m", "regner.cli", "train", f"resume={directory}",
                       f"trainer.num_threads={threads}"]
            with log_path.open("a", encoding="utf-8") as log:
                log.write(f"$ {shlex.join(['regner', *command[3:]])}\n")
                log.flush()
                subprocess.run(command, env=_thread_env(threads), stdout=log, stderr=subprocess.STDOUT)


def _thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


class Progress:
    """A rich progress bar over every run of the benchmark: done / failed / remaining and an ETA."""

    def __init__(self, directories: list[Path], enabled: bool = True):
        self.directories, self.enabled = directories, enabled
        self._bar = self._task = None

    def counts(self) -> tuple[int, int]:
        states = [run_state(d) for d in self.directories]
        done = sum(s == "completed" for s in states)
        failed = sum(s in ("failed", "diverged") for s in states)
        return done, failed

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("benchmark"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("runs", total=len(self.directories), info="")
            self.update()
        return self

    def update(self) -> None:
        if self._bar is None:
            return
        done, failed = self.counts()
        remaining = len(self.directories) - done - failed
        self._bar.update(self._task, completed=done + failed,
                         info=f"done {done}, failed {failed}, remaining {remaining}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self.update()
            self._bar.stop()


def _reap_group(pgid: int, grace: float = 30.0) -> None:
    """Once the sweep has exited, joblib's idle workers may linger in its process group: give any
    still saving its state ``grace`` seconds, then end them."""
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_sweep(command: list[str], log_path: Path, threads: int, progress: Progress, prune_runs: bool = True) -> int:
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(['regner', *command[3:]])}\n")
        log.flush()
        # Its own process group, so that an interrupt reaches every joblib worker: each saves its state and stops.
        process = subprocess.Popen(command, env=_thread_env(threads), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        stop = threading.Event()

        def poll():
            while not stop.wait(5.0):
                progress.update()
                if prune_runs:
                    prune(progress.directories)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            code = process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):  # SIGTERM: every job saves its state; the next run resumes it
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            _reap_group(process.pid)
            raise
        finally:
            stop.set()
            poller.join()
    progress.update()
    if prune_runs:
        prune(progress.directories)
    return code


# -- the report ------------------------------------------------------------------------------

def job_of(directory: Path) -> tuple[str, str, str, str]:
    """(dataset, regime, method, strength label) from a run directory ``<preset>/seed-N``."""
    preset = directory.parent.name
    dataset, regime, method, *value = preset.split(".", 3)
    return dataset, regime, method, value[0] if value else ""


def hit_cap(directory: Path) -> tuple[bool, bool]:
    """(ran every allowed epoch without early stopping, its best epoch was the last one)."""
    metrics = _read_json(directory / "metrics.json") or {}
    stopping = metrics.get("early_stopping") or {}
    capped = bool(metrics) and not stopping.get("stopped") and metrics.get("epochs") == stopping.get("max_epochs")
    return capped, bool(metrics) and metrics.get("best_epoch") == metrics.get("epochs") == stopping.get("max_epochs")


def load_throughput(path: Path) -> dict[str, dict]:
    """bench_throughput rows by regularizer name, at its first batch size."""
    rows = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    first = rows[0]["batch"] if rows else None
    return {r["regularizer"]: r for r in rows if r["batch"] == first}


def _fmt(value: float, spec: str, suffix: str = "") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec) + suffix


def collapsed_cell(row: dict) -> str:
    """"k of n" over the runs judged (completed or diverged), the failed ones named apart: a failed run
    (an error, not the method) is neither evidence for nor against it."""
    from regner.report import collapse_count

    return collapse_count(row) + (f" (+{row['failed']} failed)" if row["failed"] else "")


def final_table(rows: list[dict], profile: Profile, chosen_labels: dict, throughput: dict[str, dict]) -> list[str]:
    from regner.report import _p, _pm, format_delta

    lines = ["| method | regularizer | KL | strength | n | test F1 (mean ± std) | Δ F1 vs none [95 % CI] | "
             "p (Holm) | verdict | collapsed | hit epoch cap | cost × | memory × |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        method = r["_method"]
        spec = profile.methods.get(method)
        bench = throughput.get(spec.throughput or method) if spec else None
        # Runs in flight (a partial report) count nowhere; failed runs are named apart from the collapse count.
        caps = [hit_cap(run.path) for run in r["_runs"] if run.status == "completed"]
        mean = r[f"{r['judged_on']}_f1_mean"]
        std = r[f"{r['judged_on']}_f1_std"]
        judged = _pm(mean, std) + ("" if r["judged_on"] == "test" else " (dev)")
        strength = chosen_labels.get(method, "—")
        lines.append(" | ".join([
            f"| {method}", r["regularizer"], r["kl"], strength, str(r["n"]), judged,
            format_delta(r) if method != "none" else "baseline", _p(r["p_holm"]),
            r["verdict"], collapsed_cell(r), f"{sum(c for c, _ in caps)} of {len(caps)}",
            _fmt(bench["cost"] if bench else math.nan, ".2f", "×"),
            _fmt(bench["memory"] if bench else math.nan, ".2f", "×")]) + " |")
    return lines


def tune_table(tune_rows: list[dict], dataset: str, regime: str) -> list[str]:
    subset = [r for r in tune_rows if r["dataset"] == dataset and r["regime"] == regime]
    if not subset:
        return []
    lines = ["| method | knob | value | dev F1 (mean over tune seeds) | n | epochs run | chosen |",
             "|---|---|---|---|---|---|---|"]
    for r in subset:
        value = "—" if r["value"] is None else _value_label(r["value"])
        lines.append(f"| {r['method']} | {r['key'] or '—'} | {value} | {_fmt(r['dev_f1'], '.4f')} | {r['n']} | "
                     f"{r.get('epochs') or '—'} | {'**✓**' if r['chosen'] else ''}"
                     f"{' (grid edge)' if r.get('edge') else ''} |")
    edges = [f"{r['method']} ({r['key']}={_value_label(r['value'])}, the {r['edge']})" for r in subset if r.get("edge")]
    if edges:
        lines += ["", "Chosen at the edge of its grid, so the best strength may lie beyond it: " + ", ".join(edges) + "."]
    capped = [r for r in subset if "(cap)" in (r.get("epochs") or "")]
    if capped:
        named = ", ".join(r["method"] if r["value"] is None else f"{r['method']} ({r['key']}={_value_label(r['value'])})"
                          for r in capped)
        lines += ["", f"Used every allowed epoch without stopping early ({len(capped)} of {len(subset)} points), so more "
                      f"epochs might have changed their dev F1: {named}. Stage 2's *hit epoch cap* column counts the "
                      "same for the runs compared on test."]
    return lines


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and gain (higher), by cost."""
    front = []
    for cost, gain in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or gain > front[-1][1]:
            front.append((cost, gain))
    return front


def relative_strength(method: Method, value: Any) -> float:
    """A grid value relative to the method's default, so every curve shares one axis: the value's
    ratio, or for an EMA decay d the ratio of averaging horizons 1/(1 − d)."""
    default = float(method.default if method.default is not None else method.grid[len(method.grid) // 2])
    if method.key == "trainer.ema.decay":
        return (1.0 - default) / (1.0 - float(value))
    return float(value) / default


def plots(out: Path, rows: list[dict], tune_rows: list[dict], profile: Profile,
          throughput: dict[str, dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = sorted({(r["_dataset"], r["_regime"]) for r in rows} | {(r["dataset"], r["regime"]) for r in tune_rows})
    tune_panels = [p for p in panels if any((r["dataset"], r["regime"]) == p for r in tune_rows)]
    if tune_panels:
        fig, axes = plt.subplots(1, len(tune_panels), figsize=(6 * len(tune_panels), 4.5), squeeze=False)
        for ax, (dataset, regime) in zip(axes[0], tune_panels):
            for method in profile.methods.values():
                points = sorted((relative_strength(method, r["value"]), r["dev_f1"]) for r in tune_rows
                                if (r["dataset"], r["regime"], r["method"]) == (dataset, regime, method.name)
                                and method.tuned and not math.isnan(r["dev_f1"]))
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method.name)
            none = [r["dev_f1"] for r in tune_rows if (r["dataset"], r["regime"], r["method"]) == (dataset, regime, "none")]
            if none and not math.isnan(none[0]):
                ax.axhline(none[0], color="0.4", linestyle="--", label="none")
            ax.set_xscale("log")
            ax.set_xlabel("strength relative to the default (EMA: averaging horizon)")
            ax.set_ylabel("dev F1 (stage 1)")
            ax.set_title(f"{dataset} — {regime}", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        fig.tight_layout()
        written.append(out / "f1_vs_strength.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    final_panels = [p for p in panels if any((r["_dataset"], r["_regime"]) == p for r in rows)]
    if final_panels and throughput:
        fig, axes = plt.subplots(1, len(final_panels), figsize=(6 * len(final_panels), 4.5), squeeze=False)
        for ax, (dataset, regime) in zip(axes[0], final_panels):
            points = []
            for r in rows:
                spec = profile.methods.get(r["_method"])
                bench = throughput.get((spec.throughput if spec else None) or r["_method"])
                if (r["_dataset"], r["_regime"]) != (dataset, regime) or bench is None:
                    continue
                gain = 0.0 if r["_method"] == "none" else r["delta_vs_none"]
                if math.isnan(gain):
                    continue
                low, high = r.get("delta_ci_low", math.nan), r.get("delta_ci_high", math.nan)
                error = [[gain - low], [high - gain]] if not math.isnan(low) else None
                ax.errorbar([bench["cost"]], [gain], yerr=error, marker="o", capsize=3,
                            color="0.4" if r["_method"] == "none" else None)
                ax.annotate(r["_method"], (bench["cost"], gain), fontsize=7, xytext=(3, 3), textcoords="offset points")
                points.append((bench["cost"], gain))
            front = pareto_front(points)
            if len(front) > 1:
                ax.plot([p[0] for p in front], [p[1] for p in front], color="C3", linestyle=":", label="Pareto front")
                ax.legend(fontsize=7)
            ax.axhline(0, color="0.6", linestyle="--")
            ax.set_xlabel("time per training step relative to none (bench_throughput)")
            ax.set_ylabel("Δ test F1 vs none (95 % CI)")
            ax.set_title(f"{dataset} — {regime}", fontsize=9)
        fig.tight_layout()
        written.append(out / "cost_vs_gain.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def conclusions(rows: list[dict], profile: Profile) -> list[str]:
    """Plain-language reading, generated from the table: what is beyond noise, what is not, and the
    per-logit (globalpointer) vs softmax KL comparison (Su Jianlin's claim)."""
    from regner.report import collapse_note, is_unstable
    from regner.stats import paired_t

    def verdict_of(row: dict) -> str:  # "unstable, 1 of 2 collapsed" inside the parentheses below
        return f"unstable, {collapse_note(row)}" if is_unstable(row["verdict"]) else row["verdict"]

    lines = []
    for dataset, regime in sorted({(r["_dataset"], r["_regime"]) for r in rows}):
        subset = [r for r in rows if (r["_dataset"], r["_regime"]) == (dataset, regime) and r["_method"] != "none"]
        better = [f"{r['_method']} ({r['delta_vs_none']:+.4f})" for r in subset if r["verdict"] == "better"]
        worse = [f"{r['_method']} ({r['delta_vs_none']:+.4f})" for r in subset if r["verdict"] == "worse"]
        noise = [r["_method"] for r in subset if r["verdict"] == "within noise"]
        unstable = [f"{r['_method']} ({collapse_note(r)})" for r in subset if is_unstable(r["verdict"])]
        other = [f"{r['_method']} ({r['verdict']})" for r in subset
                 if r["verdict"] not in ("better", "worse", "within noise") and not is_unstable(r["verdict"])]
        head = f"- **{dataset}, {regime}**: "
        if not subset:
            lines.append(head + "no method besides `none` has stage-2 results yet.")
            continue
        missing = [m for m in profile.methods if m != "none" and m not in {r["_method"] for r in subset}]
        clauses = [f"better than `none` beyond noise: {', '.join(better)}" if better else
                   "no method is better than `none` beyond noise" if worse or noise else "",
                   f"worse beyond noise: {', '.join(worse)}" if worse else "",
                   f"within noise of `none`: {', '.join(noise)}" if noise else "",
                   f"unstable: {', '.join(unstable)}" if unstable else "",
                   f"not tested: {', '.join(other)}" if other else "",
                   f"no stage-2 result yet: {', '.join(missing)}" if missing else ""]
        text = head + "; ".join(c for c in clauses if c) + "."
        baseline = [r for r in rows if (r["_dataset"], r["_regime"], r["_method"]) == (dataset, regime, "none")]
        caps = [hit_cap(run.path)[0] for r in baseline for run in r["_runs"] if run.status == "completed"]
        if any(caps):  # the protocol's cap must be one `none` does not reach
            text += (f" `none` used every allowed epoch in {sum(caps)} of {len(caps)} runs: the epoch cap may be "
                     "what limits it, not convergence.")
        halves = sorted((r["delta_ci_high"] - r["delta_ci_low"]) / 2 for r in subset
                        if math.isfinite(r["delta_ci_high"]) and math.isfinite(r["delta_ci_low"]))
        if halves:  # what "within noise" means here, in F1 points
            width = f"±{100 * halves[0]:.1f}" + (f" to ±{100 * halves[-1]:.1f}" if halves[-1] > halves[0] + 5e-4 else "")
            text += (f" The paired 95 % intervals are {width} F1 points wide: a smaller true difference cannot be "
                     "told from seed noise here.")
        lines.append(text)
    lines.append("")
    lines.append("**Per-logit vs softmax KL** (Su Jianlin: the per-logit sigmoid KL slightly helps GlobalPointer with "
                 "R-Drop, a softmax KL over all spans hurts). Paired on the shared final seeds, test F1, unadjusted:")
    compared = len(lines)
    evidence = defaultdict(list)  # R-Drop settings with both variants, by regime: what the claim is about
    for base in ("rdrop", "vat"):
        for dataset, regime in sorted({(r["_dataset"], r["_regime"]) for r in rows}):
            pair = {r["kl"]: r for r in rows if (r["_dataset"], r["_regime"]) == (dataset, regime)
                    and r["regularizer"] == base}
            if "globalpointer" not in pair or "softmax" not in pair:
                continue
            per_logit, softmax = pair["globalpointer"], pair["softmax"]
            attribute = f"{per_logit['judged_on']}_f1"
            a, b = _per_seed(per_logit, attribute), _per_seed(softmax, attribute)
            shared = sorted(set(a) & set(b), key=str)
            result = paired_t([a[s] - b[s] for s in shared]) if shared else None
            verdict = ("cannot tell" if result is None or math.isnan(result.p) else
                       ("per-logit ahead" if result.delta > 0 else "softmax ahead") if result.p < 0.05 else
                       "no difference beyond noise")
            lines.append(f"- {base}, {dataset}, {regime}: per-logit KL at {per_logit.get('_strength', per_logit['strength'])} "
                         f"Δ vs none {_fmt(per_logit['delta_vs_none'], '+.4f')} ({verdict_of(per_logit)}); softmax KL "
                         f"at {softmax.get('_strength', softmax['strength'])} Δ {_fmt(softmax['delta_vs_none'], '+.4f')} ({verdict_of(softmax)}); "
                         f"per-logit − softmax {_fmt(result.delta if result else math.nan, '+.4f')}, "
                         f"p {_fmt(result.p if result else math.nan, '.3f')}: {verdict}.")
            if base == "rdrop":
                evidence[regime].append(ClaimEvidence(f"{dataset}, {regime}", per_logit["verdict"], softmax["verdict"],
                                                      verdict, result.delta if result else math.nan))
    if len(lines) == compared:
        lines.append("- not measured: no regularizer has stage-2 results with both KL variants (yet, if the benchmark "
                     "is partial).")
    for regime, items in sorted(evidence.items()):  # the claim is about fine-tuning: each regime apart
        lines += ["", claim_reading(items, regime)]
    return lines


class ClaimEvidence(NamedTuple):
    """One R-Drop setting with both KL variants, as the claim reading weighs it."""
    setting: str      # "weibo, pretrained"
    per_logit: str    # the per-logit row's verdict vs none
    softmax: str      # the softmax row's verdict vs none
    pair: str         # per-logit vs softmax: "per-logit ahead", "softmax ahead", "no difference ...", "cannot tell"
    delta: float      # per-logit − softmax, paired (nan when no shared seed)


def claim_reading(evidence: list[ClaimEvidence], regime: str = "") -> str:
    """Whether the R-Drop results agree with Su Jianlin's claim. Only differences beyond noise and
    collapsed seeds (which count against their variant) are evidence; the direction of the point
    estimates is said apart, as what it is."""
    from regner.report import is_unstable

    n = len(evidence)
    counts = {
        "per-logit better than `none`": [e.setting for e in evidence if e.per_logit == "better"],
        "softmax worse than `none`": [e.setting for e in evidence if e.softmax == "worse"],
        "per-logit ahead of softmax": [e.setting for e in evidence if e.pair == "per-logit ahead"],
        "softmax with collapsed seeds": [e.setting for e in evidence if is_unstable(e.softmax)],
    }
    against = {
        "per-logit worse than `none`": [e.setting for e in evidence if e.per_logit == "worse"],
        "softmax better than `none`": [e.setting for e in evidence if e.softmax == "better"],
        "softmax ahead of per-logit": [e.setting for e in evidence if e.pair == "softmax ahead"],
        "per-logit with collapsed seeds": [e.setting for e in evidence if is_unstable(e.per_logit)],
    }

    def listed(found: dict[str, list[str]]) -> str:
        return "; ".join(f"{what} in {len(where)} of {n} ({', '.join(where)})" for what, where in found.items() if where)

    supports, contradicts = listed(counts), listed(against)
    if supports and contradicts:
        reading = f"are mixed: for it, {supports}; against it, {contradicts}"
    elif supports:
        reading = f"agree where a difference is beyond noise: {supports}; nothing against it"
    elif contradicts:
        reading = f"disagree: {contradicts}; nothing for it"
    else:
        reading = "neither confirm nor contradict it: no R-Drop difference is beyond seed noise and no seed collapsed"
    deltas = [e.delta for e in evidence if math.isfinite(e.delta)]
    direction = (f" The point estimates put per-logit ahead of softmax in {sum(d > 0 for d in deltas)} of {len(deltas)} "
                 "settings (a direction, not evidence on its own)." if deltas else "")
    title = f"Verdict on the claim{f', {regime} regime' if regime else ''}"
    return (f"**{title}** (R-Drop, {n} setting(s) with both KL variants; vs `none` Holm-corrected, per-logit vs "
            f"softmax unadjusted): regner's results {reading}.{direction}")


def _relative(path: Path, out: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _per_seed(row: dict, attribute: str) -> dict:
    values: dict[str, list[float]] = defaultdict(list)
    for run in row["_runs"]:
        if run.status == "completed" and not run.collapsed and not math.isnan(getattr(run, attribute)):
            values[json.dumps(run.seed)].append(getattr(run, attribute))
    return {seed: statistics.fmean(v) for seed, v in values.items()}


def build(out: Path, profile: Profile, preamble: str = "") -> tuple[str, list[dict]]:
    """Write ``report.md``, ``report.csv``, ``stage1.csv`` and the plots into ``out`` from what has run."""
    from regner.report import collect_runs, csv_text, group_runs, summarize
    from regner.runio import atomic_write_text

    final_dirs = [out / d / "final" for d in profile.datasets if (out / d / "final").exists()]
    records = collect_runs(final_dirs) if final_dirs else []
    # a partial report: runs still in flight (or interrupted) are listed, not tabled as rows without data
    in_flight = [r for r in records if r.status not in FINISHED]
    rows = summarize(group_runs([r for r in records if r.status in FINISHED]))  # Holm over every row of the report
    for row in rows:
        row["_dataset"], row["_regime"], row["_method"], _ = job_of(row["_runs"][0].path)
    order = {name: i for i, name in enumerate(profile.methods)}
    rows.sort(key=lambda r: (list(profile.datasets).index(r["_dataset"]) if r["_dataset"] in profile.datasets else 99,
                             list(profile.regimes).index(r["_regime"]) if r["_regime"] in profile.regimes else 99,
                             order.get(r["_method"], 99)))
    throughput = load_throughput(out / "throughput.json")
    tune_rows, chosen = [], {}
    for dataset in profile.datasets:
        if (out / dataset / "tune").exists():
            picked, stage1 = select(profile, out, dataset)
            tune_rows += stage1
            chosen.update({(dataset, *k): v for k, v in picked.items()})
    parts = [f"# regner benchmark v2 — profile `{profile.name}`", ""]
    if preamble:
        parts += [preamble, ""]
    parts += [
        "Protocol: [docs/benchmarks/PROTOCOL.md](../PROTOCOL.md). Stage 1 tunes each method's strength on dev "
        f"(seeds {', '.join(map(str, profile.tune_seeds))}, regimes {', '.join(profile.tune_regimes)}); stage 2 runs "
        f"`none` and every method at its chosen strength with seeds {', '.join(map(str, profile.final_seeds))} "
        "(same seed = same initialisation and data order). **Δ F1 vs none** is the mean per-seed difference "
        "of test F1 (dev where a dataset has no test split, marked), with its 95 % t interval (unadjusted); the "
        "verdict is *better*/*worse* only when the paired t test's p, Holm-corrected over every row of this "
        "report, is below 0.05. A run with dev F1 < 0.05 or a non-finite loss is *collapsed* and makes its row "
        "*unstable*. **Hit epoch cap**: runs that used every allowed epoch without early stopping (then more "
        "epochs might have helped). **Cost ×** and **memory ×**: time per training step and peak memory relative "
        "to `none`, measured alone in one process by `scripts/bench_throughput.py` "
        f"({'`throughput.md`' if throughput else 'not measured yet'}).", ""]
    for dataset in profile.datasets:
        for regime in profile.regimes:
            subset = [r for r in rows if (r["_dataset"], r["_regime"]) == (dataset, regime)]
            tune = tune_table(tune_rows, dataset, regime)
            if not subset and not tune:
                continue
            parts += [f"## {dataset} — {regime}", ""]
            if subset:
                labels = {m: f"{profile.methods[m].key}={_value_label(chosen[(dataset, regime, m)])}"
                          for m in profile.methods if (dataset, regime, m) in chosen}
                for r in subset:  # the reading names the strength as the table does (the profile's knob)
                    r["_strength"] = labels.get(r["_method"], r["strength"])
                parts += final_table(subset, profile, labels, throughput) + [""]
            else:
                parts += ["Stage 2 has not run yet for this dataset and regime.", ""]
            if tune:
                source = regime if regime in profile.tune_regimes else profile.tune_regimes[0]
                parts += [f"Stage 1 (strength on dev{'' if source == regime else f', tuned in the {source} regime'}):",
                          ""] + tune + [""]
            elif regime not in profile.tune_regimes:
                parts += [f"Strengths tuned in the {profile.tune_regimes[0]} regime (stage 1 there).", ""]
    if rows:
        parts += ["## Reading", ""] + conclusions(rows, profile) + [""]
    written = plots(out, rows, tune_rows, profile, throughput) if (rows or tune_rows) else []
    if written:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in written] + [""]
    failed = [r for row in rows for r in row["_runs"] if r.status not in ("completed", "diverged")]
    for title, runs in (("Failed runs", failed), ("Unfinished runs (resumed by `make benchmark`)", in_flight)):
        if runs:
            parts += [f"## {title}", ""] + [f"- `{_relative(r.path, out)}`: {r.status}" + (f": {r.reason}" if r.reason else "")
                                                 for r in runs] + [""]
    text = "\n".join(parts)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.csv", csv_text([{"regime": r["_regime"], "method": r["_method"], **r}
                                                     for r in rows]) if rows else "")
    if tune_rows:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(tune_rows[0]))
        writer.writeheader()
        writer.writerows(tune_rows)
        atomic_write_text(out / "stage1.csv", buffer.getvalue())
    return text, rows


# -- the driver ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
FINISHED = ("completed", "failed", "diverged")


def machine_description() -> str:
    import platform

    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
        version = f"torch {torch.__version__}"
    except ImportError:
        device, version = f"CPU, {os.cpu_count()} cores", "torch ?"
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    return f"{device} ({model or platform.machine()}, Python {platform.python_version()}, {version})"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def profile_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else REPO / "scripts" / "matrices" / f"{name}.yaml"


def encoder_fingerprint(encoder: str | None) -> str:
    """sha256 of the encoder directory's config, weights and tokenizer: a benchmark continued in
    another session must fine-tune the very same encoder (``make pretrain`` reruns give it bit for bit
    on the same machine type, and this checks it)."""
    if not encoder:
        return "none"
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt"):
        path = Path(encoder) / name
        if path.exists():
            digest.update(name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


# Heavy files a finished benchmark run does not need (the report reads metrics.json, status.json and
# config.yaml): removed as runs complete unless the profile sets keep_checkpoints, and ignored by git,
# so that a benchmark directory can be committed with its raw results.
PRUNED = ("checkpoint", "last")
GITIGNORE = "# written by regner.benchmark: what a finished benchmark run does not need\n" \
            "checkpoint/\nlast/\n.hydra/\ntensorboard/\nregner.log\n.regner.lock\n*.tmp\npresets/\n*.log\nmultirun.yaml\n"


def prune(directories: list[Path]) -> None:
    """Remove the checkpoint and resumable state of completed runs (disk: ~75 MB each for zh-mini)."""
    for directory in directories:
        if run_state(directory) == "completed":
            for name in PRUNED:
                shutil.rmtree(directory / name, ignore_errors=True)


def claim_out(out: Path, profile_file: Path, encoder: str | None) -> None:
    """``out`` holds this benchmark only: a rerun with the same profile and encoder continues it;
    another profile or encoder (whose runs would be mistaken for these) is refused."""
    spec = yaml.safe_load(profile_file.read_text(encoding="utf-8"))  # its content: comments may change
    spec.pop("description", None)
    identity = yaml.safe_dump({"profile": spec, "encoder": str(encoder),
                               "encoder_sha256": encoder_fingerprint(encoder)}, allow_unicode=True, sort_keys=True)
    saved = out / "profile.yaml"
    if saved.exists() and saved.read_text(encoding="utf-8") != identity:
        raise ProfileError(f"{out} holds a benchmark of another profile or encoder ({saved} differs from "
                           f"{profile_file}); continue it with that profile, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        saved.write_text(identity, encoding="utf-8")
    if not (out / ".gitignore").exists():
        (out / ".gitignore").write_text(GITIGNORE, encoding="utf-8")


class Ledger:
    """Wall time of every invocation of the benchmark on ``out``, so a resumed one states its total."""

    def __init__(self, out: Path):
        self.path, self.start = out / "timing.json", time.time()
        self.data = _read_json(self.path) or {"invocations": []}

    def save(self, finished: bool | None = None) -> None:
        """Record this invocation so far (``finished`` None: still running, as written every minute while
        it runs, so a machine that goes away mid-run still leaves its time)."""
        from regner.runio import atomic_write_json

        started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.start))
        entry = {"started": started, "seconds": round(time.time() - self.start, 1), "finished": bool(finished),
                 "machine": machine_description()}
        runs = [r for r in self.data["invocations"] if r.get("started") != started]
        atomic_write_json(self.path, {**self.data, "invocations": [*runs, entry]})
        self.saved = time.time()

    def close(self, finished: bool) -> None:
        self.save(finished)
        self.data = _read_json(self.path) or self.data

    def tick(self) -> None:
        if time.time() - getattr(self, "saved", 0.0) > 60:
            self.save()

    def machines(self) -> list[str]:
        """The machines the recorded invocations ran on, each once, in order of first use."""
        return list(dict.fromkeys(i["machine"] for i in self.data["invocations"] if i.get("machine")))

    def summary(self, include_now: bool = True) -> str:
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.start))
        runs = [r for r in self.data["invocations"] if r.get("started") != started]
        total = sum(i["seconds"] for i in runs) + (time.time() - self.start if include_now else 0.0)
        return (f"{total / 3600:.2f} h of wall time in {len(runs) + include_now} invocation(s) "
                f"(first started {runs[0]['started'] if runs else time.strftime('%Y-%m-%d %H:%M')})")


def planned_runs(profile: Profile) -> int:
    """How many runs the whole benchmark makes: stage 1's grid × tune seeds, stage 2's methods × regimes × seeds."""
    return sum(len(tune_jobs(profile, d)) * len(profile.tune_seeds) + len(profile.regimes) *
               len(profile.methods) * len(profile.final_seeds) for d in profile.datasets)


def run_directories(out: Path, profile: Profile) -> list[Path]:
    """Every run directory the benchmark on ``out`` has made so far, both stages, every dataset."""
    return [p for d in profile.datasets for s in STAGES for p in (out / d / s).glob("*/seed-*")]


def reproduce_command(profile: Profile) -> str:
    return f"make benchmark{'' if profile.name == 'cpu' else ' PROFILE=' + profile.name}"


def schedule(profile: Profile) -> list[tuple[str, str, list[int]]]:
    """The sweeps in the order they run, as (dataset, stage, seeds): stage 1 of every dataset first, then
    stage 2 one seed at a time across every dataset. The results do not depend on the order (each run is
    fixed by its seed); what does is the partial report of an interrupted benchmark, which then covers every
    dataset and regime on the same seeds instead of one dataset fully and the next not at all."""
    return [*((d, "tune", list(profile.tune_seeds)) for d in profile.datasets),
            *((d, "final", [s]) for s in profile.final_seeds for d in profile.datasets)]


def _pending(out: Path, jobs: list[Job], seeds: list[int]) -> list[Job]:
    return [job for job in jobs if any(run_state(run_dir(out, job, s)) not in FINISHED for s in seeds)]


def run_stage(out: Path, dataset: str, stage: str, jobs: list[Job], seeds: list[int], parallel: int, threads: int,
              progress: Progress, say, prune_runs: bool = True) -> int:
    pending = _pending(out, jobs, seeds)
    if not pending:
        return 0
    presets = write_presets(out, pending)
    recover([run_dir(out, job, s) for job in pending for s in seeds], threads * parallel, say,
            out / f"{dataset}-{stage}.log")
    pending = _pending(out, pending, seeds)
    if not pending:
        return 0
    say(f"{dataset} {stage}: {len(pending)} preset(s) × seed(s) {','.join(map(str, seeds))}, {parallel} job(s) in parallel with "
        f"{threads} thread(s) each")
    return run_sweep(sweep_command(out, presets, pending, seeds, stage, dataset, parallel, threads),
                     out / f"{dataset}-{stage}.log", threads, progress, prune_runs)


def run_throughput(out: Path, profile: Profile, say) -> None:
    if (out / "throughput.json").exists() or not profile.throughput:
        return
    say("measuring time per step and peak memory of every method alone (scripts/bench_throughput.py)")
    rows = [m.throughput or m.name for m in profile.methods.values()]
    command = [sys.executable, str(REPO / "scripts" / "bench_throughput.py"), *profile.throughput,
               "--regularizers", ",".join(dict.fromkeys(["none", *rows])),
               "--json", str(out / "throughput.json.tmp"), "--out", str(out / "throughput.md")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        say(f"bench_throughput failed (costs left out of the report):\n{result.stderr[-2000:]}")
        return
    (out / "throughput.json.tmp").replace(out / "throughput.json")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/benchmark.py", description=(
        "Benchmark v2 (docs/benchmarks/PROTOCOL.md): stage 1 tunes each regularizer's strength on dev, stage 2 "
        "compares the chosen strengths with none over shared seeds, in a pretrained and a random-init regime."))
    parser.add_argument("--profile", default="cpu", help="scripts/matrices/<profile>.yaml, or a path (default: cpu)")
    parser.add_argument("--out", help="benchmark directory (default outputs/benchmark/<profile>); rerun to continue")
    parser.add_argument("--encoder", help="the pretrained encoder directory ({encoder} in the profile's regimes)")
    parser.add_argument("--jobs", type=int, help="runs in parallel (default: the profile's; threads = cores ÷ jobs)")
    parser.add_argument("--datasets", help="comma list: only these of the profile's datasets")
    parser.add_argument("--report-only", action="store_true", help="write the report from what has run, run nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the stage-1 sweeps and the stage-2 plan")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"benchmark: {message}", file=sys.stderr, flush=True)

    try:
        file = profile_path(args.profile)
        if not file.exists():
            raise ProfileError(f"no profile {file}; profiles: "
                               f"{', '.join(p.stem for p in sorted((REPO / 'scripts' / 'matrices').glob('*.yaml')))}")
        profile = load_profile(file, args.encoder)
        if args.datasets:
            unknown = [d for d in args.datasets.split(",") if d not in profile.datasets]
            if unknown:
                raise ProfileError(f"--datasets: {unknown} not in the profile ({', '.join(profile.datasets)})")
            profile.datasets = {d: profile.datasets[d] for d in args.datasets.split(",")}
        if profile.encoder and not args.dry_run and not (Path(profile.encoder) / "config.json").exists():
            raise ProfileError(f"the pretrained encoder {profile.encoder} does not exist: run `make pretrain` first "
                               "(about an hour on 2 CPU cores), or pass --encoder DIR (a Hugging Face BERT directory)")
        out = Path(args.out or REPO / "outputs" / "benchmark" / profile.name).resolve()
        parallel = max(1, args.jobs or profile.jobs)
        threads = max(1, (os.cpu_count() or 1) // parallel)
        if args.dry_run:
            for dataset in profile.datasets:
                jobs = tune_jobs(profile, dataset)
                print(shlex.join(["regner", *sweep_command(out, out / "presets", jobs, profile.tune_seeds, "tune",
                                                           dataset, parallel, threads)[3:]]))
                for job in jobs:
                    print(f"  {job.preset}: {' '.join(job.overrides)}")
                final = final_jobs(profile, dataset, {(r, m): "<chosen>" for r in profile.regimes
                                                      for m in profile.methods})
                print(f"then stage 2: {len(final)} presets × seeds {profile.final_seeds}")
            print("order: " + ", ".join(f"{d} {'stage 1' if st == 'tune' else 'stage 2'} seed(s) "
                                        f"{','.join(map(str, seeds))}" for d, st, seeds in schedule(profile)))
            return 0
        if args.report_only:
            ledger = Ledger(out)
            planned = planned_runs(profile)
            done = sum(run_state(p) in FINISHED for p in run_directories(out, profile))
            command = reproduce_command(profile)
            written = f"{profile.description}. Report written {time.strftime('%Y-%m-%d %H:%M %Z')}"
            if done < planned:
                preamble = (f"{written} from what has run: **{done} of {planned} runs finished** (partial results); "
                            f"wall time so far: {ledger.summary(include_now=False)}. Continue with `{command}`.")
            else:
                preamble = (f"{written}: **{done} of {planned} runs finished**; the benchmark took "
                            f"{ledger.summary(include_now=False)} on {'; '.join(ledger.machines()) or 'unrecorded machines'}. "
                            f"Reproduce: `{command}`.")
            build(out, profile, preamble)
            say(f"report: {out / 'report.md'}")
            return 0
        claim_out(out, file, profile.encoder)
    except ProfileError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2

    ledger, finished, failures = Ledger(out), False, 0
    signal.signal(signal.SIGTERM, _interrupt)
    progress = TotalProgress(lambda: run_directories(out, profile), planned_runs(profile),
                             enabled=not args.no_progress, ledger=ledger)
    try:
        with progress:
            chosen: dict[str, dict] = {}
            for dataset, stage, seeds in schedule(profile):
                if stage == "tune":
                    jobs = tune_jobs(profile, dataset)
                else:  # stage 1 of this dataset has run: its choices are final
                    if dataset not in chosen:
                        chosen[dataset], _ = select(profile, out, dataset)
                    jobs = final_jobs(profile, dataset, chosen[dataset])
                failures += run_stage(out, dataset, stage, jobs, seeds, parallel, threads, progress, say,
                                      not profile.keep_checkpoints) != 0
        run_throughput(out, profile, say)
        finished = True
    except KeyboardInterrupt:
        say(f"interrupted: every run saved its state; rerun the same command to continue ({out})")
        return 130
    finally:
        preamble = (f"{profile.description}. Machine: {machine_description()}. Report written "
                    f"{time.strftime('%Y-%m-%d %H:%M %Z')}; the benchmark has taken {ledger.summary()}"
                    f"{'' if finished else ' so far (unfinished: partial results)'}; {parallel} run(s) in parallel "
                    f"with {threads} thread(s) each. Reproduce: `{reproduce_command(profile)}`.")
        ledger.close(finished)
        build(out, profile, preamble)
    say(f"report: {out / 'report.md'}")
    return 1 if failures else 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class TotalProgress(Progress):
    """Progress over every run the benchmark will make (stage-2 directories exist only once chosen);
    each update also records the wall time so far in the ledger."""

    def __init__(self, directories, total: int, enabled: bool = True, ledger: Ledger | None = None):
        super().__init__([], enabled)
        self._list, self.total, self.ledger = directories, total, ledger

    def counts(self) -> tuple[int, int]:
        self.directories = self._list()
        return super().counts()

    def update(self) -> None:
        self.directories = self._list()
        super().update()
        if self.ledger is not None:
            self.ledger.tick()

    def __enter__(self):
        super().__enter__()
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)
        return self
