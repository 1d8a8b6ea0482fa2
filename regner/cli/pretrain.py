"""``regner pretrain``: masked-LM pretraining of the encoder (conf/pretraining.yaml)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from regner.cli.errors import log, report_error, user_errors
from regner.cli.runs import (
    PRETRAIN_RESUMABLE_OVERRIDES,
    claimed_run,
    hydra_app,
    named_on_command_line,
    resumed_config,
    run_reported,
    secondary_rank,
    write_hydra_files,
)
from regner.errors import RunDirError, UserError


def pretrain_task(cfg) -> None:
    """``regner pretrain``: validate, read the corpus, skip if the same pretraining already finished
    in the target directory (``make pretrain`` is cached), else lock the directory and pretrain."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from regner.config.validation import validate_config
    from regner.pretraining.trainer import corpus_for, fingerprint, run_pretraining
    from regner.runs.directory import check_resumable, holds_a_run, lock_holder
    from regner.runs.io import atomic_write_text, write_status
    from regner.training.distributed import env_rank

    hydra_cfg = HydraConfig.get()
    resume_dir = Path(cfg.resume).expanduser().resolve() if cfg.get("resume") else None
    run_dir = resume_dir or Path(hydra_cfg.runtime.output_dir)
    named = "${now:" not in str(OmegaConf.to_container(hydra_cfg.run, resolve=False)["dir"]) or \
        named_on_command_line(hydra_cfg, "hydra.run.dir")
    changes: list[str] = []
    try:
        if resume_dir is not None:
            if env_rank() == 0:  # rank 0 owns (and locks) the run directory
                check_resumable(resume_dir)
            cfg, changes = resumed_config(resume_dir, cfg, hydra_cfg, PRETRAIN_RESUMABLE_OVERRIDES)
        validate_config(cfg)
        if resume_dir is None:  # saved absolute, so a resume from any directory reads the same files
            cfg.pretrain.corpus = [str((Path.cwd() / Path(p).expanduser()).resolve()) for p in cfg.pretrain.corpus]
        corpus = corpus_for(cfg, Path.cwd())
        if resume_dir is None and env_rank() == 0 and holds_a_run(run_dir) and named:
            status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
            if status.get("status") == "completed" and status.get("fingerprint") == fingerprint(cfg, corpus):
                log.info("%s is up to date (same config and corpus already pretrained); nothing to do", run_dir)
                return
            if status.get("status") == "completed":
                raise RunDirError(f"{run_dir} holds a finished pretraining of other inputs (the config or the corpus "
                                  "changed); a new run never overwrites another: delete it or choose another "
                                  "hydra.run.dir")
            if status.get("kind") == "pretraining" and (run_dir / "last").exists() and lock_holder(run_dir) is None:
                raise RunDirError(f"{run_dir} holds an unfinished pretraining; continue it with: regner pretrain "
                                  f"resume={run_dir.resolve()} (or delete it to start over)")
    except user_errors() as err:
        report_error("pretrain", err)
    if env_rank() != 0:
        secondary_rank(lambda stop: run_pretraining(cfg, Path(hydra_cfg.runtime.output_dir), corpus,
                                                     resume=resume_dir is not None, stop=stop))
        return
    with contextlib.ExitStack() as stack:
        try:
            run_dir = stack.enter_context(claimed_run(hydra_cfg, resume_dir, explicit=named)).run_dir
        except UserError as err:
            report_error("pretrain", err)
        for change in changes:
            log.info("resume: %s", change)
        if resume_dir is None:
            write_hydra_files(run_dir, cfg, hydra_cfg)
            write_status(run_dir, "running")
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        run_reported("pretrain", run_dir, lambda stop: run_pretraining(
            cfg, run_dir, corpus, resume=resume_dir is not None, stop=stop))


def run(argv: list[str]) -> None:
    if any(a.startswith("resume=") and a != "resume=null" for a in argv):  # continue in the run's own directory
        target = next(a for a in argv if a.startswith("resume="))
        argv = [*argv, f"hydra.run.dir={Path(target.split('=', 1)[1]).expanduser().resolve()}"]
    hydra_app(argv, pretrain_task, config_name="pretraining")
