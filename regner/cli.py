"""The ``regner`` command: ``train`` and ``sweep`` are Hydra apps over ``conf/``; other
subcommands are plain argparse tools.

    regner train [overrides...]        one run (Hydra single-run mode)
    regner sweep [overrides...]        Hydra multirun (-m is implied), e.g. regner sweep alpha=1,4
    regner report DIR [DIR...]         aggregate the runs under DIRs into report.md/.csv and plots
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

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

    from regner.data.errors import DataError
    from regner.encoder import EncoderError
    from regner.trainer import DeviceError

    return DataError, EncoderError, DeviceError, MissingMandatoryValue


def _train_task(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from regner.runio import atomic_write_text
    from regner.trainer import TrainingDiverged, run_training

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        metrics = run_training(cfg, run_dir)
    except (*user_errors(), TrainingDiverged) as err:
        log.error("run failed: %s", err)
        log.error("nothing was written as a finished run; %s says why", run_dir / "status.json")
        if multirun:
            return None  # let the other jobs of the sweep go on; the report flags this one
        sys.exit(1 if isinstance(err, TrainingDiverged) else 2)
    log.info("run directory: %s", run_dir)
    return float(metrics["dev"]["f1"])


def _hydra_app(argv: list[str]) -> None:
    import hydra

    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(_train_task)
    sys.argv = ["regner", *argv]
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


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        _hydra_app(rest)
    elif command == "sweep":
        if "-m" not in rest and "--multirun" not in rest:
            rest = ["--multirun", *rest]
        _hydra_app(rest)
    elif command == "report":
        _report(rest)
    else:
        print(f"regner: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
