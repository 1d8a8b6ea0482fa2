"""``regner sweep [overrides...]``: Hydra multirun (``-m`` is implied) of ``regner train``'s task,
e.g. ``regner sweep regularizer=rdrop alpha=1,4``; warns first when a swept key cannot change a run."""

from __future__ import annotations

import logging
import sys

from regner.cli.runs import hydra_app
from regner.cli.train import train_task
from regner.config.paths import config_dir

log = logging.getLogger("regner")


def run(argv: list[str]) -> None:
    if "-m" not in argv and "--multirun" not in argv:
        argv = ["--multirun", *argv]
    warn_unused_sweep_keys(argv)
    hydra_app(argv, train_task)


def warn_unused_sweep_keys(args: list[str], max_checks: int = 12) -> list[str]:
    """Warn (on stderr) when a swept ``alpha`` or ``kl`` cannot change what the chosen regularizer
    computes, e.g. ``regner sweep alpha=1,4`` with ``regularizer=none``: its jobs would be identical
    runs counted as if they were different. Returns the warnings."""
    import itertools

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from regner.regularizers import instantiate_regularizer

    plain = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except Exception:  # noqa: BLE001 - Hydra reports bad overrides itself when the sweep starts
        return []
    swept = {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()
             and not o.key_or_group.startswith("hydra")}
    watched = [k for k in swept if (k == "alpha" or k == "kl" or k.startswith("kl.")) and len(swept[k]) > 1]
    if not watched:
        return []
    fixed = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    regularizers = swept.get("regularizer", [None])
    warnings = []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            for key, regularizer in itertools.islice(itertools.product(watched, regularizers), max_checks):
                base = fixed + ([f"regularizer={regularizer}"] if regularizer else [])
                first, second = (compose("config", base + [f"{key}={value}"]) for value in swept[key][:2])
                reg_cfg = first.regularizer
                uses_kl = instantiate_regularizer(reg_cfg).uses_kl
                if key == "alpha":
                    unused = (OmegaConf.to_container(first.regularizer, resolve=True)
                              == OmegaConf.to_container(second.regularizer, resolve=True))
                else:
                    unused = not uses_kl
                if unused:
                    jobs = len(swept[key])
                    warnings.append(f"{key} is swept over {', '.join(swept[key])} but regularizer={reg_cfg.name} does "
                                    f"not read it: those {jobs} jobs (per other setting) are identical runs. Sweep a "
                                    f"regularizer that uses it, e.g. regner sweep regularizer=rdrop {key}="
                                    f"{','.join(swept[key])}")
    except Exception as err:  # noqa: BLE001 - the check is advisory; the sweep reports real errors
        log.debug("sweep check skipped: %s", err)
    finally:
        GlobalHydra.instance().clear()
    for warning in warnings:
        print(f"regner sweep: warning: {warning}", file=sys.stderr)
    return warnings
