"""``regner train [overrides...]``: one run (Hydra single-run mode), or ``resume=RUN`` to continue one.
The task is also what each job of ``regner sweep`` runs."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from regner.cli.errors import log, report_error, user_errors
from regner.cli.runs import (
    check_resume_overrides,
    claimed_run,
    hydra_app,
    prepare_failed,
    resumed_config,
    run_reported,
    secondary_rank,
    write_hydra_files,
)
from regner.errors import UserError


def train_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from regner.config.validation import validate_config
    from regner.data.loading import absolutize_paths
    from regner.runs.io import atomic_write_text, write_status
    from regner.training.distributed import env_rank
    from regner.training.run import run_training

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    resume_dir = Path(cfg.resume) if cfg.get("resume") else None
    if env_rank() != 0:
        run_cfg = resumed_config(resume_dir, cfg, hydra_cfg)[0] if resume_dir else cfg
        secondary_rank(lambda stop: run_training(run_cfg, Path(hydra_cfg.runtime.output_dir),
                                                  resume=resume_dir is not None, stop=stop))
        return None
    changes: list[str] = []
    if resume_dir is not None:  # checked before the run is locked: a refused resume writes nothing into it
        try:
            cfg, changes = resumed_config(resume_dir, cfg, hydra_cfg)
            validate_config(cfg)
        except user_errors() as err:
            report_error("train", err, None, None if multirun else 2)
            return None
    with contextlib.ExitStack() as stack:
        try:
            claim = stack.enter_context(claimed_run(hydra_cfg, resume_dir))
        except UserError as err:  # nothing was written: the directory belongs to another run or process
            report_error("train", err, None, None if multirun else 2)
            return None
        run_dir = claim.run_dir
        if claim.skip:
            log.info("%s: this sweep job already completed; skipped (delete the directory to run it again)", run_dir)
            return json.loads((run_dir / "status.json").read_text()).get("dev_f1")
        if resume_dir is not None:
            for change in changes:
                log.info("resume: %s", change)
        else:
            write_hydra_files(run_dir, cfg, hydra_cfg)
            write_status(run_dir, "running")
            try:
                validate_config(cfg)
            except user_errors() as err:
                prepare_failed("train", run_dir, err, multirun)
                return None
            absolutize_paths(cfg.data, Path.cwd())
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        metrics = run_reported("train", run_dir, lambda stop: run_training(
            cfg, run_dir, resume=resume_dir is not None, stop=stop), multirun)
    return None if metrics is None else float(metrics["dev"]["f1"])


def resume_overrides(argv: list[str]) -> list[str]:
    """Check a resume before Hydra starts (a refused resume leaves its target untouched), then run it
    in the original run directory instead of a new one. A new run in a directory named with
    ``hydra.run.dir`` is checked the same way."""
    from regner.runs.directory import (
        check_resumable,
        holds_a_run,
        latest_unfinished_run,
        lock_holder,
    )
    from regner.training.distributed import env_rank

    # Data-parallel ranks > 0 check nothing: rank 0 owns (and locks) the run directory, and they write
    # into a scratch directory. They pick the run to continue as rank 0 does, ignoring its lock.
    secondary = env_rank() != 0
    if "trainer.resume=true" in argv:
        run_dir = latest_unfinished_run(skip_locked=not secondary)
        argv = [a for a in argv if a != "trainer.resume=true"] + [f"resume={run_dir}"]
    for arg in argv:
        if arg.startswith("resume=") and arg != "resume=null":
            run_dir = Path(arg.split("=", 1)[1]).expanduser().resolve()
            if not secondary:
                check_resumable(run_dir)
            check_resume_overrides([a for a in argv if a != arg])
            return [a for a in argv if a != arg and not a.startswith("hydra.run.dir=")] + [
                f"resume={run_dir}", f"hydra.run.dir={run_dir}"]
    for arg in argv if not secondary else []:
        if arg.startswith("hydra.run.dir="):
            run_dir = Path(arg.split("=", 1)[1]).expanduser()
            if lock_holder(run_dir) is not None or holds_a_run(run_dir):
                from regner.runs.directory import claim_new_run_dir

                claim_new_run_dir(run_dir, explicit=True).release()  # raises the message
    return argv


def run(argv: list[str]) -> None:
    hydra_app(resume_overrides(argv), train_task)
