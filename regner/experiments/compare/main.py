"""``regner compare``: check the profile, claim the output directory, gather the cache, plan or run the
comparison, and write its report (after every round, so an interrupted one has a partial report)."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import yaml

from regner.experiments.benchmark.execution import Ledger, machine_description, raise_interrupt
from regner.experiments.compare import report
from regner.experiments.compare.cache import RunIndex
from regner.experiments.compare.driver import WATCH, Driver
from regner.experiments.compare.estimate import plan_lines
from regner.experiments.compare.execution import Executor, make_slots
from regner.experiments.compare.identity import encoder_fingerprint
from regner.experiments.compare.planned import Composer
from regner.experiments.compare.profile import CompareError, CompareProfile, load_profile
from regner.runs.io import JsonFileError, atomic_write_json, read_json_object

# options of the invocation, not of the comparison: they may change between invocations on one directory
INVOCATION_KEYS = ("out", "cache", "train", "dry_run", "progress", "budget", "description", "jobs",
                   "jobs_per_device", "devices", "encoder_dir", "estimate",  # the encoder counts by its fingerprint
                   "contrasts", "curves")  # the report's secondary analyses: no run depends on them


# design keys a comparison may change between invocations: futility is non-binding (it only stops methods,
# the alpha spending is the same), so neither error rate depends on them
NON_BINDING = ("futility_from", "futility_power")


def say(message: str) -> None:
    print(f"regner compare: {message}", file=sys.stderr, flush=True)


def comparison_record(spec: dict, profile: CompareProfile) -> str:
    """What ``comparison.yaml`` holds: the design (no invocation option) and the encoder's fingerprint."""
    design = {k: v for k, v in spec.items() if k not in INVOCATION_KEYS}
    fingerprint = encoder_fingerprint(profile.encoder) if profile.encoder else None
    return yaml.safe_dump({"comparison": design, "encoder": profile.encoder, "encoder_sha256": fingerprint},
                          allow_unicode=True, sort_keys=True)


def claim(out: Path, identity: str) -> None:
    """``out`` holds one comparison: the same design continues (with any budget); another is refused."""
    saved = out / "comparison.yaml"
    if saved.exists() and saved.read_text(encoding="utf-8") != identity:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        new = yaml.safe_load(identity)
        changed = sorted(k for k in set(old.get("comparison", {})) | set(new["comparison"])
                         if old.get("comparison", {}).get(k) != new["comparison"].get(k))
        if old.get("encoder_sha256") != new.get("encoder_sha256"):
            changed.append("encoder (its fingerprint)")
        if set(changed) <= set(NON_BINDING):
            before, after = old.get("comparison", {}), new["comparison"]
            moves = ", ".join(f"{k}: {before.get(k)} → {after.get(k)}" for k in changed)
            say(f"{out}: the futility rule changed ({moves}); futility only ever stops a method, so the comparison "
                "continues with the new rule and the same error rates")
            saved.write_text(identity, encoding="utf-8")
            return
        raise CompareError(f"{out} holds another comparison (changed: {', '.join(changed) or 'its record'}); a "
                           f"comparison's directory is never reused for another: choose another out=DIR, and add "
                           f"cache=[{out}] to reuse its runs")
    out.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        saved.write_text(identity, encoding="utf-8")


def committed_ledger(out: Path, profile: CompareProfile, identity: str) -> tuple[Path, dict, float] | None:
    """(root, ledger, its hours) that a new comparison directory takes over: the ledger of a ``cache`` root which
    committed this comparison (its ``comparison.yaml`` is this one's, encoder fingerprint included), so
    ``budget.max_hours`` counts the wall time the committed runs cost. A clone then reproduces the committed edition from the
    cache, and continues a partial one to the same budget, instead of spending a whole new budget beyond it.
    None where ``out`` has its own ledger or no root committed this comparison."""
    if (out / "timing.json").exists():
        return None
    for root in map(Path, profile.cache):
        folder = root if root.is_dir() else root.parent
        record, timing = folder / "comparison.yaml", folder / "timing.json"
        if not (record.is_file() and timing.is_file()) or record.read_text(encoding="utf-8") != identity:
            continue
        try:
            data = read_json_object(timing)
            hours = sum(float(i["seconds"]) for i in data["invocations"]) / 3600
        except (JsonFileError, KeyError, TypeError, ValueError) as err:
            reason = err.reason if isinstance(err, JsonFileError) else \
                'not a ledger ({"invocations": [{"seconds": …}, …]})'
            raise CompareError(f"cache: {timing}: {reason}; it is the ledger of the comparison this one continues "
                               "(its comparison.yaml is this one's): restore it from git, or remove it to give "
                               "this directory a budget of its own") from None
        return folder, data, hours
    return None


def adopt_ledger(out: Path, committed: tuple[Path, dict, float]) -> None:
    folder, data, hours = committed
    atomic_write_json(out / "timing.json", data)
    say(f"continuing the comparison committed in {folder}: its {len(data['invocations'])} invocation(s), "
        f"{hours:.2f} h, count toward budget.max_hours")


def gather(out: Path, profile: CompareProfile) -> RunIndex:
    """The cache: the comparison's own runs first, then every root of ``cache``."""
    index = RunIndex()
    if (out / "runs").is_dir():
        index.scan(out / "runs")
    for root in profile.cache:
        if not Path(root).exists():
            raise CompareError(f"cache: {root} does not exist (a run directory tree or a runs.jsonl.gz archive)")
        added, present = index.scan(root), index.present[str(root)]
        known = "" if added == present else f" ({present - added} of them already found above)"
        say(f"cache: {present} finished run(s) in {root}{known}")
    return index


def plan_text(driver: Driver) -> str:
    p = driver.profile
    race_runs = sum((len(r.arms) + (1 if p.tuning.extend_grid else 0)) * p.tuning.rungs[-1] for r in driver.races.values())
    compare_runs = sum(len(p.methods_in(r, d)) for d, r in p.cells()) * p.design.looks[-1]
    first = driver.units()
    keys = [driver.key(r) for u in first for r in u.runs]
    cached = sum(driver.index.get(k) is not None for k in keys)
    lines = [f"profile {p.name}: {p.description}",
             f"datasets: {', '.join(p.datasets)}; regimes: {', '.join(p.regimes)}; methods: {', '.join(p.methods)}",
             *(f"  {m.name}: {' '.join(m.overrides)}" + (f"; {m.key} raced over {m.grid}" if m.tuned else "")
               for m in p.methods.values()),
             report.design_text(driver),
             f"at most {race_runs + compare_runs} runs ({race_runs} racing, {compare_runs} comparing) before any "
             f"stops early; budget: {p.max_runs or 'no'} run limit, "
             f"{f'{p.max_hours:g} h' if p.max_hours else 'no time limit'}",
             f"first round: {len(keys)} run(s), {cached} of them in the cache ({len(driver.index)} cached runs known)"]
    if p.estimate is not None:
        lines += plan_lines(p, {key: len(race.arms) + (1 if p.tuning.extend_grid else 0)
                                for key, race in driver.races.items()})
    seconds = [r.seconds for r in driver.index.runs.values() if math.isfinite(r.seconds)]
    if seconds and driver.executor:
        slots = len(driver.executor.slots)
        bound = (race_runs + compare_runs) * sum(seconds) / len(seconds) / slots
        span = f"{bound / 3600:.1f} h" if bound >= 3600 else f"{bound / 60:.0f} min"
        lines.append(f"a cached run took {sum(seconds) / len(seconds) / 60:.1f} min on average: the bound is at most "
                     f"{span} with {slots} run(s) at a time (cached runs cost nothing)")
    return "\n".join(lines)


def run_comparison(spec: dict, name: str) -> int:
    profile = load_profile(spec, name)
    watch = spec.get("collapse_watch", "regime")
    if watch not in WATCH:
        raise CompareError(f"collapse_watch: one of {', '.join(WATCH)}, got {watch!r}")
    if profile.encoder and not (Path(profile.encoder) / "config.json").exists():
        raise CompareError(f"encoder_dir: {profile.encoder} is not an encoder directory (no config.json): run `make "
                           "pretrain` first, or pass encoder_dir=DIR (a Hugging Face BERT directory)")
    out = Path(spec.get("out") or Path("outputs") / "compare" / name).expanduser().resolve()
    train, dry_run = bool(spec.get("train", True)), bool(spec.get("dry_run", False))
    slots = make_slots(profile.devices, profile.jobs, profile.jobs_per_device)
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    with Composer() as composer:
        # every arm composed and validated before any data is read or any run is trained
        probe = Driver(profile, out, RunIndex(), composer, None)
        for dataset, regime in profile.cells():
            for method in (profile.methods[m] for m in profile.methods_in(regime, dataset)):
                for value in method.grid or [None]:
                    probe.key(probe.planned(dataset, regime, method.name, value, profile.seeds[0], "compare"))
        index = gather(out, profile)  # a missing cache root is refused before the directory is claimed
        if not dry_run:
            identity = comparison_record(spec, profile)
            committed = committed_ledger(out, profile, identity)  # a damaged one is refused before any write
            claim(out, identity)
            if committed:
                adopt_ledger(out, committed)
        ledger = Ledger(out) if not dry_run else None
        executor = None
        progress = _Progress(enabled=bool(spec.get("progress", True)) and not dry_run)
        if train:
            executor = Executor(slots, threads, out / "train.log", index, say, progress.update)
        hours_before = sum(i["seconds"] for i in ledger.data["invocations"]) / 3600 if ledger else 0.0
        driver = Driver(profile, out, index, composer, executor, say, watch, hours_before)
        if dry_run:
            print(plan_text(driver))
            return 0
        signal.signal(signal.SIGTERM, raise_interrupt)
        finished, code = False, 0
        try:
            with progress:
                while driver.step():
                    ledger.tick()
                    _write(driver, ledger, slots, threads, False)
            finished = not driver.failed
            code = 1 if driver.failed else 0
        except KeyboardInterrupt:
            say(f"interrupted: every run saved its state; rerun the same command to continue ({out})")
            code = 130
        finally:
            if executor is not None:
                executor.close()
            ledger.close(finished)
            _write(driver, ledger, slots, threads, finished)
    done, total = driver.round_progress()
    pending = f"; {done} of the interrupted round's {total} run(s) finished, for the next invocation" if total else ""
    say(f"{len(driver.used)} run(s) used ({driver.trained} trained now, {driver.reused} from the cache){pending}; "
        f"report: {out / 'report.md'}")
    if driver.failed:
        say(f"{len(driver.failed)} run(s) failed: {'; '.join(executor.failures if executor else driver.failed)}")
    return code


def _write(driver: Driver, ledger: Ledger, slots, threads: int, finished: bool) -> None:
    p = driver.profile
    budget_stopped = any(s.stopped_by == "budget" for c in driver.comparisons.values() for s in c.states.values()) \
        or any(r.stopped_by == "budget" for r in driver.races.values())
    state = ("unfinished: partial results" if not finished else
             "cache only (train=false): it stops where the cache ends, and an invocation without train=false "
             "trains the rest" if driver.missing else
             "stopped by its budget: a larger budget continues it" if budget_stopped else "finished")
    budget = ", ".join(x for x in (f"{p.max_runs} runs" if p.max_runs else "",
                                   f"{p.max_hours:g} h" if p.max_hours else "") if x) or "none"
    done, total = driver.round_progress()
    interrupted = (f"; {done} of the interrupted round's {total} runs finished, which no verdict uses until the "
                   "round is complete (the next invocation reads them from the cache)") if total else ""
    preamble = (f"{p.description}. Report written {time.strftime('%Y-%m-%d %H:%M %Z')} ({state}) on "
                f"{machine_description()}: **{len(driver.used)} runs used** ({driver.trained} trained in this "
                f"invocation, {driver.reused} read from the cache{interrupted}); training wall time {ledger.summary()}; "
                f"{len(slots)} run(s) at a time with {threads} thread(s) each; budget: {budget}. "
                f"Reproduce or continue: `{reproduce_command(driver)}`.")
    report.write(driver, preamble)


def reproduce_command(driver: Driver) -> str:
    p = driver.profile
    parts = ["regner compare", f"compare={p.name}"]
    if p.encoder:
        parts.append(f"encoder_dir={p.encoder}")
    if p.max_runs:
        parts.append(f"budget.max_runs={p.max_runs}")
    if p.max_hours:
        parts.append(f"budget.max_hours={p.max_hours:g}")
    return " ".join(parts)


class _Progress:
    """A rich progress bar over the runs of the current round."""

    def __init__(self, enabled: bool):
        self.enabled, self._bar, self._task = enabled, None, None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("compare: round"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("runs", total=1, info="")
        return self

    def update(self, done: int, total: int, running: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, info=f"{running} running")

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
