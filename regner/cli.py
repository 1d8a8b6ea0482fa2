"""The ``regner`` command. ``train``, ``sweep`` and ``evaluate`` are Hydra apps over ``conf/``;
``report`` uses argparse, and ``predict`` takes ``key=value`` arguments but keeps stdout clean for
its JSONL (no Hydra logging, no run directory).

    regner train [overrides...]        one run (Hydra single-run mode)
    regner sweep [overrides...]        Hydra multirun (-m is implied), e.g. regner sweep alpha=1,4
    regner report DIR [DIR...]         aggregate the runs under DIRs into report.md/.csv and plots
    regner evaluate ckpt=RUN [data=..] score a saved model; writes metrics.json like training does
    regner predict ckpt=RUN [input=FILE] [output=FILE] [batch_size=64] [threshold=..] [device=cpu]
                                       entities for raw texts (lines or JSONL "text"), as JSONL
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from regner.data.errors import DataError

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

    from regner.encoder import EncoderError
    from regner.trainer import DeviceError

    return DataError, EncoderError, DeviceError, MissingMandatoryValue


def _fail(err: BaseException, run_dir: Path, multirun: bool = False) -> None:
    """Report a failed run in one paragraph; exit unless other sweep jobs should go on."""
    from regner.trainer import TrainingDiverged

    log.error("run failed: %s", err)
    log.error("nothing was written as a finished run; %s says why", run_dir / "status.json")
    if not multirun:
        sys.exit(1 if isinstance(err, TrainingDiverged) else 2)


def _train_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from regner.data.loading import absolutize_paths
    from regner.distributed import env_rank
    from regner.runio import atomic_write_text
    from regner.trainer import TrainingDiverged, run_training

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if cfg.get("resume"):
            cfg = resumable_config(Path(cfg.resume))
        elif env_rank() == 0:
            absolutize_paths(cfg.data, Path.cwd())
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        metrics = run_training(cfg, run_dir, resume=bool(cfg.get("resume")))
    except (*user_errors(), TrainingDiverged) as err:
        _fail(err, run_dir, multirun)
        return None  # let the other jobs of the sweep go on; the report flags this one
    log.info("run directory: %s", run_dir)
    return float(metrics["dev"]["f1"])


def resumable_config(run_dir: Path):
    """The saved config of the run to continue, with ``resume`` set."""
    from omegaconf import OmegaConf

    if not (run_dir / "config.yaml").exists():
        raise DataError("cannot resume: not a regner run directory (no config.yaml)", str(run_dir))
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    if status.get("status") == "completed":
        raise DataError("cannot resume: this run has already completed", str(run_dir))
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.resume = str(run_dir)
    return cfg


def latest_unfinished_run(root: Path = Path("outputs")) -> Path:
    """Most recent run under ``root`` that saved resumable state but did not complete."""
    from regner.trainer import LAST_STATE

    candidates = []
    for status_file in root.glob("**/status.json"):
        run_dir = status_file.parent
        state = run_dir / LAST_STATE
        if state.exists() and json.loads(status_file.read_text()).get("status") != "completed":
            candidates.append((state.stat().st_mtime, run_dir))
    if not candidates:
        raise DataError("trainer.resume=true but no unfinished run with saved state was found", str(root))
    return max(candidates)[1]


def _resume_overrides(argv: list[str]) -> list[str]:
    """Run a resumed training in the original run directory instead of a new one."""
    if "trainer.resume=true" in argv:
        try:
            run_dir = latest_unfinished_run()
        except DataError as err:
            raise SystemExit(f"regner: {err}") from None
        argv = [a for a in argv if a != "trainer.resume=true"] + [f"resume={run_dir}"]
    for arg in argv:
        if arg.startswith("resume=") and arg != "resume=null":
            run_dir = Path(arg.split("=", 1)[1]).expanduser().resolve()
            argv = [a for a in argv if a != arg] + [f"resume={run_dir}", f"hydra.run.dir={run_dir}"]
            break
    return argv


def _evaluate_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from regner.data.loading import load_splits
    from regner.evaluation import evaluate
    from regner.inference import LoadedModel, checkpoint_dir
    from regner.runio import METRICS_FILE, atomic_write_json, atomic_write_text, write_status
    from regner.trainer import resolve_device

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    write_status(run_dir, "running")
    try:
        if not cfg.get("ckpt"):
            raise DataError("regner evaluate needs ckpt=<run dir or checkpoint dir>")
        ckpt = checkpoint_dir(cfg.ckpt)
        data_cfg = cfg.data
        data_overridden = any(o.split("=")[0].lstrip("+~").startswith("data") for o in hydra_cfg.overrides.task)
        saved = ckpt.parent / "config.yaml"
        if not data_overridden and saved.exists():
            data_cfg = OmegaConf.load(saved).data  # its data paths were saved absolute
            log.info("evaluating on the data the model was trained with (%s); pass data=... to change", data_cfg.name)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.merge(cfg, {"data": data_cfg}), resolve=True))
        loaded = LoadedModel.load(ckpt, resolve_device(cfg.trainer.device))
        splits = load_splits(data_cfg)
        results: dict = {"status": "completed", "checkpoint": str(ckpt),
                         "run": {"dataset": splits.name, "labels": loaded.model.labels}}
        for name in ("dev", "test"):
            examples = getattr(splits, name)
            if examples is None:
                results[name] = None
                continue
            split = loaded.encode(name, examples)
            results[name], _ = evaluate(loaded.model, split, loaded.device, cfg.trainer.eval_batch_size,
                                        loaded.config.get("threshold", 0.0), with_seqeval=True)
            log.info("%s: P %.4f R %.4f F1 %.4f", name, results[name]["precision"], results[name]["recall"],
                     results[name]["f1"])
    except user_errors() as err:
        write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
        _fail(err, run_dir)
    atomic_write_json(run_dir / METRICS_FILE, results)
    write_status(run_dir, "completed")
    log.info("metrics written to %s", run_dir / METRICS_FILE)


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


def _hydra_app(argv: list[str], task=None) -> None:
    import hydra

    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(task or _train_task)
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


PREDICT_KEYS = {"ckpt": None, "input": "-", "output": "-", "batch_size": "64", "threshold": None, "device": "cpu"}


def _predict(argv: list[str]) -> None:
    """``key=value`` arguments like the Hydra commands, but no run directory and clean stdout."""
    from regner.inference import LoadedModel, read_texts

    options = dict(PREDICT_KEYS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            print(f"regner predict: unknown argument {arg!r}; keys: {', '.join(PREDICT_KEYS)}", file=sys.stderr)
            sys.exit(2)
        options[key] = value
    if not options["ckpt"]:
        print("regner predict: ckpt=<run dir or checkpoint dir> is required", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from regner.trainer import resolve_device

        loaded = LoadedModel.load(options["ckpt"], resolve_device(options["device"]))
        source = options["input"]
        if source == "-":
            texts = list(read_texts(sys.stdin, "<stdin>"))
        else:
            if not Path(source).is_file():
                raise DataError(f"input file not found: {source}")
            with open(source, encoding="utf-8-sig") as handle:
                texts = list(read_texts(handle, source))
        threshold = float(options["threshold"]) if options["threshold"] is not None else None
        predictions = loaded.predict(texts, int(options["batch_size"]), threshold)
    except user_errors() as err:
        print(f"regner predict: {err}", file=sys.stderr)
        sys.exit(2)
    lines = "".join(json.dumps({"text": t, "entities": p}, ensure_ascii=False) + "\n" for t, p in zip(texts, predictions))
    if options["output"] == "-":
        sys.stdout.write(lines)
    else:
        from regner.runio import atomic_write_text

        atomic_write_text(options["output"], lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        _hydra_app(_resume_overrides(rest))
    elif command == "sweep":
        if "-m" not in rest and "--multirun" not in rest:
            rest = ["--multirun", *rest]
        _hydra_app(rest)
    elif command == "report":
        _report(rest)
    elif command == "evaluate":
        if not any(a.startswith("hydra.run.dir=") for a in rest):
            rest = [*rest, "hydra.run.dir=outputs/evaluate/${now:%Y-%m-%d}/${now:%H-%M-%S}"]
        _hydra_app(rest, _evaluate_task)
    elif command == "predict":
        _predict(rest)
    else:
        print(f"regner: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
