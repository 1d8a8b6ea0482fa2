"""The ``regner`` command. ``train``, ``sweep`` and ``evaluate`` are Hydra apps over ``conf/``;
``report`` uses argparse, and ``predict`` takes ``key=value`` arguments but keeps stdout clean for
its JSONL (no Hydra logging, no run directory).

    regner train [overrides...]        one run (Hydra single-run mode)
    regner sweep [overrides...]        Hydra multirun (-m is implied), e.g. regner sweep regularizer=rdrop alpha=1,4
    regner report DIR [DIR...]         aggregate the runs under DIRs into report.md/.csv and plots
    regner evaluate ckpt=RUN [data=..] score a saved model; writes metrics.json like training does
    regner pretrain [overrides...]     masked-LM pretraining of the encoder (conf/pretraining.yaml), e.g.
                                       regner pretrain pretrain=zh-mini (what `make pretrain` runs)
    regner predict ckpt=RUN [input=FILE] [output=FILE] [batch_size=64] [threshold=..] [on_error=record]
                                       entities for raw texts (lines or JSONL "text"), as JSONL
    regner export ckpt=RUN [output=DIR] [opset=17]
                                       ONNX model + tokenizer + label map (regner predict ckpt=DIR backend=onnx)
    regner serve ckpt=RUN [host=127.0.0.1] [port=8000] [backend=torch|onnx]
                                       HTTP service: POST /predict, GET /health, GET /labels (batches requests)
    regner --version                   versions of regner, torch and transformers

`regner train --help` lists the config groups and main keys; `regner predict --help` (export, serve) theirs.
Errors are one paragraph on stderr with exit code 2; logs go to stderr, results to stdout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from regner.data.errors import DataError
from regner.errors import RunDirError, UserError

log = logging.getLogger("regner")

USAGE = __doc__.split("\n\n", 1)[1]


def config_dir() -> str:
    """``conf/`` of a source checkout or editable install, else the copy packaged with regner."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("REGNER_CONFIG_DIR"), here.parent / "conf", here / "conf"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.yaml").exists():
            return str(Path(candidate).resolve())
    raise SystemExit("regner: cannot find the config directory (conf/config.yaml); set REGNER_CONFIG_DIR")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, reported as one paragraph instead of a traceback."""
    from omegaconf.errors import MissingMandatoryValue

    return UserError, MissingMandatoryValue


def report_error(command: str, err: BaseException, run_dir: Path | None = None, exit_code: int | None = 2) -> None:
    """The one error path of every command: one paragraph on stderr (no traceback) naming the file,
    line, key or value, where the failed run's status.json is, then exit ``exit_code`` (None: return,
    so the other jobs of a sweep go on)."""
    message = str(err).strip() or type(err).__name__
    if type(err).__name__ == "MissingMandatoryValue":
        message = f"a required key has no value: {message.splitlines()[0]}; set it on the command line (key=value)"
    where = (f" The run directory {run_dir} holds no finished result: its status.json says failed, and why."
             if run_dir is not None else "")
    print(f"regner {command}: error: {message}.{where}".replace("..", "."), file=sys.stderr, flush=True)
    if exit_code is not None:
        sys.exit(exit_code)


# Keys that may change when a run is resumed: they decide how long and where it trains, not what it learns
# from a given state. (max_epochs also stretches the learning-rate schedule from the saved step on.)
RESUMABLE_OVERRIDES = ("trainer.max_epochs", "trainer.patience", "trainer.patience_min_f1", "trainer.save_every_steps",
                       "trainer.progress", "trainer.device", "trainer.num_workers", "trainer.num_threads",
                       "trainer.log_every", "trainer.check_every", "trainer.eval_batch_size")


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _is_hydra_arg(arg: str) -> bool:
    return arg.startswith("-") or _override_key(arg).startswith(("hydra.", "hydra/")) or "=" not in arg


def check_resume_overrides(args: list[str], allowed: tuple[str, ...] = RESUMABLE_OVERRIDES) -> list[str]:
    """The overrides given with ``resume=``: the safe ones are returned; any other is refused."""
    keys = [_override_key(a) for a in args if not _is_hydra_arg(a) and _override_key(a) not in ("resume", "trainer.resume")]
    refused = [k for k in keys if k not in allowed]
    if refused:
        raise RunDirError(
            f"cannot change {', '.join(refused)} when resuming: a resumed run continues with its saved config. "
            f"Only {', '.join(allowed)} may change on resume; start a new run to change anything else")
    return keys


# The same for `regner pretrain resume=DIR`.
PRETRAIN_RESUMABLE_OVERRIDES = ("pretrain.progress", "pretrain.device", "pretrain.num_threads",
                                "pretrain.save_every_steps", "pretrain.eval_batch_size")


def _explicit(hydra_cfg, key: str) -> bool:
    """Whether the user named the run directory (a clock-derived name may move on to ``-2`` instead)."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(hydra_cfg.overrides.hydra, resolve=False)  # resolving would expand ${now:...}
    return any(_override_key(o) == key and "${now:" not in o for o in given)


def attach_run_log(run_dir: Path) -> logging.Handler:
    """``<run dir>/regner.log`` (appended to), attached once the directory is ours."""
    handler = logging.FileHandler(run_dir / "regner.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def write_hydra_files(run_dir: Path, cfg, hydra_cfg) -> None:
    """Hydra's own record of the run (``.hydra/``), written only into a directory this process owns."""
    from omegaconf import OmegaConf

    from regner.runio import atomic_write_text

    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(run_dir / ".hydra" / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)))


@contextlib.contextmanager
def claimed_run(hydra_cfg, resume_dir: Path | None, explicit: bool | None = None):
    """Lock the run directory (a new one, or the run to resume) for the block; yields the Claim.
    ``explicit``: whether the directory was named by the user (default: named on the command line)."""
    from hydra.types import RunMode

    from regner.rundir import Claim, RunLock, check_resumable, claim_new_run_dir, run_status

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
            explicit = _explicit(hydra_cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")
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


def _secondary_rank(run) -> None:
    """A data-parallel rank > 0: rank 0 owns the run directory and reports every error; this rank
    runs ``run(stop)`` and only exits with the matching code."""
    from regner.interrupt import Interrupted, graceful_stop
    from regner.trainer import TrainingDiverged

    try:
        with graceful_stop() as stop:
            run(stop)
    except Interrupted as err:
        sys.exit(err.exit_code)
    except (*user_errors(), TrainingDiverged):
        sys.exit(2)


def _run_reported(command: str, run_dir: Path, run, multirun: bool = False):
    """``run(stop)`` inside the SIGTERM/SIGINT handlers, with the one error path. The run itself has
    already written status.json (``failed`` with its metadata, or ``interrupted`` with the resume
    command); this prints the paragraph and exits (a sweep job returns None so the others go on)."""
    from regner.interrupt import Interrupted, graceful_stop
    from regner.trainer import TrainingDiverged, resume_command

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


def _prepare_failed(command: str, run_dir: Path, err: BaseException, multirun: bool = False) -> None:
    """An error before the run started (config validation, ...): mark the run directory failed, report."""
    from regner.runio import write_status

    write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
    report_error(command, err, run_dir, None if multirun else 2)


def _train_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from regner.data.loading import absolutize_paths
    from regner.distributed import env_rank
    from regner.runio import atomic_write_text, write_status
    from regner.trainer import run_training
    from regner.validation import validate_config

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    resume_dir = Path(cfg.resume) if cfg.get("resume") else None
    if env_rank() != 0:
        run_cfg = resumed_config(resume_dir, cfg, hydra_cfg)[0] if resume_dir else cfg
        _secondary_rank(lambda stop: run_training(run_cfg, Path(hydra_cfg.runtime.output_dir),
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
                _prepare_failed("train", run_dir, err, multirun)
                return None
            absolutize_paths(cfg.data, Path.cwd())
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        metrics = _run_reported("train", run_dir, lambda stop: run_training(
            cfg, run_dir, resume=resume_dir is not None, stop=stop), multirun)
    return None if metrics is None else float(metrics["dev"]["f1"])


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


def _resume_overrides(argv: list[str]) -> list[str]:
    """Check a resume before Hydra starts (a refused resume leaves its target untouched), then run it
    in the original run directory instead of a new one. A new run in a directory named with
    ``hydra.run.dir`` is checked the same way."""
    from regner.distributed import env_rank
    from regner.rundir import check_resumable, holds_a_run, latest_unfinished_run, lock_holder

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
                from regner.rundir import claim_new_run_dir

                claim_new_run_dir(run_dir, explicit=True).release()  # raises the message
    return argv


def _pretrain_task(cfg) -> None:
    """``regner pretrain``: validate, read the corpus, skip if the same pretraining already finished
    in the target directory (``make pretrain`` is cached), else lock the directory and pretrain."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from regner.distributed import env_rank
    from regner.pretraining.trainer import corpus_for, fingerprint, run_pretraining
    from regner.rundir import check_resumable, holds_a_run, lock_holder
    from regner.runio import atomic_write_text, write_status
    from regner.validation import validate_config

    hydra_cfg = HydraConfig.get()
    resume_dir = Path(cfg.resume).expanduser().resolve() if cfg.get("resume") else None
    run_dir = resume_dir or Path(hydra_cfg.runtime.output_dir)
    named = "${now:" not in str(OmegaConf.to_container(hydra_cfg.run, resolve=False)["dir"]) or \
        _explicit(hydra_cfg, "hydra.run.dir")
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
        _secondary_rank(lambda stop: run_pretraining(cfg, Path(hydra_cfg.runtime.output_dir), corpus,
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
        _run_reported("pretrain", run_dir, lambda stop: run_pretraining(
            cfg, run_dir, corpus, resume=resume_dir is not None, stop=stop))


def _evaluate_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from regner.data.loading import load_splits
    from regner.evaluation import evaluate
    from regner.inference import LoadedModel, checkpoint_dir
    from regner.runio import METRICS_FILE, atomic_write_json, atomic_write_text, write_status
    from regner.trainer import resolve_device
    from regner.validation import validate_config

    hydra_cfg = HydraConfig.get()
    with contextlib.ExitStack() as stack:
        try:
            run_dir = stack.enter_context(claimed_run(hydra_cfg, None)).run_dir
        except UserError as err:
            report_error("evaluate", err)
        write_hydra_files(run_dir, cfg, hydra_cfg)
        write_status(run_dir, "running")
        try:
            if not cfg.get("ckpt"):
                raise DataError("regner evaluate needs ckpt=<run dir or checkpoint dir>")
            validate_config(cfg)
            ckpt = checkpoint_dir(cfg.ckpt)
            data_cfg = cfg.data
            data_overridden = any(_override_key(o).startswith("data") for o in hydra_cfg.overrides.task)
            saved = ckpt.parent / "config.yaml"
            if not data_overridden and saved.exists():
                data_cfg = OmegaConf.load(saved).data  # its data paths were saved absolute
                log.info("evaluating on the data the model was trained with (%s); pass data=... to change",
                         data_cfg.name)
            atomic_write_text(run_dir / "config.yaml",
                              OmegaConf.to_yaml(OmegaConf.merge(cfg, {"data": data_cfg}), resolve=True))
            loaded = LoadedModel.load(ckpt, resolve_device(cfg.trainer.device))
            splits = load_splits(data_cfg)
            check_label_overlap(loaded.model.labels, splits, ckpt)
            results: dict = {"status": "completed", "checkpoint": str(ckpt), "kind": "evaluation",
                             "run": {"dataset": splits.name, "labels": loaded.model.labels}}
            for name in ("dev", "test"):
                examples = getattr(splits, name)
                if examples is None:
                    results[name] = None
                    continue
                split = loaded.encode(name, examples)
                results[name], _ = evaluate(loaded.model, split, loaded.device, cfg.trainer.eval_batch_size,
                                            loaded.config.get("threshold", 0.0), with_seqeval=True, name=name,
                                            progress=cfg.trainer.progress)
                log.info("%s: P %.4f R %.4f F1 %.4f", name, results[name]["precision"], results[name]["recall"],
                         results[name]["f1"])
        except user_errors() as err:
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
            report_error("evaluate", err, run_dir)
        atomic_write_json(run_dir / METRICS_FILE, results)
        write_status(run_dir, "completed")
        log.info("metrics written to %s", run_dir / METRICS_FILE)


def check_label_overlap(model_labels: list[str], splits, ckpt: Path) -> None:
    """Scoring a model on data whose entity types it never learned gives F1 0, which means nothing."""
    gold = {e.type for split in (splits.dev, splits.test or []) for ex in split for e in ex.entities}
    shared = gold & set(model_labels)
    if gold and not shared:
        raise DataError(f"the model knows the types {sorted(model_labels)} but {splits.name!r} has only "
                        f"{sorted(gold)}: no type in common, so every score would be 0. Evaluate on data labelled "
                        "with the model's types", str(ckpt))
    missing = sorted(gold - set(model_labels))
    if missing:
        log.warning("types %s of %s are unknown to the model: their entities count as missed", missing, splits.name)


def _secondary_rank_overrides(argv: list[str]) -> list[str]:
    """Under torchrun, ranks > 0 write nothing: no run directory of their own, no Hydra files."""
    from regner.distributed import env_rank

    rank = env_rank()
    if rank == 0:
        return argv
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"regner-rank{rank}-")
    return [a for a in argv if not a.startswith("hydra.run.dir=")] + [
        f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def _hydra_app(argv: list[str], task=None, config_name: str = "config") -> None:
    import hydra

    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task or _train_task)
    sys.argv = ["regner", *_secondary_rank_overrides(argv)]
    app()


def _report(argv: list[str]) -> None:
    import argparse

    from regner.report import build_report

    parser = argparse.ArgumentParser(prog="regner report", description="Aggregate regner runs into one table.")
    parser.add_argument("dirs", nargs="+", help="directories searched recursively for runs (status.json)")
    parser.add_argument("-o", "--out", help="where report.md, report.csv and the PNGs go (default: the first DIR)")
    parser.add_argument("--title", default="regner report")
    parser.add_argument("--preamble", default="", help="text placed under the title (machine, date, profile)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        text, rows = build_report(args.dirs, args.out, args.title, args.preamble, plots=not args.no_plots)
    except FileNotFoundError as err:
        print(f"regner report: {err}", file=sys.stderr)
        sys.exit(2)
    if not rows:
        print(f"regner report: no runs found under {' '.join(args.dirs)}", file=sys.stderr)
        sys.exit(1)
    print(text)


def options_help(intro: str, spec: dict[str, tuple]) -> str:
    """``--help`` of a ``key=value`` command: ``intro``, then one line per key with its default."""
    width = max(map(len, spec)) + 2
    return intro + "\n\n" + "\n".join(f"  {k:<{width}}{v[1]}" + (f" [default: {v[0]}]" if v[0] is not None else "")
                                      for k, v in spec.items())


def key_value_command(argv: list[str], help_text: str) -> bool:
    """The start of every ``key=value`` command: print its help and say so (True), or set up logging
    to stderr (stdout carries only results) and go on (False)."""
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text)
        return True
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return False


def require_extra(command: str, modules: tuple[str, ...], extra: str = "serve") -> None:
    """A UserError naming the missing optional dependencies of ``command`` and how to install them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"regner {command} needs {' and '.join(missing)}: pip install 'regner[{extra}]'")


PREDICT_OPTIONS = {  # key: (default, help)
    "ckpt": (None, "run directory, or its checkpoint/ directory (required)"),
    "input": ("-", 'texts: one per line, or JSONL with a "text" field; - reads stdin'),
    "output": ("-", "where the JSONL results go (written atomically); - writes stdout"),
    "batch_size": ("64", "windows per forward pass (an integer ≥ 1)"),
    "threshold": (None, "logit threshold for a span (default: the checkpoint's head.threshold)"),
    "device": ("cpu", "cpu, cuda, cuda:N or auto"),
    "on_error": ("record", 'a line that is not UTF-8 text or a JSON object with a string "text": record = write '
                           '{"line", "error"} for it and predict the rest; fail = stop with exit 2 naming the line'),
    "backend": (None, "torch (a run or checkpoint) or onnx (a `regner export` directory); default: what ckpt holds"),
    "format": ("jsonl", 'jsonl = {text, entities} per line; cluener = the CLUENER2020 leaderboard submission '
                        '{"id", "label": {type: {mention: [[start, end_inclusive]]}}} (ids from the input\'s "id" '
                        'field, else 0, 1, ... by line)'),
}
PREDICT_HELP = options_help(
    "usage: regner predict ckpt=RUN [key=value ...]\n\nEntities for raw texts, one JSON line per input line ({text, "
    "entities: [{start, end, type, text, score}]}, end exclusive, score = σ(logit)).", PREDICT_OPTIONS)


def key_value_options(argv: list[str], spec: dict[str, tuple], command: str) -> dict:
    """``key=value`` arguments over the defaults of ``spec`` ({key: (default, help)}); an unknown one
    is a UserError naming the keys."""
    options = {k: v[0] for k, v in spec.items()}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise UserError(f"unknown argument {arg!r}: expected key=value with a key among "
                            f"{', '.join(spec)} (regner {command} --help)")
        options[key] = value
    return options


def int_option(options: dict, key: str, low: int, high: int | None = None) -> None:
    """``options[key]`` as an integer in [low, high], else a ConfigError naming the key."""
    from regner.errors import ConfigError

    expected = f"an integer ≥ {low}" + (f" and ≤ {high}" if high is not None else "")
    try:
        value = int(options[key])
    except (ValueError, TypeError):
        raise ConfigError(key, options[key], expected) from None
    if value < low or (high is not None and value > high):
        raise ConfigError(key, value, expected)
    options[key] = value


def float_option(options: dict, key: str, expected: str, low: float | None = None) -> None:
    """``options[key]`` (unless None) as a finite float ≥ ``low``, else a ConfigError saying ``expected``."""
    import math

    from regner.errors import ConfigError

    if options[key] is None:
        return
    try:
        value = float(options[key])
    except ValueError:
        raise ConfigError(key, options[key], expected) from None
    if not math.isfinite(value) or (low is not None and value < low):
        raise ConfigError(key, value, expected)
    options[key] = value


def choice_option(options: dict, key: str, choices: tuple) -> None:
    from regner.errors import ConfigError

    if options[key] not in choices:
        shown = [c for c in choices if c is not None]
        raise ConfigError(key, options[key], ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else shown[0])


def check_backend_and_device(options: dict) -> None:
    from regner.errors import ConfigError
    from regner.validation import DEVICE

    choice_option(options, "backend", (None, "torch", "onnx"))
    if not DEVICE.match(options["device"]):
        raise ConfigError("device", options["device"], "auto, cpu, mps, cuda or cuda:N")


def predict_options(argv: list[str]) -> dict:
    """Parse and check ``key=value`` arguments; a bad one is a ConfigError naming it."""
    from regner.errors import ConfigError

    options = key_value_options(argv, PREDICT_OPTIONS, "predict")
    if not options["ckpt"]:
        raise ConfigError("ckpt", None, "a run directory or checkpoint directory (ckpt=RUN)")
    int_option(options, "batch_size", 1)
    float_option(options, "threshold", "a finite number (a logit; 0 = probability 0.5)")
    choice_option(options, "on_error", ("record", "fail"))
    choice_option(options, "format", ("jsonl", "cluener"))
    check_backend_and_device(options)
    return options


def _predict(argv: list[str]) -> None:
    """``key=value`` arguments like the Hydra commands, but no run directory and clean stdout."""
    if key_value_command(argv, PREDICT_HELP):
        return
    try:
        options = predict_options(argv)
        from regner.inference import LoadedModel, read_texts
        from regner.trainer import resolve_device

        loaded = LoadedModel.load(options["ckpt"], resolve_device(options["device"]), options["backend"])
        source = options["input"]
        if source == "-":
            lines = list(read_texts(sys.stdin.buffer, "<stdin>"))
        else:
            if not Path(source).is_file():
                raise DataError("input file not found", source)
            with open(source, "rb") as handle:
                lines = list(read_texts(handle, source))
        bad = [line for line in lines if line.error]
        if bad and options["on_error"] == "fail":
            raise DataError(bad[0].error + " (on_error=fail; on_error=record writes an error record and goes on)")
        good = [line for line in lines if line.error is None]
        predictions = iter(loaded.predict([line.text for line in good], options["batch_size"], options["threshold"]))
    except user_errors() as err:
        report_error("predict", err)
    if options["format"] == "cluener":
        from regner.submission import cluener_record

        records = [{"line": line.number, "error": line.error} if line.error else
                   cluener_record(line.number - 1 if line.id is None else line.id, next(predictions))
                   for line in lines]
    else:
        records = [{"line": line.number, "error": line.error} if line.error else
                   {"text": line.text, "entities": next(predictions)} for line in lines]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if options["output"] == "-":
        sys.stdout.write(text)
    else:
        from regner.runio import atomic_write_text

        atomic_write_text(options["output"], text)
    if bad:
        print(f"regner predict: warning: {len(bad)} of {len(lines)} input lines could not be read; their records "
              f'hold {{"line", "error"}} instead of entities (first: {bad[0].error})', file=sys.stderr)


EXPORT_OPTIONS = {
    "ckpt": (None, "run directory, or its checkpoint/ directory (required)"),
    "output": (None, "directory to write (default: <run dir>/onnx); replaced only once the new export is complete"),
    "opset": ("17", "ONNX opset version (an integer ≥ 14)"),
}
EXPORT_HELP = options_help(
    "usage: regner export ckpt=RUN [key=value ...]\n\nONNX model of encoder + GlobalPointer head (dynamic batch and "
    "length; output: fp32 span scores), with the tokenizer and label map; run it with regner predict ckpt=DIR "
    "backend=onnx. Needs pip install 'regner[serve]'.", EXPORT_OPTIONS)


def _export(argv: list[str]) -> None:
    if key_value_command(argv, EXPORT_HELP):
        return
    from regner.errors import ConfigError

    logging.getLogger("regner").setLevel(logging.INFO)  # the exporter's own INFO lines are not the user's business
    options = key_value_options(argv, EXPORT_OPTIONS, "export")
    if not options["ckpt"]:
        raise ConfigError("ckpt", None, "a run directory or checkpoint directory (ckpt=RUN)")
    if not options["opset"].isdigit() or int(options["opset"]) < 14:
        raise ConfigError("opset", options["opset"], "an integer ≥ 14")
    require_extra("export", ("onnx", "onnxruntime", "onnxscript"))
    from regner.export import export_onnx
    from regner.inference import checkpoint_dir

    source = checkpoint_dir(options["ckpt"])
    run_dir = source.parent if source.name == "checkpoint" else source
    output = Path(options["output"]) if options["output"] else run_dir / "onnx"
    path = export_onnx(source, output, int(options["opset"]))
    print(f"regner export: {path} (predict with: regner predict ckpt={output} backend=onnx)", file=sys.stderr)


SERVE_OPTIONS = {
    "ckpt": (None, "run directory, its checkpoint/ directory, or a `regner export` directory (required)"),
    "host": ("127.0.0.1", "address to listen on (0.0.0.0: every interface)"),
    "port": ("8000", "TCP port (0: any free port, printed at start)"),
    "backend": (None, "torch or onnx; default: what ckpt holds"),
    "device": ("cpu", "cpu, cuda, cuda:N or auto (backend torch)"),
    "threshold": (None, "logit threshold for a span (default: the checkpoint's head.threshold)"),
    "max_length": ("10000", "longest text accepted, in characters (longer: 413)"),
    "max_texts": ("64", "most texts in one request (more: 413)"),
    "max_batch": ("32", "most texts per model call when batching concurrent requests"),
    "max_wait_ms": ("5", "how long a request waits for others to batch with (0: no waiting)"),
    "threads": (None, "CPU threads for inference (default: torch's / onnxruntime's own)"),
    "log_level": ("info", "uvicorn's log level: critical, error, warning, info, debug"),
}
SERVE_HELP = options_help(
    "usage: regner serve ckpt=RUN [key=value ...]\n\nAn HTTP service (FastAPI + uvicorn): POST /predict "
    '{"text": "..."} or {"texts": [...]} answers regner predict\'s JSON; GET /health; GET /labels; OpenAPI docs at '
    "/docs. Concurrent requests are batched. Needs pip install 'regner[serve]'.", SERVE_OPTIONS)


def serve_options(argv: list[str]) -> dict:
    from regner.errors import ConfigError

    options = key_value_options(argv, SERVE_OPTIONS, "serve")
    if not options["ckpt"]:
        raise ConfigError("ckpt", None, "a run, checkpoint or export directory (ckpt=RUN)")
    int_option(options, "port", 0, 65535)
    for key in ("max_length", "max_texts", "max_batch") + (("threads",) if options["threads"] is not None else ()):
        int_option(options, key, 1)
    float_option(options, "max_wait_ms", "a finite number ≥ 0", low=0)
    float_option(options, "threshold", "a finite number (a logit; 0 = probability 0.5)")
    check_backend_and_device(options)
    choice_option(options, "log_level", ("critical", "error", "warning", "info", "debug"))
    return options


def _serve(argv: list[str]) -> None:
    if key_value_command(argv, SERVE_HELP):
        return
    import socket

    options = serve_options(argv)
    require_extra("serve", ("fastapi", "uvicorn"))
    import torch
    import uvicorn

    from regner.inference import LoadedModel
    from regner.serving import ServeSettings, create_app
    from regner.trainer import resolve_device

    family = socket.AF_INET6 if ":" in options["host"] else socket.AF_INET
    # proto IPPROTO_TCP, as asyncio's own listeners have: only then does asyncio set TCP_NODELAY on accepted
    # connections, without which a keep-alive client waits ~40 ms (Nagle + delayed ACK) for every answer
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options["host"], options["port"]))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {options['host']}:{options['port']} ({err.strerror}): choose another "
                        f"port=N or host=ADDRESS") from None
    host, port = sock.getsockname()[:2]  # bound before the model loads: a taken port fails at once
    host = f"[{host}]" if family == socket.AF_INET6 else host
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    try:
        loaded = LoadedModel.load(options["ckpt"], resolve_device(options["device"]), options["backend"],
                                  threads=options["threads"])
    except user_errors() as err:
        sock.close()
        report_error("serve", err)
    settings = ServeSettings(max_length=options["max_length"], max_texts=options["max_texts"],
                             max_batch=options["max_batch"], max_wait_ms=options["max_wait_ms"],
                             threshold=options["threshold"])
    backend = loaded.config.get("backend", "torch")
    print(f"regner serve: {options['ckpt']} ({backend}, {len(loaded.model.labels)} entity types) on "
          f"http://{host}:{port} — POST /predict, GET /health, GET /labels, docs at /docs", file=sys.stderr, flush=True)
    app = create_app(loaded, settings, str(options["ckpt"]))
    server = uvicorn.Server(uvicorn.Config(app, log_level=options["log_level"], timeout_graceful_shutdown=10))
    server.run(sockets=[sock])


def warn_unused_sweep_keys(args: list[str], max_checks: int = 12) -> list[str]:
    """Warn (on stderr) when a swept ``alpha`` or ``kl`` cannot change what the chosen regularizer
    computes, e.g. ``regner sweep alpha=1,4`` with ``regularizer=none``: its jobs would be identical
    runs counted as if they were different. Returns the warnings."""
    import itertools

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from regner.trainer import instantiate_regularizer

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


def version_text() -> str:
    from regner import __version__

    try:
        import torch
        import transformers

        extra = f" (torch {torch.__version__}, transformers {transformers.__version__})"
    except ImportError:
        extra = ""
    return f"regner {__version__}{extra}"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version", "version"):
        print(version_text())
        return
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            _hydra_app(_resume_overrides(rest))
        elif command == "sweep":
            if "-m" not in rest and "--multirun" not in rest:
                rest = ["--multirun", *rest]
            warn_unused_sweep_keys(rest)
            _hydra_app(rest)
        elif command == "report":
            _report(rest)
        elif command == "evaluate":
            if not any(a.startswith("hydra.run.dir=") for a in rest):
                rest = ["hydra.run.dir=outputs/evaluate/${now:%Y-%m-%d}/${now:%H-%M-%S}", *rest]
            _hydra_app(rest, _evaluate_task)
        elif command == "pretrain":
            if any(a.startswith("resume=") and a != "resume=null" for a in rest):
                target = next(a for a in rest if a.startswith("resume="))
                rest = [*rest, f"hydra.run.dir={Path(target.split('=', 1)[1]).expanduser().resolve()}"]
            _hydra_app(rest, _pretrain_task, config_name="pretraining")
        elif command == "predict":
            _predict(rest)
        elif command == "export":
            _export(rest)
        elif command == "serve":
            _serve(rest)
        else:
            print(f"regner: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
            sys.exit(2)
    except UserError as err:
        report_error(command, err)
    except KeyboardInterrupt:
        print(f"regner {command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
