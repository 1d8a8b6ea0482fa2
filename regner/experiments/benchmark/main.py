"""``scripts/benchmark.py`` (``make benchmark``): plan, run (resumably) and report a benchmark."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

from regner.experiments.benchmark.build import build
from regner.experiments.benchmark.estimate import estimate_text, finished_runs
from regner.experiments.benchmark.execution import (
    Ledger,
    TotalProgress,
    claim_out,
    machine_description,
    raise_interrupt,
    run_stage,
    run_throughput,
    sweep_command,
)
from regner.experiments.benchmark.profile import (
    REPO,
    ProfileError,
    final_jobs,
    load_profile,
    planned_runs,
    profile_path,
    profile_spec,
    reproduce_command,
    schedule,
    tune_jobs,
)
from regner.experiments.benchmark.runs import run_directories
from regner.experiments.benchmark.selection import select
from regner.runs.archive import ARCHIVE, pack, unpack


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/benchmark.py", description=(
        "Benchmark v2 (docs/benchmarks/PROTOCOL.md): stage 1 tunes each regularizer's strength on dev, stage 2 "
        "compares the chosen strengths with none over shared seeds, in a pretrained and a random-init regime."))
    parser.add_argument("--profile", default="cpu", help="scripts/matrices/<profile>.yaml, or a path (default: cpu)")
    parser.add_argument("--out", help="benchmark directory (default outputs/benchmark/<profile>); rerun to continue")
    parser.add_argument("--encoder", help="the pretrained encoder directory ({encoder} in the profile's regimes)")
    parser.add_argument("--jobs", type=int, help="runs in parallel (default: the profile's; threads = cores ÷ jobs)")
    parser.add_argument("--datasets", help="comma list: only these of the profile's datasets")
    parser.add_argument("--report-only", action="store_true", help="write the report from what has run, run nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the stage-1 sweeps and the stage-2 plan")
    parser.add_argument("--pack", action="store_true", help="compact the finished runs of --out into runs.jsonl.gz "
                        "(what a committed benchmark keeps; --report-only reads it, a continuation unpacks it)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"benchmark: {message}", file=sys.stderr, flush=True)

    try:
        file = profile_path(args.profile)
        if not file.exists():
            raise ProfileError(f"no profile {file}; profiles: "
                               f"{', '.join(p.stem for p in sorted((REPO / 'scripts' / 'matrices').glob('*.yaml')))}")
        profile = load_profile(file, args.encoder)
        if args.datasets:
            unknown = [d for d in args.datasets.split(",") if d not in profile.datasets]
            if unknown:
                raise ProfileError(f"--datasets: {unknown} not in the profile ({', '.join(profile.datasets)})")
            profile.datasets = {d: profile.datasets[d] for d in args.datasets.split(",")}
        missing = None
        if profile.encoder and not (Path(profile.encoder) / "config.json").exists():
            missing = ProfileError(f"the pretrained encoder {profile.encoder} does not exist: run `make pretrain` first "
                                   "(about an hour on 2 CPU cores), or pass --encoder DIR (with make: ENCODER=DIR, a "
                                   "Hugging Face BERT directory); `make benchmark PROFILE=demo` needs none")
        if missing and not args.dry_run:
            raise missing
        out = Path(args.out or REPO / "outputs" / "benchmark" / profile.name).resolve()
        parallel = max(1, args.jobs or profile.jobs)
        threads = max(1, (os.cpu_count() or 1) // parallel)
        if args.dry_run:
            for dataset in profile.datasets:
                jobs = tune_jobs(profile, dataset)
                print(shlex.join(["regner", *sweep_command(out, out / "presets", jobs, profile.tune_seeds, "tune",
                                                           dataset, parallel, threads)[3:]]))
                for job in jobs:
                    print(f"  {job.preset}: {' '.join(job.overrides)}")
                final = final_jobs(profile, dataset, {(r, m): "<chosen>" for r in profile.regimes
                                                      for m in profile.methods})
                print(f"then stage 2: {len(final)} presets × seeds {profile.final_seeds}")
            print("order: " + ", ".join(f"{d} {'stage 1' if st == 'tune' else 'stage 2'} seed(s) "
                                        f"{','.join(map(str, seeds))}" for d, st, seeds in schedule(profile)))
            print(estimate_text(out, profile, profile_spec(file)))
            print(f"encoder: {profile.encoder} ({'missing' if missing else 'found'})" if profile.encoder else
                  "encoder: none needed (the profile's regimes use no pretrained encoder)")
            if missing:
                print(f"benchmark: {missing}", file=sys.stderr)
                return 2
            return 0
        if args.pack:
            if not out.is_dir():
                raise ProfileError(f"--pack: no benchmark directory {out}")
            archive = pack(out, exclude=("encoder", "presets"))
            say(f"{archive}: the runs of {out}, compacted ({archive.stat().st_size / 2**20:.1f} MiB)")
            return 0
        if args.report_only:
            ledger = Ledger(out)
            planned = planned_runs(profile)
            done = finished_runs(out, profile)  # a committed benchmark keeps its runs compacted (runs.jsonl.gz)
            command = reproduce_command(profile)
            written = f"{profile.description}. Report written {time.strftime('%Y-%m-%d %H:%M %Z')}"
            if done < planned:
                preamble = (f"{written} from what has run: **{done} of {planned} runs finished** (partial results); "
                            f"wall time so far: {ledger.summary(include_now=False)}. Continue with `{command}`.")
            else:
                preamble = (f"{written}: **{done} of {planned} runs finished**; the benchmark took "
                            f"{ledger.summary(include_now=False)} on {'; '.join(ledger.machines()) or 'unrecorded machines'}. "
                            f"Reproduce: `{command}`.")
            build(out, profile, preamble)
            say(f"report: {out / 'report.md'}")
            return 0
        if (out / ARCHIVE).is_file():  # a compacted (committed) benchmark continues from its run directories
            say(f"unpacking {out / ARCHIVE} to continue the benchmark in {out}")
            unpack(out / ARCHIVE, out)
            (out / ARCHIVE).unlink()
        claim_out(out, file, profile.encoder)
    except ProfileError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2

    ledger, finished, failures = Ledger(out), False, 0
    signal.signal(signal.SIGTERM, raise_interrupt)
    progress = TotalProgress(lambda: run_directories(out, profile), planned_runs(profile),
                             enabled=not args.no_progress, ledger=ledger)
    try:
        with progress:
            chosen: dict[str, dict] = {}
            for dataset, stage, seeds in schedule(profile):
                if stage == "tune":
                    jobs = tune_jobs(profile, dataset)
                else:  # stage 1 of this dataset has run: its choices are final
                    if dataset not in chosen:
                        chosen[dataset], _ = select(profile, out, dataset)
                    jobs = final_jobs(profile, dataset, chosen[dataset])
                failures += run_stage(out, dataset, stage, jobs, seeds, parallel, threads, progress, say,
                                      not profile.keep_checkpoints) != 0
        run_throughput(out, profile, say)
        finished = True
    except KeyboardInterrupt:
        say(f"interrupted: every run saved its state; rerun the same command to continue ({out})")
        return 130
    finally:
        preamble = (f"{profile.description}. Machine: {machine_description()}. Report written "
                    f"{time.strftime('%Y-%m-%d %H:%M %Z')}; the benchmark has taken {ledger.summary()}"
                    f"{'' if finished else ' so far (unfinished: partial results)'}; {parallel} run(s) in parallel "
                    f"with {threads} thread(s) each. Reproduce: `{reproduce_command(profile)}`.")
        ledger.close(finished)
        build(out, profile, preamble)
    say(f"report: {out / 'report.md'}")
    return 1 if failures else 0
