#!/usr/bin/env python
"""Run the standard regularizer × KL matrix (scripts/matrices/<profile>.yaml), then `regner report`.

    python scripts/benchmark.py --profile cpu            # what `make benchmark` runs
    python scripts/benchmark.py --profile gpu --jobs 1   # `make benchmark PROFILE=gpu`
    python scripts/benchmark.py --profile cpu --dry-run  # print the sweeps only

Before the matrix it runs scripts/check_defaults.py (every regularizer's defaults on every shared
dataset; results in <out>/defaults/) and stops if a default collapses, since a matrix around a
broken default answers nothing (--skip-defaults-check to go on anyway).

Each cell of the matrix is one `regner sweep` over the profile's seeds; all cells of one experiment
preset (dataset) share one sweep directory, so `regner report` compares every cost against the
`none` runs measured in the same place. With --jobs N the presets run in N parallel processes with
the CPU threads split between them (cost ratios stay comparable: they are taken within one preset).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def sweep_commands(profile: dict, experiment: str, out_dir: Path, extra: list[str]) -> list[list[str]]:
    commands = []
    for cell in profile["cells"]:
        commands.append([
            sys.executable, "-m", "regner.cli", "sweep", f"experiment={experiment}", *shlex.split(cell),
            f"seed={profile['seeds']}", *extra,
            f"hydra.sweep.dir={out_dir / experiment}",
            "hydra.sweep.subdir=${hydra.job.override_dirname}",
            "hydra.job.config.override_dirname.exclude_keys=[experiment,trainer.num_threads]",
        ])
    return commands


def run_experiment(commands: list[list[str]], threads: int, log_path: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}
    failures = 0
    with log_path.open("a", encoding="utf-8") as log:
        for command in commands:
            command = [*command, f"trainer.num_threads={threads}"]
            log.write("$ " + shlex.join(command[2:]) + "\n")
            log.flush()
            result = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            failures += result.returncode != 0
    return failures


def machine_description() -> str:
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
        version = f"torch {torch.__version__}"
    except ImportError:
        device, version = f"CPU, {os.cpu_count()} cores", "torch ?"
    return f"{device} ({platform.machine()}, {platform.python_implementation()} {platform.python_version()}, {version})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="scripts/matrices/<profile>.yaml")
    parser.add_argument("--out", help="output directory (default outputs/benchmark/<profile>-<date>-<time>)")
    parser.add_argument("--jobs", type=int, default=None, help="presets run in parallel (default: cpu 2, gpu 1)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--skip-defaults-check", action="store_true", help="do not run scripts/check_defaults.py first")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    profile = OmegaConf.to_container(OmegaConf.load(REPO / "scripts" / "matrices" / f"{args.profile}.yaml"))
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out_dir = Path(args.out or REPO / "outputs" / "benchmark" / f"{args.profile}-{stamp}").resolve()
    jobs = args.jobs or (2 if args.profile == "cpu" else 1)
    plan = {exp: sweep_commands(profile, exp, out_dir, args.overrides) for exp in profile["experiments"]}
    if args.dry_run:
        for commands in plan.values():
            for command in commands:
                print(shlex.join(["regner", *command[3:]]))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.skip_defaults_check:
        check = subprocess.run([sys.executable, str(REPO / "scripts" / "check_defaults.py"), "--out",
                                str(out_dir / "defaults"), "--jobs", str(jobs)], cwd=REPO)
        if check.returncode:
            sys.exit("benchmark: a regularizer's default collapses (see above and "
                     f"{out_dir / 'defaults' / 'defaults.md'}); fix it or pass --skip-defaults-check")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"benchmark {args.profile}: {sum(map(len, plan.values()))} sweeps, {jobs} in parallel "
          f"with {threads} thread(s) each; logs in {out_dir}/<experiment>.log", flush=True)
    start = time.time()
    with ThreadPoolExecutor(jobs) as pool:
        futures = {exp: pool.submit(run_experiment, cmds, threads, out_dir / f"{exp}.log") for exp, cmds in plan.items()}
        failures = {exp: f.result() for exp, f in futures.items()}
    minutes = (time.time() - start) / 60
    preamble = (f"Profile `{args.profile}`: {profile['description']}. Seeds {profile['seeds']}. "
                f"Run on {time.strftime('%Y-%m-%d')} on {machine_description()}, {jobs} preset(s) in parallel with "
                f"{threads} thread(s) each; the whole matrix took {minutes:.1f} min. "
                f"Reproduce with `make benchmark{'' if args.profile == 'cpu' else ' PROFILE=' + args.profile}`.")
    report = subprocess.run([sys.executable, "-m", "regner.cli", "report", str(out_dir), "--out", str(out_dir),
                             "--title", f"regner benchmark ({args.profile})", "--preamble", preamble], cwd=REPO)
    failed = {exp: n for exp, n in failures.items() if n}
    if failed:
        print(f"sweeps that exited non-zero: {failed} (see the logs)", file=sys.stderr)
    sys.exit(report.returncode or (1 if failed else 0))


if __name__ == "__main__":
    main()
