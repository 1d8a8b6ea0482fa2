"""``regner sweep [overrides...]``: Hydra multirun (``-m`` is implied) of ``regner train``'s task,
e.g. ``regner sweep regularizer=rdrop alpha=1,4``; warns first when a swept key cannot change a run,
and ends with a summary on stderr: how each job ended, the best run, and the ``regner report`` command."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from regner.cli.runs import hydra_app
from regner.cli.train import train_task
from regner.config.paths import config_dir

log = logging.getLogger("regner")

# Each job appends one JSON line here (jobs may run in other processes: the joblib launcher's workers).
RECORD_ENV = "REGNER_SWEEP_RECORD"


def run(argv: list[str]) -> None:
    if "-m" not in argv and "--multirun" not in argv:
        argv = ["--multirun", *argv]
    warn_unused_sweep_keys(argv)
    handle, record = tempfile.mkstemp(prefix="regner-sweep-", suffix=".jsonl")
    os.close(handle)
    previous = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = record
    try:
        hydra_app(argv, sweep_task)
    finally:
        if previous is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = previous
        jobs = read_record(Path(record))
        Path(record).unlink(missing_ok=True)
        if jobs:
            print(sweep_summary(jobs), file=sys.stderr, flush=True)


def sweep_task(cfg) -> float | None:
    """One job: ``regner train``'s task, then a line for the closing summary."""
    from hydra.core.hydra_config import HydraConfig

    from regner.runs.directory import run_status

    hydra_cfg = HydraConfig.get()
    dev_f1 = None
    try:
        dev_f1 = train_task(cfg)
        return dev_f1
    finally:
        record = os.environ.get(RECORD_ENV)
        if record:
            run_dir = Path(hydra_cfg.runtime.output_dir)
            line = {"sweep_dir": str(Path(hydra_cfg.sweep.dir).resolve()), "run_dir": str(run_dir.resolve()),
                    "job": hydra_cfg.job.get("num"), "overrides": list(hydra_cfg.overrides.task),
                    "status": run_status(run_dir) or "unknown", "dev_f1": dev_f1}
            with open(record, "a", encoding="utf-8") as out:  # one short append per job: lines never interleave
                out.write(json.dumps(line) + "\n")


def read_record(path: Path) -> list[dict]:
    jobs = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            jobs.append(json.loads(line))
        except ValueError:
            continue
    return sorted(jobs, key=lambda job: (job.get("job") is None, job.get("job") or 0))


def sweep_summary(jobs: list[dict]) -> str:
    """The closing lines of a sweep: how many jobs ended how, the best by dev F1, and where they are."""
    from regner.experiments.report.records import COLLAPSE_F1

    sweep_dirs = sorted({job["sweep_dir"] for job in jobs})
    ended: dict[str, int] = {}
    for job in jobs:
        ended[job["status"]] = ended.get(job["status"], 0) + 1
    scored = [job for job in jobs if isinstance(job.get("dev_f1"), float)]
    collapsed = [job for job in scored if not job["dev_f1"] >= COLLAPSE_F1]
    lines = [f"regner sweep: {len(jobs)} job(s) in {', '.join(sweep_dirs)}: "
             + ", ".join(f"{n} {status}" for status, n in sorted(ended.items()))
             + (f"; {len(collapsed)} collapsed (dev F1 < {COLLAPSE_F1}): jobs "
                f"{', '.join(str(job['job']) for job in collapsed)}" if collapsed else "")]
    if scored:
        best = max(scored, key=lambda job: job["dev_f1"])
        lines.append(f"  best dev F1 {best['dev_f1']:.4f}: job {best['job']} ({' '.join(best['overrides']) or 'no overrides'})"
                     f" in {best['run_dir']}")
    for job in jobs:
        if job["status"] not in ("completed", "running"):
            lines.append(f"  job {job['job']} {job['status']}: see {Path(job['run_dir']) / 'regner.log'}")
    lines.append(f"  aggregate them: regner report {' '.join(sweep_dirs)}")
    return "\n".join(lines)


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
