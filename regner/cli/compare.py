"""``regner compare [compare=PROFILE] [key=value ...]``: the adaptive, budgeted comparison of every
regularizer with ``none`` (conf/comparison.yaml, profiles in conf/compare/). The config is composed with
Hydra's compose API (Hydra's override grammar and config groups); the comparison is not a Hydra run: it
owns its directory (``out``), which a rerun of the same command continues."""

from __future__ import annotations

import logging
import sys

HELP = """regner compare: does each regularizer help GlobalPointer over none, by how much, at a stated precision
(conf/comparison.yaml; docs/benchmarks/PROTOCOL.md)

usage: regner compare [compare=PROFILE] [key=value ...]
       regner compare                                   the demo profile (built-in data, tiny encoder)
       regner compare compare=cpu encoder_dir=DIR           after `make pretrain` (DIR: outputs/pretrained/zh-mini)
       regner compare compare=gpu encoder_dir=DIR jobs_per_device=4
       regner compare compare=cpu dry_run=true          the plan, the most runs it can take, cache hits
       regner compare --cfg job                         the composed config

Rerun the same command to continue: finished runs are reused from the cache (by resolved config).

== Profiles (compare=) ==
{profiles}

== Main keys ==
  budget.max_runs=N, budget.max_hours=H   stop before a step that would exceed them (runs used, cached included)
  target_mde=0.01                          the precision asked for: equivalence margin ±δ in F1 (0.01 = 1 point)
  seeds=[1,...,10] looks=[2,3,4,5]         the comparison's seeds and the seed counts of its looks
  alpha=0.05 equivalence_alpha=0.05        familywise level (split over rows), equivalence level per row
  tune.seeds=[101,...] tune.rungs=[2,4]    racing of each method's strength on dev F1
  cache=[DIR,...] train=false              reuse runs from elsewhere; replay from the cache only
  out=DIR jobs=N jobs_per_device=N devices=auto|cpu|0,1
"""


def run(argv: list[str]) -> None:
    from pathlib import Path

    from regner.cli.errors import report_error
    from regner.config.paths import config_dir
    from regner.errors import UserError

    if any(a in ("-h", "--help") for a in argv):
        profiles = sorted(p.stem for p in (Path(config_dir()) / "compare").glob("*.yaml"))
        print(HELP.format(profiles="  " + ", ".join(profiles)))
        return
    show = "--cfg" in argv
    argv = [a for i, a in enumerate(argv) if a != "--cfg" and not (i and argv[i - 1] == "--cfg")]
    bad = [a for a in argv if a.startswith("-")]
    if bad:
        report_error("compare", UserError(f"unknown option {bad[0]}; regner compare takes key=value overrides "
                                          "(regner compare --help)"))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        stream=sys.stderr)
    try:
        spec, name = compose(argv)
        if show:
            import yaml

            print(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
            return
        from regner.experiments.compare.main import run_comparison

        code = run_comparison(spec, name)
    except UserError as err:
        report_error("compare", err)
    sys.exit(code)


def compose(argv: list[str]) -> tuple[dict, str]:
    """The comparison's config as a plain dict (interpolations left as written: a profile's overrides may
    hold ``${data.root}``, which is the run's to resolve), and the profile's name."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from regner.config.overrides import check_overrides
    from regner.config.paths import config_dir
    from regner.errors import UserError

    for warning in check_overrides(argv, "comparison"):
        print(f"regner: warning: {warning}", file=sys.stderr, flush=True)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base=None):
            cfg = hydra_compose(config_name="comparison", overrides=argv, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"the overrides {' '.join(argv)} do not compose: {str(err).splitlines()[0]}") from None
    finally:
        GlobalHydra.instance().clear()
    name = str(cfg.hydra.runtime.choices.get("compare"))
    spec = OmegaConf.to_container(cfg, resolve=False)
    spec.pop("hydra", None)
    return spec, name
