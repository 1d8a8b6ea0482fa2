"""A planned run: its overrides, the resolved config ``regner train`` would give them, and its cache key.

The resolved config is composed in process with Hydra's compose API over regner's ``conf/`` (what
``regner train`` composes), checked by the same validation as a run (so a bad profile fails before any
data is read or anything is trained), with data paths made absolute as a run makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regner.config.paths import config_dir
from regner.errors import ConfigError
from regner.experiments.compare.identity import identity_key


@dataclass(frozen=True)
class Planned:
    """One run of a comparison: an arm (dataset, regime, method, strength) at one seed."""

    dataset: str
    regime: str
    method: str
    value: Any  # the strength (None: the method has no grid, or none)
    seed: int
    base: tuple[str, ...]  # the dataset's, regime's, common and method's overrides
    strength: str | None = None  # "knob=value" of the strength, None for a method without a grid
    stage: str = "compare"  # "tune" (racing, dev F1) or "compare" (against none)

    @property
    def arm(self) -> tuple[str, str, str, Any]:
        return self.dataset, self.regime, self.method, self.value

    @property
    def label(self) -> str:
        from regner.experiments.benchmark.profile import preset_name

        return preset_name(self.dataset, self.regime, self.method, self.value)

    @property
    def all_overrides(self) -> list[str]:
        return [*self.base, *([self.strength] if self.strength else []), f"seed={self.seed}"]


class Composer:
    """Resolved configs and cache keys of planned runs. Hydra composes each (dataset, regime, method) once;
    a strength that is a plain key (``alpha``, ``regularizer.epsilon``) is set on that composed tree and
    resolved, a strength that is a config group is composed. Use as a context manager: Hydra's global
    state is held, and released on exit."""

    def __init__(self):
        self._composed: dict[tuple[str, ...], Any] = {}
        self._resolved: dict[tuple, dict] = {}
        self._keys: dict[tuple, str] = {}
        self._fingerprints: dict[str, str] = {}

    def __enter__(self) -> Composer:
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        self._context = initialize_config_dir(config_dir=config_dir(), version_base=None)
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self._context.__exit__(*exc)
        GlobalHydra.instance().clear()

    def _compose(self, overrides: tuple[str, ...]) -> Any:
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if overrides not in self._composed:
            try:
                self._composed[overrides] = compose(config_name="config", overrides=list(overrides))
            except (HydraException, OmegaConfBaseException) as err:
                from regner.config.overrides import check_overrides

                check_overrides(list(overrides))  # the did-you-mean error, where it has one
                raise ConfigError("overrides", " ".join(overrides), "overrides regner train accepts",
                                  str(err).splitlines()[0]) from None
        return self._composed[overrides]

    def config(self, base: list[str], strength: str | None = None) -> dict:
        """The resolved, validated config of ``regner train <base> [<strength>]`` (seed left as composed)."""
        from omegaconf import OmegaConf

        from regner.config.validation import validate_config
        from regner.data.loading import absolutize_paths
        from regner.experiments.benchmark.profile import GROUPS

        key = (tuple(base), strength)
        if key not in self._resolved:
            if strength is None or strength.split("=", 1)[0] in GROUPS:
                cfg = self._compose(tuple(base) + ((strength,) if strength else ()))
            else:
                cfg = self._compose(tuple(base)).copy()
                name, _, text = strength.partition("=")
                import yaml

                OmegaConf.update(cfg, name, yaml.safe_load(text) if text else None, merge=False, force_add=False)
            cfg = cfg.copy()
            validate_config(cfg)
            absolutize_paths(cfg.data, Path.cwd())
            resolved = OmegaConf.to_container(cfg, resolve=True)
            data = resolved.get("data") or {}
            for split in ("train", "dev", "test"):
                path = data.get(split)
                if data.get("format") not in ("hf", "demo") and isinstance(path, str) and not Path(path).exists():
                    raise ConfigError(f"data.{split}", path, "an existing file", "data.root is taken from the working "
                                      "directory (../shared/data by default) or the REGNER_DATA environment variable; "
                                      f"the overrides were: {' '.join(base)}")
            self._resolved[key] = resolved
        return self._resolved[key]

    def key(self, base: list[str], strength: str | None, seed: int) -> str:
        """The cache key of that run at ``seed``."""
        key = (tuple(base), strength, seed)
        if key not in self._keys:
            config = dict(self.config(base, strength))
            config["seed"] = seed
            self._keys[key] = identity_key(config, self._fingerprints)
        return self._keys[key]
