"""What the Hydra commands (train, sweep, evaluate, pretrain) share: the run directory they claim,
Hydra's own record of the run, resuming with its saved config, and data-parallel ranks > 0."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from regner.cli.errors import report_error, user_errors
from regner.config.paths import config_dir
from regner.errors import RunDirError

# Keys that may change when a run is resumed: they decide how long and where it trains, not what it learns
# from a given state. (max_epochs also stretches the learning-rate schedule from the saved step on.)
RESUMABLE_OVERRIDES = ("trainer.max_epochs", "trainer.patience", "trainer.patience_min_f1", "trainer.save_every_steps",
                       "trainer.progress", "trainer.device", "trainer.num_workers", "trainer.num_threads",
                       "trainer.log_every", "trainer.check_every", "trainer.eval_batch_size")


def override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def is_hydra_arg(arg: str) -> bool:
    return arg.startswith("-") or override_key(arg).startswith(("hydra.", "hydra/")) or "=" not in arg


def check_resume_overrides(args: list[str], allowed: tuple[str, ...] = RESUMABLE_OVERRIDES) -> list[str]:
    """The overrides given with ``resume=``: the safe ones are returned; any other is refused."""
    keys = [override_key(a) for a in args if not is_hydra_arg(a) and override_key(a) not in ("resume", "trainer.resume")]
    refused = [k for k in keys if k not in allowed]
    if refused:
        raise RunDirError(
            f"cannot change {', '.join(refused)} when resuming: a resumed run continues with its saved config. "
            f"Only {', '.join(allowed)} may change on resume; start a new run to change anything else")
    return keys


# The same for `regner pretrain resume=DIR`.
PRETRAIN_RESUMABLE_OVERRIDES = ("pretrain.progress", "pretrain.device", "pretrain.num_threads",
                                "pretrain.save_every_steps", "pretrain.eval_batch_size")


def named_on_command_line(hydra_cfg, key: str) -> bool:
    """Whether the user named the run directory (a clock-derived name may move on to ``-2`` instead)."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(hydra_cfg.overrides.hydra, resolve=False)  # resolving would expand ${now:...}
    return any(override_key(o) == key and "${now:" not in o for o in given)


def attach_run_log(run_dir: Path) -> logging.Handler:
    """``<run dir>/regner.log`` (appended to), attached once the directory is ours."""
    handler = logging.FileHandler(run_dir / "regner.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def write_hydra_files(run_dir: Path, cfg, hydra_cfg) -> None:
    """Hydra's own record of the run (``.hydra/``), written only into a directory this process owns."""
    from omegaconf import OmegaConf

    from regner.runs.io import atomic_write_text

    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(run_dir / ".hydra" / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)))


@contextlib.contextmanager
def claimed_run(hydra_cfg, resume_dir: Path | None, explicit: bool | None = None):
    """Lock the run directory (a new one, or the run to resume) for the block; yields the Claim.
    ``explicit``: whether the directory was named by the user (default: named on the command line)."""
    from hydra.types import RunMode

    from regner.runs.directory import Claim, RunLock, check_resumable, claim_new_run_dir, run_status

    if resume_dir is not None:
        check_resumable(resume_dir)
        claim = Claim(resume_dir, RunLock(resume_dir).acquire())
        if run_status(resume_dir) == "completed":  # finished between the check and the lock
            claim.release()
            raise RunDirError(f"cannot resume {resume_dir}: this run has already completed")
    else:
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        run_dir = Path(hydra_cfg.runtime.output_dir)
        if explicit is None:
            explicit = named_on_command_line(hydra_cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")
        claim = claim_new_run_dir(run_dir, explicit=explicit, skip_completed=multirun)
    handler = None
    try:
        if claim.lock is not None:
            handler = attach_run_log(claim.run_dir)
        yield claim
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        claim.release()


def secondary_rank(run) -> None:
    """A data-parallel rank > 0: rank 0 owns the run directory and reports every error; this rank
    runs ``run(stop)`` and only exits with the matching code."""
    from regner.runs.interrupt import Interrupted, graceful_stop
    from regner.training.trainer import TrainingDiverged

    try:
        with graceful_stop() as stop:
            run(stop)
    except Interrupted as err:
        sys.exit(err.exit_code)
    except (*user_errors(), TrainingDiverged):
        sys.exit(2)


def run_reported(command: str, run_dir: Path, run, multirun: bool = False):
    """``run(stop)`` inside the SIGTERM/SIGINT handlers, with the one error path. The run itself has
    already written status.json (``failed`` with its metadata, or ``interrupted`` with the resume
    command); this prints the paragraph and exits (a sweep job returns None so the others go on)."""
    from regner.runs.interrupt import Interrupted, graceful_stop
    from regner.training.run import resume_command
    from regner.training.trainer import TrainingDiverged

    try:
        with graceful_stop() as stop:
            return run(stop)
    except (*user_errors(), TrainingDiverged) as err:
        report_error(command, err, run_dir, None if multirun else (1 if isinstance(err, TrainingDiverged) else 2))
        return None
    except Interrupted as err:
        print(f"regner {command}: {err}. Resume with:\n  {resume_command(run_dir, command)}", file=sys.stderr,
              flush=True)
        sys.exit(err.exit_code)


def prepare_failed(command: str, run_dir: Path, err: BaseException, multirun: bool = False) -> None:
    """An error before the run started (config validation, ...): mark the run directory failed, report."""
    from regner.runs.io import write_status

    write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
    report_error(command, err, run_dir, None if multirun else 2)


def resumed_config(run_dir: Path, composed, hydra_cfg, allowed: tuple[str, ...] = RESUMABLE_OVERRIDES):
    """The saved config of the run to continue, with ``resume`` set and the resume-safe overrides of
    this command (``allowed``) applied; returns it with the list of changes. Any other override is
    refused (for ``regner train`` already before Hydra started)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.resume = str(run_dir)
    changes = []
    given = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    for key in check_resume_overrides(given, allowed):
        new, old = OmegaConf.select(composed, key), OmegaConf.select(cfg, key)
        if new != old:
            changes.append(f"{key}={new} (was {old})" + ("; the learning-rate schedule is recomputed for the new "
                                                         "length" if key == "trainer.max_epochs" else ""))
            OmegaConf.update(cfg, key, new, force_add=True)
    return cfg, changes


def secondary_rank_overrides(argv: list[str]) -> list[str]:
    """Under torchrun, ranks > 0 write nothing: no run directory of their own, no Hydra files."""
    from regner.training.distributed import env_rank

    rank = env_rank()
    if rank == 0:
        return argv
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"regner-rank{rank}-")
    return [a for a in argv if not a.startswith("hydra.run.dir=")] + [
        f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def hydra_app(argv: list[str], task, config_name: str = "config") -> None:
    """Run ``task(cfg)`` as a Hydra app over ``conf/<config_name>.yaml`` with ``argv`` as its command line.
    A run or sweep directory named on it must be creatable (checked here: Hydra's own error is a traceback)."""
    from regner.config.overrides import check_overrides
    from regner.runs.directory import check_creatable
    from regner.training.distributed import env_rank

    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
            check_creatable(Path(value), key)
    if env_rank() == 0:  # ranks > 0 run what rank 0 checked
        for warning in check_overrides(argv, config_name):
            print(f"regner: warning: {warning}", file=sys.stderr, flush=True)
    import hydra

    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task)
    sys.argv = ["regner", *secondary_rank_overrides(argv)]
    app()
