"""A benchmark profile (``scripts/matrices/<name>.yaml``): datasets, regimes, methods with their
strength grids, seeds; and the jobs, presets and schedule it plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    encoder_given: bool = False  # the encoder came from --encoder (ENCODER=), not the profile's default


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
    for section in ("regimes", "datasets"):
        for name, overrides in spec[section].items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ProfileError(f"{where}: {section}.{name} must be a list of overrides (key=value), got {overrides!r}")
    uses_encoder = any("{encoder}" in o for overrides in spec["regimes"].values() for o in overrides)
    if encoder and not uses_encoder:
        raise ProfileError(f"{where}: --encoder (ENCODER=) was given but this profile's regimes use no pretrained "
                           "encoder ({encoder}); drop it, or use a profile that does (cpu, gpu)")
    given, encoder = bool(encoder), (encoder or spec.get("encoder")) if uses_encoder else None
    if uses_encoder and not encoder:
        raise ProfileError(f"{where}: the regimes use {{encoder}} but no encoder directory was given: pass "
                           "--encoder DIR (with make: ENCODER=DIR), e.g. outputs/pretrained/zh-mini from `make pretrain`")
    regimes = {name: [o.replace("{encoder}", str(encoder)) for o in overrides]
               for name, overrides in spec["regimes"].items()}
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
                   bool(spec.get("keep_checkpoints", False)), given)


def profile_spec(profile_file: Path) -> dict:
    """The profile as a benchmark directory records it (``profile.yaml``'s ``profile``): its content
    without the description (comments and the description may change without changing the benchmark)."""
    spec = yaml.safe_load(Path(profile_file).read_text(encoding="utf-8"))
    spec.pop("description", None)
    return spec


def value_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def preset_name(dataset: str, regime: str, method: str, value: Any = None) -> str:
    """``weibo.pretrained.rdrop.3``: one experiment preset (and the run directory's name)."""
    name = f"{dataset}.{regime}.{method}" + ("" if value is None else f".{value_label(value)}")
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
    return "# @package _global_\n# generated by regner.experiments.benchmark\n" + yaml.safe_dump(body, allow_unicode=True,
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


REPO = Path(__file__).resolve().parents[3]  # the checkout: scripts/matrices/ and outputs/ live there


def profile_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else REPO / "scripts" / "matrices" / f"{name}.yaml"


def planned_runs(profile: Profile) -> int:
    """How many runs the whole benchmark makes: stage 1's grid × tune seeds, stage 2's methods × regimes × seeds."""
    return sum(len(tune_jobs(profile, d)) * len(profile.tune_seeds) + len(profile.regimes) *
               len(profile.methods) * len(profile.final_seeds) for d in profile.datasets)


def reproduce_command(profile: Profile) -> str:
    """The ``make`` line that reruns this benchmark, naming the encoder when it was given."""
    encoder = ""
    if profile.encoder_given and profile.encoder:
        path = Path(profile.encoder).resolve()
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path  # a checkout's own copy: as the repo has it
        encoder = f" ENCODER={shown}"
    return f"make benchmark-v2{'' if profile.name == 'cpu' else ' PROFILE=' + profile.name}{encoder}"


def schedule(profile: Profile) -> list[tuple[str, str, list[int]]]:
    """The sweeps in the order they run, as (dataset, stage, seeds): stage 1 of every dataset first, then
    stage 2 one seed at a time across every dataset. The results do not depend on the order (each run is
    fixed by its seed); what does is the partial report of an interrupted benchmark, which then covers every
    dataset and regime on the same seeds instead of one dataset fully and the next not at all."""
    return [*((d, "tune", list(profile.tune_seeds)) for d in profile.datasets),
            *((d, "final", [s]) for s in profile.final_seeds for d in profile.datasets)]
