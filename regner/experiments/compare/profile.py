"""A comparison profile (``conf/compare/<name>.yaml``, the keys of ``regner compare``): what is compared
(datasets × regimes × methods with strength grids), how (racing, the sequential design) and within what
budget; checked whole before any data is read or any run is planned."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.errors import UserError
from regner.experiments.benchmark.profile import Method
from regner.experiments.compare.contrasts import Contrast, parse_contrasts
from regner.experiments.compare.curves import parse_curves
from regner.experiments.compare.estimate import Estimate, parse_estimate
from regner.experiments.compare.sequential import SPENDING, Design


class CompareError(UserError):
    """A comparison profile or option that cannot be run as written: names the key."""


@dataclass
class Tuning:
    seeds: list[int]
    rungs: tuple[int, ...]
    regimes: list[str]
    drop_alpha: float
    extend_grid: bool
    datasets: list[str] = field(default_factory=list)  # raced on; the others use the first one's choice


@dataclass
class CompareProfile:
    name: str
    description: str
    datasets: dict[str, list[str]]
    regimes: dict[str, list[str]]
    common: list[str]
    methods: dict[str, Method]
    tuning: Tuning
    seeds: list[int]
    design: Design
    max_runs: int | None
    max_hours: float | None
    jobs: int
    jobs_per_device: int
    devices: str
    encoder: str | None  # the pretrained encoder directory ({encoder} in the regimes)
    cache: list[str]
    throughput: list[str] = field(default_factory=list)
    estimate: Estimate | None = None  # the expected time before any run is cached (estimate.py)
    contrasts: list[Contrast] = field(default_factory=list)  # method against method, from the runs (contrasts.py)
    # a regime may be a small contrast: only some methods, on some datasets (default: all of them)
    regime_methods: dict[str, list[str]] = field(default_factory=dict)
    regime_datasets: dict[str, list[str]] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # learning curves (curves.py)
    # a method may run on some datasets only (a semi-supervised one where the training split leaves unlabeled text)
    method_datasets: dict[str, list[str]] = field(default_factory=dict)

    def methods_in(self, regime: str, dataset: str) -> list[str]:
        """The methods compared on ``dataset`` in ``regime``, in profile order (none first)."""
        return [m for m in self.regime_methods.get(regime) or self.methods
                if dataset in self.method_datasets.get(m, [dataset])]

    def cells(self) -> list[tuple[str, str]]:
        """Every (dataset, regime) the profile compares, in profile order."""
        return [(d, r) for d in self.datasets for r in self.regimes if d in (self.regime_datasets.get(r) or [d])]

    @property
    def rows(self) -> int:
        """The family of the better/worse verdicts: every (dataset, regime, method) compared with none."""
        return sum(len(self.methods_in(r, d)) - 1 for d, r in self.cells())


def locate(path: str) -> str:
    """A profile's relative path (a cache, the encoder) as the working directory has it, else as the
    checkout whose conf/ holds the profiles has it (a profile names docs/... and outputs/... of the repo)."""
    from regner.config.paths import config_dir

    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return str(given)
    checkout = Path(config_dir()).parent / given
    return str(checkout) if checkout.exists() else str(given)


def _fail(key: str, message: str) -> CompareError:
    return CompareError(f"{key}: {message}")


def _overrides(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(o, str) and "=" in o for o in value):
        raise _fail(key, f"a list of overrides (group=option or key=value), got {value!r}")
    for override in value:
        if override.split("=", 1)[0].startswith(("+", "~", "hydra")):
            raise _fail(key, f"{override!r}: only group=option and key=value are supported")
    return list(value)


def _seed_list(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in value):
        raise _fail(key, f"a non-empty list of integer seeds, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(key, f"seeds must be distinct, got {value}")
    return list(value)


def _increasing(value: Any, key: str, low: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(n, int) and n >= low for n in value) \
            or value != sorted(set(value)):
        raise _fail(key, f"an increasing list of seed counts ≥ {low}, got {value!r}")
    return tuple(value)


def _count(value: Any, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(key, f"an integer ≥ {low}, got {value!r}")
    return value


def _number(spec: dict, key: str, low: float, high: float, optional: bool = False) -> float | None:
    value = spec.get(key.rsplit(".", 1)[-1])
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise _fail(key, f"a number in ({low:g}, {high:g}), got {value!r}")
    return float(value)


def load_profile(spec: dict, name: str) -> CompareProfile:
    """Check a profile (the comparison config as a plain dict, interpolations unresolved) and build it."""
    for key in ("datasets", "regimes", "methods"):
        if not isinstance(spec.get(key), dict) or not spec[key]:
            raise _fail(key, "a non-empty mapping (the profile, compare=<name>, sets it)")
    datasets = {n: _overrides(o, f"datasets.{n}") for n, o in spec["datasets"].items()}
    regimes_raw, regime_methods, regime_datasets = {}, {}, {}
    for n, r in spec["regimes"].items():
        if isinstance(r, dict):
            unknown = sorted(set(r) - {"overrides", "methods", "datasets"})
            if unknown:
                raise _fail(f"regimes.{n}", f"unknown key(s) {unknown}; a regime has overrides, methods, datasets")
            for key, names, known in (("methods", regime_methods, spec["methods"]), ("datasets", regime_datasets,
                                                                                   datasets)):
                chosen = r.get(key)
                if chosen is None:
                    continue
                if not isinstance(chosen, list) or not chosen or any(c not in known for c in chosen):
                    raise _fail(f"regimes.{n}.{key}", f"a list of the profile's {key} ({', '.join(known)}), got "
                                f"{chosen!r}")
                names[n] = [c for c in known if c in chosen]  # in profile order
            if n in regime_methods and ("none" not in regime_methods[n] or len(regime_methods[n]) < 2):
                raise _fail(f"regimes.{n}.methods", "must include none and at least one other method")
            r = r.get("overrides")
        regimes_raw[n] = _overrides(r, f"regimes.{n}")
    uses_encoder = any("{encoder}" in o for overrides in regimes_raw.values() for o in overrides)
    encoder = spec.get("encoder_dir")
    if encoder and not uses_encoder:
        raise _fail("encoder_dir", "given, but this profile's regimes use no pretrained encoder ({encoder}); drop it")
    if uses_encoder and not encoder:
        raise _fail("encoder_dir", "the regimes use {encoder}: pass encoder_dir=DIR (a Hugging Face BERT directory, e.g. "
                    "outputs/pretrained/zh-mini from `make pretrain`)")
    encoder = locate(str(encoder)) if uses_encoder else None
    regimes = {n: [o.replace("{encoder}", encoder or "") for o in overrides] for n, overrides in regimes_raw.items()}
    methods, method_datasets = {}, {}
    for method, m in spec["methods"].items():
        where = f"methods.{method}"
        if isinstance(m, list) or m is None:
            m = {"overrides": m}
        if not isinstance(m, dict):
            raise _fail(where, f"overrides, or a mapping with overrides, grid, default; got {m!r}")
        unknown = sorted(set(m) - {"overrides", "grid", "default", "throughput", "datasets"})
        if unknown:
            raise _fail(where, f"unknown key(s) {unknown}; a method has overrides, grid, default, throughput, datasets")
        if m.get("datasets") is not None:
            if method == "none" or not isinstance(m["datasets"], list) or not m["datasets"] \
                    or any(d not in datasets for d in m["datasets"]):
                raise _fail(f"{where}.datasets", f"a list of the profile's datasets ({', '.join(datasets)}) for a method "
                            f"other than none, got {m['datasets']!r}")
            method_datasets[method] = [d for d in datasets if d in m["datasets"]]
        grid = m.get("grid") or {}
        if not isinstance(grid, dict) or len(grid) > 1:
            raise _fail(f"{where}.grid", f"one knob and its values ({{knob: [values]}}), got {grid!r}")
        key, values = next(iter(grid.items())) if grid else (None, [])
        if grid and (not isinstance(values, list) or not values or len(set(map(str, values))) != len(values)):
            raise _fail(f"{where}.grid.{key}", f"a non-empty list of distinct values, got {values!r}")
        methods[method] = Method(method, _overrides(m.get("overrides"), f"{where}.overrides"), key, list(values),
                                 m.get("default"), m.get("throughput"))
    if "none" not in methods or methods["none"].tuned:
        raise _fail("methods", "must include `none` (the baseline every method is compared with), without a grid")
    if len(methods) < 2:
        raise _fail("methods", "name at least one method besides none")
    tune = spec.get("tune") or {}
    tune_seeds = _seed_list(tune.get("seeds"), "tune.seeds")
    rungs = _increasing(tune.get("rungs"), "tune.rungs", 1)
    if rungs[-1] > len(tune_seeds):
        raise _fail("tune.rungs", f"the last rung ({rungs[-1]} seeds) needs that many tune.seeds, got {len(tune_seeds)}")
    tune_regimes = tune.get("regimes") or list(regimes)
    if not isinstance(tune_regimes, list) or any(r not in regimes for r in tune_regimes):
        raise _fail("tune.regimes", f"a list of the profile's regimes ({', '.join(regimes)}), got {tune_regimes!r}")
    tune_datasets = tune.get("datasets") or list(datasets)
    if not isinstance(tune_datasets, list) or any(d not in datasets for d in tune_datasets):
        raise _fail("tune.datasets", f"a list of the profile's datasets ({', '.join(datasets)}), got {tune_datasets!r}")
    for regime in regimes:  # a tuned method takes its strength from a race: one must run it
        source = regime if regime in tune_regimes else tune_regimes[0]
        missing = [m for m in regime_methods.get(regime, methods) if methods[m].tuned
                   and m not in regime_methods.get(source, methods)]
        if missing:
            raise _fail(f"regimes.{regime}.methods", f"{', '.join(missing)} is tuned, but not raced in {source}")
        if regime in tune_regimes and not set(regime_datasets.get(regime, datasets)) & set(tune_datasets):
            raise _fail("tune.datasets", f"regime {regime} is tuned but compares none of the tune datasets")
    for method, only in method_datasets.items():
        if methods[method].tuned and not set(tune_datasets) <= set(only):
            raise _fail(f"methods.{method}.datasets", f"{method} is tuned: its datasets must include every tune dataset "
                        f"({', '.join(tune_datasets)})")
    drop_alpha = _number(tune, "tune.drop_alpha", 0.0, 0.5)
    seeds = _seed_list(spec.get("seeds"), "seeds")
    shared = sorted(set(seeds) & set(tune_seeds))
    if shared:
        raise _fail("seeds", f"the comparison's seeds must differ from tune.seeds (the runs that chose a strength "
                    f"must not judge it); shared: {shared}")
    looks = _increasing(spec.get("looks"), "looks", 2)
    if looks[-1] > len(seeds):
        raise _fail("looks", f"the last look ({looks[-1]} seeds) needs that many seeds, got {len(seeds)}")
    spending = spec.get("spending", "obrien_fleming")
    if spending not in SPENDING:
        raise _fail("spending", f"one of {', '.join(SPENDING)}, got {spending!r}")
    target = _number(spec, "target_mde", 0.0, 1.0)
    budget = spec.get("budget") or {}
    max_runs = budget.get("max_runs")
    if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1):
        raise _fail("budget.max_runs", f"a positive integer or null (no limit), got {max_runs!r}")
    max_hours = _number(budget, "budget.max_hours", 0.0, math.inf, optional=True)
    jobs, per_device = spec.get("jobs", 1), spec.get("jobs_per_device", 1)
    for key, value in (("jobs", jobs), ("jobs_per_device", per_device)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(key, f"a positive integer, got {value!r}")
    devices = str(spec.get("devices", "auto"))
    if devices not in ("auto", "cpu") and not all(d.strip().isdigit() for d in devices.split(",")):
        raise _fail("devices", f"auto, cpu, or a comma list of GPU indices (0,1), got {devices!r}")
    cache = spec.get("cache") or []
    if not isinstance(cache, list) or not all(isinstance(c, str) for c in cache):
        raise _fail("cache", f"a list of directories or runs.jsonl.gz files whose runs may be reused, got {cache!r}")
    rows = sum(len([m for m in regime_methods.get(r, methods) if d in method_datasets.get(m, [d])]) - 1
               for d in datasets for r in regimes if d in regime_datasets.get(r, [d]))
    design = Design(looks=looks, alpha=_number(spec, "alpha", 0.0, 1.0), methods=max(1, rows), delta=target, equivalence_alpha=_number(spec, "equivalence_alpha", 0.0, 0.5),
                    spending=spending, futility_power=_number(spec, "futility_power", 0.0, 1.0),
                    futility_from=_count(spec.get("futility_from", 2), "futility_from", 2),
                    power=_number(spec, "power", 0.0, 1.0))
    throughput = [str(a).replace("{encoder}", encoder or "") for a in spec.get("throughput") or []]
    return CompareProfile(name, str(spec.get("description") or ""), datasets, regimes,
                          _overrides(spec.get("common"), "common"), methods,
                          Tuning(tune_seeds, rungs, tune_regimes, drop_alpha, bool(tune.get("extend_grid", True)),
                                 [d for d in datasets if d in tune_datasets]),
                          seeds, design, max_runs, max_hours, jobs, per_device, devices, encoder,
                          [locate(c) for c in cache], throughput,
                          parse_estimate(spec.get("estimate"), list(datasets), list(methods), _fail),
                          parse_contrasts(spec.get("contrasts"), list(methods), _fail), regime_methods, regime_datasets,
                          parse_curves(spec.get("curves"), datasets, _fail), method_datasets)
