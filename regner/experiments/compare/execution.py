"""Training a round's runs in parallel: one ``regner train`` process per run, as many at once as the
machine has slots. On CPU the slots are ``jobs`` (threads = cores ÷ jobs); on GPUs each device holds up to
``jobs_per_device`` runs, and a further run starts on a busy device only when its free memory covers the
largest peak memory runs of the method have needed (or twice the largest of any run, while the method
has none yet); a device with nothing of ours on it always takes the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.experiments.benchmark.execution import PRUNED  # what a finished run does not need (disk)
from regner.experiments.benchmark.execution import thread_env as benchmark_thread_env
from regner.experiments.benchmark.runs import run_state
from regner.experiments.compare.cache import IDENTITY_FILE, CachedRun, RunIndex
from regner.experiments.compare.planned import Planned

CUDA_CONTEXT_MB = 1024.0  # what a process's CUDA context takes beside its tensors


@dataclass
class Task:
    planned: Planned
    directory: Path
    key: str


class Worker:
    """One ``regner train-worker`` process: ``regner train`` command lines in, exit codes out."""

    def __init__(self, threads: int, device: str, log):
        self.process = subprocess.Popen([sys.executable, "-m", "regner.cli", "train-worker"],
                                        env=thread_env(threads, device), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                                        start_new_session=True)  # its own group: an interrupt is ours to pass on
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.answers.put(int(json.loads(line)["code"]))
        self.answers.put(None)  # the worker ended

    def submit(self, command: list[str]) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def answer(self) -> int | None | bool:
        """The exit code of the submitted run; False while it runs; None if the worker died."""
        try:
            return self.answers.get_nowait()
        except queue.Empty:
            return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)

    def close(self, grace: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()


@dataclass
class Slot:
    device: str  # "cpu" or a GPU index
    running: Task | None = None
    worker: Worker | None = None
    started: float = 0.0


def claimed_for(directory: Path) -> Path:
    """``seed-N.key`` beside run directory ``seed-N``: the identity of the run started there."""
    return directory.with_name(directory.name + ".key")


def gpu_free_mb(device: str) -> float | None:
    """Free memory of GPU ``device`` from nvidia-smi (None where it cannot be asked)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", device],
                             capture_output=True, text=True, timeout=10)
        return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def memory_needed(method: str, peaks: dict[str, float]) -> float | None:
    """MB a run of ``method`` is expected to need on a GPU: its method's largest peak so far (+25 %), else
    twice the largest peak of any run, plus the CUDA context; None while nothing has been measured."""
    if method in peaks:
        return 1.25 * peaks[method] + CUDA_CONTEXT_MB
    if peaks:
        return 2.0 * max(peaks.values()) + CUDA_CONTEXT_MB
    return None


def may_start(slot: Slot, slots: list[Slot], method: str, peaks: dict[str, float], free_mb) -> bool:
    """Whether a run of ``method`` may start in ``slot`` now (CPU slots always may)."""
    if slot.device == "cpu":
        return True
    neighbours = [s for s in slots if s.device == slot.device and s.running is not None]
    if not neighbours:
        return True
    need = memory_needed(method, peaks)
    free = free_mb(slot.device)
    return need is not None and free is not None and free >= need


def thread_env(threads: int, device: str) -> dict[str, str]:
    """The benchmark's training environment (threads, offline), on GPU ``device`` where it is one."""
    env = benchmark_thread_env(threads)
    if device != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


@dataclass
class Executor:
    """Runs tasks in ``slots``; what finished is added to ``index``."""

    slots: list[Slot]
    threads: int
    log_path: Path
    index: RunIndex
    say: callable
    progress: callable = lambda done, total, running: None
    peaks: dict[str, float] = field(default_factory=dict)
    free_mb: callable = gpu_free_mb
    poll_s: float = 0.2
    failures: list[str] = field(default_factory=list)
    _log: Any = None

    def command(self, task: Task, slot: Slot) -> list[str]:
        state = run_state(task.directory)
        if state == "interrupted":
            return ["train", f"resume={task.directory}", f"trainer.num_threads={self.threads}"]
        if state in ("abandoned", "failed"):  # nothing of it can be kept (a failed run is tried once more)
            shutil.rmtree(task.directory)
        return ["train", *task.planned.all_overrides, f"trainer.num_threads={self.threads}", "trainer.progress=false",
                f"hydra.run.dir={task.directory}"]

    def _start(self, slot: Slot, task: Task, log) -> None:
        command = self.command(task, slot)
        log.write(f"$ {shlex.join(['regner', *command])}\n")
        log.flush()
        task.directory.parent.mkdir(parents=True, exist_ok=True)
        # which run this directory is for, beside it (the run directory itself must be Hydra's to create)
        claimed_for(task.directory).write_text(task.key + "\n", encoding="utf-8")
        if slot.worker is None or not slot.worker.alive():
            slot.worker = Worker(self.threads, slot.device, log)
        slot.running, slot.started = task, time.time()
        slot.worker.submit(command)

    def _finish(self, slot: Slot, code: int | None) -> CachedRun | None:
        task = slot.running
        slot.running = None
        if code is None:  # the worker died with the run (killed, out of memory): a fresh one takes the next
            slot.worker = None
        run = None
        if run_state(task.directory) in ("completed", "diverged"):
            (task.directory / IDENTITY_FILE).write_text(task.key + "\n", encoding="utf-8")
            for name in PRUNED:
                shutil.rmtree(task.directory / name, ignore_errors=True)
            run = self.index.add_directory(task.directory)
            if run is not None and run.peak_memory_mb is not None:
                method = task.planned.method
                self.peaks[method] = max(self.peaks.get(method, 0.0), run.peak_memory_mb)
        if run is None:
            self.failures.append(f"{task.directory} (exit code {code}; see its regner.log and {self.log_path})")
        return run

    def run(self, tasks: list[Task]) -> None:
        """Train every task (resuming interrupted ones); returns when all have ended. On an interrupt,
        every running run is asked to save its state (SIGTERM) and the interrupt is raised on."""
        pending, done = list(tasks), 0
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", encoding="utf-8")
        try:
            while pending or any(s.running for s in self.slots):
                for slot in self.slots:
                    if slot.running is not None:
                        code = slot.worker.answer()
                        if code is not False:
                            self._finish(slot, code)
                            done += 1
                for slot in self.slots:
                    if pending and slot.running is None and may_start(slot, self.slots, pending[0].planned.method,
                                                                      self.peaks, self.free_mb):
                        self._start(slot, pending.pop(0), self._log)
                self.progress(done, len(tasks), sum(s.running is not None for s in self.slots))
                time.sleep(self.poll_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM every busy worker (its run saves its state), then end every worker (waiting up to
        ``grace`` seconds for a run to save before it is killed)."""
        for slot in self.slots:
            if slot.worker is not None and slot.running is not None:
                slot.worker.signal(signal.SIGTERM)
        deadline = time.time() + grace
        for slot in self.slots:
            if slot.worker is not None:
                slot.worker.close(max(0.1, deadline - time.time()))
            slot.worker = slot.running = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """End the idle workers (after the last round)."""
        self.stop(grace=30.0)


def make_slots(devices: str, jobs: int, jobs_per_device: int) -> list[Slot]:
    """CPU: ``jobs`` slots. GPUs (``devices`` auto with CUDA present, or a list of indices): each device
    ``jobs_per_device`` times."""
    if devices == "cpu":
        return [Slot("cpu") for _ in range(jobs)]
    if devices == "auto":
        indices = _visible_gpus()
        if not indices:
            return [Slot("cpu") for _ in range(jobs)]
    else:
        indices = [d.strip() for d in devices.split(",")]
    return [Slot(index) for _ in range(jobs_per_device) for index in indices]


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
