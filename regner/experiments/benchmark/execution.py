"""Running a benchmark: the sweeps it launches, their progress, recovery of interrupted runs,
pruning of what finished runs do not need, and the wall-time ledger."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from regner.experiments.benchmark.profile import REPO, Job, Profile, ProfileError, preset_yaml, profile_spec
from regner.experiments.benchmark.runs import pending_jobs, read_json, run_dir, run_state
from regner.experiments.compare.identity import encoder_files_digest


def write_presets(out: Path, jobs: list[Job]) -> Path:
    root = out / "presets"
    folder = root / "experiment"
    folder.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        text = preset_yaml(job.overrides)
        path = folder / f"{job.preset}.yaml"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return root


def sweep_command(out: Path, presets: Path, jobs: list[Job], seeds: list[int], stage: str, dataset: str,
                  parallel: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "regner.cli", "sweep",
            f"experiment={','.join(job.preset for job in jobs)}", f"seed={','.join(map(str, seeds))}",
            f"trainer.num_threads={threads}", "trainer.progress=false",
            f"hydra.searchpath=[file://{presets.resolve()}]",
            f"hydra.sweep.dir={(out / dataset / stage).resolve()}",
            "hydra.sweep.subdir=${hydra.runtime.choices.experiment}/seed-${seed}",
            *(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"] if parallel > 1 else [])]


def recover(directories: list[Path], threads: int, say, log_path: Path) -> None:
    """Before a sweep reruns: resume interrupted runs from their saved state; remove runs that were
    killed before saving anything (nothing of them can be kept, and a sweep refuses a used directory)."""
    for directory in directories:
        state = run_state(directory)
        if state == "abandoned":
            say(f"removing {directory}: killed before it saved any state")
            shutil.rmtree(directory)
        elif state == "interrupted":
            say(f"resuming {directory}")
            command = [sys.executable, "-m", "regner.cli", "train", f"resume={directory}",
                       f"trainer.num_threads={threads}"]
            with log_path.open("a", encoding="utf-8") as log:
                log.write(f"$ {shlex.join(['regner', *command[3:]])}\n")
                log.flush()
                subprocess.run(command, env=thread_env(threads), stdout=log, stderr=subprocess.STDOUT)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a training process: ``threads`` CPU threads, and offline (no hub download)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


class Progress:
    """A rich progress bar over every run of the benchmark: done / failed / remaining and an ETA."""

    def __init__(self, directories: list[Path], enabled: bool = True):
        self.directories, self.enabled = directories, enabled
        self._bar = self._task = None

    def counts(self) -> tuple[int, int]:
        states = [run_state(d) for d in self.directories]
        done = sum(s == "completed" for s in states)
        failed = sum(s in ("failed", "diverged") for s in states)
        return done, failed

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("benchmark"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("runs", total=len(self.directories), info="")
            self.update()
        return self

    def update(self) -> None:
        if self._bar is None:
            return
        done, failed = self.counts()
        remaining = len(self.directories) - done - failed
        self._bar.update(self._task, completed=done + failed,
                         info=f"done {done}, failed {failed}, remaining {remaining}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self.update()
            self._bar.stop()


def _reap_group(pgid: int, grace: float = 30.0) -> None:
    """Once the sweep has exited, joblib's idle workers may linger in its process group: give any
    still saving its state ``grace`` seconds, then end them."""
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_sweep(command: list[str], log_path: Path, threads: int, progress: Progress, prune_runs: bool = True) -> int:
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(['regner', *command[3:]])}\n")
        log.flush()
        # Its own process group, so that an interrupt reaches every joblib worker: each saves its state and stops.
        process = subprocess.Popen(command, env=thread_env(threads), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        stop = threading.Event()

        def poll():
            while not stop.wait(5.0):
                progress.update()
                if prune_runs:
                    prune(progress.directories)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            code = process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):  # SIGTERM: every job saves its state; the next run resumes it
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            _reap_group(process.pid)
            raise
        finally:
            stop.set()
            poller.join()
    progress.update()
    if prune_runs:
        prune(progress.directories)
    return code


def machine_description() -> str:
    import platform

    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
        version = f"torch {torch.__version__}"
    except ImportError:
        device, version = f"CPU, {os.cpu_count()} cores", "torch ?"
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    return f"{device} ({model or platform.machine()}, Python {platform.python_version()}, {version})"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def encoder_fingerprint(encoder: str | None) -> str:
    """sha256 of the encoder directory's config, weights and tokenizer: a benchmark continued in
    another session must fine-tune the very same encoder (``make pretrain`` reruns give it bit for bit
    on the same machine type, and this checks it)."""
    return encoder_files_digest(Path(encoder)) if encoder else "none"


# Heavy files a finished benchmark run does not need (the report reads metrics.json, status.json and
# config.yaml): removed as runs complete unless the profile sets keep_checkpoints, and ignored by git,
# so that a benchmark directory can be committed with its raw results.
PRUNED = ("checkpoint", "last")


GITIGNORE = "# written by regner.experiments.benchmark: what a finished benchmark run does not need\n" \
            "checkpoint/\nlast/\n.hydra/\ntensorboard/\nregner.log\n.regner.lock\n*.tmp\npresets/\n*.log\nmultirun.yaml\n"


def prune(directories: list[Path]) -> None:
    """Remove the checkpoint and resumable state of completed runs (disk: ~75 MB each for zh-mini)."""
    for directory in directories:
        if run_state(directory) == "completed":
            for name in PRUNED:
                shutil.rmtree(directory / name, ignore_errors=True)


def claim_out(out: Path, profile_file: Path, encoder: str | None) -> None:
    """``out`` holds this benchmark only: a rerun with the same profile and encoder continues it;
    another profile or encoder (whose runs would be mistaken for these) is refused."""
    spec = profile_spec(profile_file)  # its content: comments and the description may change
    identity = yaml.safe_dump({"profile": spec, "encoder": str(encoder),
                               "encoder_sha256": encoder_fingerprint(encoder)}, allow_unicode=True, sort_keys=True)
    saved = out / "profile.yaml"
    if saved.exists() and saved.read_text(encoding="utf-8") != identity:
        raise ProfileError(f"{out} holds a benchmark of another profile or encoder ({saved} differs from "
                           f"{profile_file}); continue it with that profile, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        saved.write_text(identity, encoding="utf-8")
    if not (out / ".gitignore").exists():
        (out / ".gitignore").write_text(GITIGNORE, encoding="utf-8")


class Ledger:
    """Wall time of every invocation of the benchmark on ``out``, so a resumed one states its total."""

    def __init__(self, out: Path):
        self.path, self.start = out / "timing.json", time.time()
        self.data = read_json(self.path) or {"invocations": []}
        # this invocation's place in the list: two invocations started within one second (a cache-only one
        # takes less) have the same "started", which must not make the second replace the first
        self.index = len(self.data["invocations"])

    def _others(self) -> list[dict]:
        return [r for i, r in enumerate(self.data["invocations"]) if i != self.index]

    def save(self, finished: bool | None = None) -> None:
        """Record this invocation so far (``finished`` None: still running, as written every minute while
        it runs, so a machine that goes away mid-run still leaves its time)."""
        from regner.runs.io import atomic_write_json

        started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.start))
        entry = {"started": started, "seconds": round(time.time() - self.start, 1), "finished": bool(finished),
                 "machine": machine_description()}
        atomic_write_json(self.path, {**self.data, "invocations": [*self._others(), entry]})
        self.saved = time.time()

    def close(self, finished: bool) -> None:
        self.save(finished)
        self.data = read_json(self.path) or self.data

    def tick(self) -> None:
        if time.time() - getattr(self, "saved", 0.0) > 60:
            self.save()

    def machines(self) -> list[str]:
        """The machines the recorded invocations ran on, each once, in order of first use."""
        return list(dict.fromkeys(i["machine"] for i in self.data["invocations"] if i.get("machine")))

    def summary(self, include_now: bool = True) -> str:
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.start))
        runs = self._others()
        total = sum(i["seconds"] for i in runs) + (time.time() - self.start if include_now else 0.0)
        first = min([started, *(r["started"] for r in runs)]) if include_now else \
            min((r["started"] for r in runs), default=started)
        return (f"{total / 3600:.2f} h of wall time in {len(runs) + include_now} invocation(s) "
                f"(first started {first})")


def run_stage(out: Path, dataset: str, stage: str, jobs: list[Job], seeds: list[int], parallel: int, threads: int,
              progress: Progress, say, prune_runs: bool = True) -> int:
    pending = pending_jobs(out, jobs, seeds)
    if not pending:
        return 0
    presets = write_presets(out, pending)
    recover([run_dir(out, job, s) for job in pending for s in seeds], threads * parallel, say,
            out / f"{dataset}-{stage}.log")
    pending = pending_jobs(out, pending, seeds)
    if not pending:
        return 0
    say(f"{dataset} {stage}: {len(pending)} preset(s) × seed(s) {','.join(map(str, seeds))}, {parallel} job(s) in parallel with "
        f"{threads} thread(s) each")
    return run_sweep(sweep_command(out, presets, pending, seeds, stage, dataset, parallel, threads),
                     out / f"{dataset}-{stage}.log", threads, progress, prune_runs)


def run_throughput(out: Path, profile: Profile, say) -> None:
    if (out / "throughput.json").exists() or not profile.throughput:
        return
    say("measuring time per step and peak memory of every method alone (scripts/bench_throughput.py)")
    rows = [m.throughput or m.name for m in profile.methods.values()]
    command = [sys.executable, str(REPO / "scripts" / "bench_throughput.py"), *profile.throughput,
               "--regularizers", ",".join(dict.fromkeys(["none", *rows])),
               "--json", str(out / "throughput.json.tmp"), "--out", str(out / "throughput.md")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        say(f"bench_throughput failed (costs left out of the report):\n{result.stderr[-2000:]}")
        return
    (out / "throughput.json.tmp").replace(out / "throughput.json")


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class TotalProgress(Progress):
    """Progress over every run the benchmark will make (stage-2 directories exist only once chosen);
    each update also records the wall time so far in the ledger."""

    def __init__(self, directories, total: int, enabled: bool = True, ledger: Ledger | None = None):
        super().__init__([], enabled)
        self._list, self.total, self.ledger = directories, total, ledger

    def counts(self) -> tuple[int, int]:
        self.directories = self._list()
        return super().counts()

    def update(self) -> None:
        self.directories = self._list()
        super().update()
        if self.ledger is not None:
            self.ledger.tick()

    def __enter__(self):
        super().__enter__()
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)
        return self
