"""The parts of `regner compare` below its command line: run identity (the cache key), the run cache, the
racing of strengths and the driver's rounds and budget (driven by a stand-in trainer)."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest
import yaml

from regner.experiments.benchmark.profile import Method
from regner.experiments.compare import report
from regner.experiments.compare.cache import CachedRun, RunIndex
from regner.experiments.compare.driver import Driver
from regner.experiments.compare.identity import FINGERPRINT_FILE, encoder_fingerprint, identity, identity_key
from regner.experiments.compare.profile import CompareError, load_profile
from regner.experiments.compare.racing import Race, step_beyond

CONFIG = {"seed": 1, "alpha": 1.0, "resume": None, "ckpt": None,
          "data": {"name": "weibo", "root": "/data", "train": None, "dev": None, "test": None, "max_train_samples": 300},
          "encoder": {"name": "zh-mini", "pretrained": None, "missing_hint": "run make pretrain"},
          "regularizer": {"name": "rdrop", "alpha": 100.0, "rampup_steps": 100},
          "trainer": {"lr": 5e-4, "num_threads": 1, "progress": False, "loggers": ["tensorboard"], "batch_size": 8}}


def config(**changes) -> dict:
    tree = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        node = tree
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return tree


# -- identity ------------------------------------------------------------------------------------------
def test_identity_ignores_how_a_run_was_watched_but_not_what_it_computed():
    base = identity_key(config())
    assert identity_key(config(trainer__num_threads=4, trainer__progress=True, trainer__loggers=[], resume="/x")) == base
    assert identity_key(config(trainer__lr=1e-3)) != base
    assert identity_key(config(seed=2)) != base
    assert identity_key(config(regularizer__rampup_steps=0)) != base
    # how the head's loss is computed (dense or block by block) changes the last bits only, as threads do
    dense, blockwise = config(), config()
    dense["head"] = {"type": "globalpointer", "threshold": 0.0}
    blockwise["head"] = {"type": "globalpointer", "threshold": 0.0, "blockwise": "auto", "block_rows": 8}
    assert identity_key(blockwise) == identity_key(dense)
    dense["head"]["threshold"] = 0.5
    assert identity_key(blockwise) != identity_key(dense)


def test_data_files_are_named_by_their_content_so_a_copy_elsewhere_is_the_same_run(tmp_path):
    here, there = tmp_path / "a" / "train.txt", tmp_path / "b" / "renamed.txt"
    for path in (here, there):
        path.parent.mkdir()
        path.write_text("张 B-PER\n三 I-PER\n", encoding="utf-8")
    assert identity_key(config(data__train=str(here), data__root=str(here.parent))) == \
        identity_key(config(data__train=str(there), data__root=str(there.parent)))
    there.write_text("李 B-PER\n", encoding="utf-8")
    assert identity_key(config(data__train=str(here))) != identity_key(config(data__train=str(there)))


def test_an_encoder_is_its_fingerprint_and_a_committed_copy_without_weights_keeps_it(tmp_path):
    original, copy = tmp_path / "enc", tmp_path / "committed"
    for directory in (original, copy):
        directory.mkdir()
        (directory / "config.json").write_text('{"hidden_size": 64}', encoding="utf-8")
    (original / "model.safetensors").write_bytes(b"weights")
    fingerprint = encoder_fingerprint(original)
    assert encoder_fingerprint(copy) is None  # no weights, no recorded fingerprint: unknown
    (copy / FINGERPRINT_FILE).write_text(fingerprint + "\n", encoding="utf-8")
    assert identity_key(config(encoder__pretrained=str(original))) == identity_key(config(encoder__pretrained=str(copy)))
    (original / "model.safetensors").write_bytes(b"other weights")
    assert identity_key(config(encoder__pretrained=str(original))) != identity_key(config(encoder__pretrained=str(copy)))
    # a directory elsewhere whose fingerprint a benchmark recorded
    assert identity(config(encoder__pretrained="/gone"), {"/gone": "abc"})["encoder"]["pretrained"] == "sha256:abc"


def test_a_key_added_later_matches_old_runs_at_its_old_behaviour_also_inside_a_stack():
    old = config()
    del old["regularizer"]["rampup_steps"]
    assert identity_key(old) == identity_key(config(regularizer__rampup_steps=0))
    stacked = config()
    stacked["regularizer"] = {"name": "rdrop_fgm", "parts": {"rdrop": {"alpha": 1.0, "rampup_steps": 0}}}
    before = json.loads(json.dumps(stacked))
    del before["regularizer"]["parts"]["rdrop"]["rampup_steps"]
    assert identity_key(stacked) == identity_key(before)


# -- the cache -------------------------------------------------------------------------------------------
def run_files(f1: float, status: str = "completed", seed: int = 1) -> dict[str, str]:
    metrics = {"dev": {"f1": f1}, "test": {"f1": f1 - 0.01}, "train": {"wall_time_s": 12.0, "device": "cpu"}}
    return {"status.json": json.dumps({"status": status}), "metrics.json": json.dumps(metrics),
            "config.yaml": yaml.safe_dump(config(seed=seed))}


def test_the_cache_reads_run_directories_and_archives_and_skips_unfinished_runs(tmp_path):
    for name, files in (("done", run_files(0.5)), ("running", {**run_files(0.5, "running", 2)})):
        directory = tmp_path / "tree" / name
        directory.mkdir(parents=True)
        for file, text in files.items():
            (directory / file).write_text(text, encoding="utf-8")
    archive = tmp_path / "bench" / "runs.jsonl.gz"
    archive.parent.mkdir()
    with gzip.open(archive, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"run": "a/seed-3", "files": run_files(0.02, seed=3)}) + "\n")
    index = RunIndex()
    assert index.scan(tmp_path / "tree") == 1  # the running one is not a result
    assert index.scan(tmp_path / "bench") == 1
    done = index.get(identity_key(config()))
    assert done.f1("test") == pytest.approx(0.49) and done.f1("dev") == 0.5 and not done.collapsed
    collapsed = index.get(identity_key(config(seed=3)))
    assert collapsed.collapsed and collapsed.location.endswith("runs.jsonl.gz::a/seed-3")
    assert index.get(identity_key(config(seed=2))) is None
    with gzip.open(tmp_path / "again.jsonl.gz", "wt", encoding="utf-8") as handle:  # an archive of the same run
        handle.write(json.dumps({"run": "done", "files": run_files(0.5)}) + "\n")
    assert index.scan(tmp_path / "again.jsonl.gz") == 0 and index.present[str(tmp_path / "again.jsonl.gz")] == 1


# -- racing ----------------------------------------------------------------------------------------------
METHOD = Method("rdrop", [], "alpha", [0.3, 1, 3], 1)


def test_racing_drops_an_arm_clearly_behind_on_shared_seeds_and_keeps_a_close_one():
    race = Race(METHOD, [101, 102, 103], (3,), drop_alpha=0.2, extend=False)
    scores = {0.3: [0.50, 0.52, 0.51], 1: [0.60, 0.61, 0.63], 3: [0.59, 0.62, 0.62]}
    for value, values in scores.items():
        for seed, f1 in zip([101, 102, 103], values):
            race.record(value, seed, f1, False)
    race.advance()
    # 1 − 0.3: gaps 0.10, 0.09, 0.12 → mean 0.1033, sd 0.01528, t = 11.7 > t(2, one-sided 0.2) = 1.061
    assert race.arms[0.3].dropped.startswith("behind alpha=1 by 10.33 F1 points")
    # 1 − 3: gaps 0.01, −0.01, 0.01 → t = 0.577 < 1.061: stays
    assert race.arms[3].alive and race.done and race.chosen == 1


def test_racing_runs_survivors_to_the_next_rung_and_a_collapse_drops_at_once():
    race = Race(METHOD, [101, 102, 103, 104], (2, 4), extend=False)
    assert sorted(race.needed()) == sorted((v, s) for v in (0.3, 1, 3) for s in (101, 102))
    for value, seed in race.needed():
        race.record(value, seed, 0.0 if value == 3 else 0.6 + random.Random(f"{value}{seed}").random() / 100,
                    value == 3)
    race.advance()
    assert race.arms[3].dropped.startswith("collapsed") and not race.done and race.rung == 1
    assert {v for v, _ in race.needed()} == {0.3, 1} and {s for _, s in race.needed()} == {103, 104}


def test_a_choice_at_the_grid_edge_extends_the_grid_once():
    race = Race(METHOD, [101, 102], (2,), extend=True)
    for value in METHOD.grid:
        for seed in (101, 102):
            race.record(value, seed, {0.3: 0.5, 1: 0.55, 3: 0.6}[value] + seed / 1e4, False)
    race.advance()
    assert not race.done and race.arms[9.0].added and race.needed() == [(9.0, 101), (9.0, 102)]
    for seed in (101, 102):
        race.record(9.0, seed, 0.7 + seed / 1e4, False)
    race.advance()  # the extension wins, at the new edge: reported, not extended again
    assert race.done and race.chosen == 9.0 and any("beyond" in note for note in race.notes)


def test_steps_beyond_a_grid_follow_its_own_scale():
    assert step_beyond(Method("m", [], "alpha", [0.3, 1, 3], 1), "highest") == 9.0
    assert step_beyond(Method("m", [], "alpha", [0.3, 1, 3], 1), "lowest") == 0.09
    assert step_beyond(Method("m", [], "trainer.max_epochs", [2, 4, 6], 4), "highest") == 8
    ema = step_beyond(Method("m", [], "trainer.ema.decay", [0.9, 0.967, 0.99], 0.967), "highest")
    assert ema == pytest.approx(1 - 1 / 300, rel=1e-2)  # horizons 10, 30, 100 → 300
    assert step_beyond(Method("m", [], "kl", ["softmax", "globalpointer"], None), "highest") is None


# -- the profile -----------------------------------------------------------------------------------------
SPEC = {"datasets": {"d": ["data=demo"]}, "regimes": {"r": ["encoder=tiny"]}, "common": [],
        "methods": {"none": ["regularizer=none"], "a": {"overrides": ["regularizer=fgm"],
                                                         "grid": {"alpha": [0.5, 1, 2]}, "default": 1},
                    "b": ["regularizer=noise"]},
        "tune": {"seeds": [101, 102], "rungs": [2], "drop_alpha": 0.2, "extend_grid": False}, "seeds": [1, 2, 3, 4], "looks": [2, 4],
        "alpha": 0.05, "equivalence_alpha": 0.05, "target_mde": 0.01, "futility_power": 0.2, "power": 0.8,
        "budget": {"max_runs": None, "max_hours": None}, "jobs": 1}


@pytest.mark.parametrize("change, key", [({"seeds": [1, 2, 101, 4]}, "seeds"), ({"looks": [4, 2]}, "looks"),
                                         ({"looks": [2, 9]}, "looks"), ({"target_mde": 0}, "target_mde"),
                                         ({"tune": {"seeds": [101], "rungs": [2]}}, "tune.rungs"),
                                         ({"methods": {"a": ["regularizer=fgm"]}}, "methods"),
                                         ({"budget": {"max_runs": 0}}, "budget.max_runs"),
                                         ({"regimes": {"r": ["encoder.pretrained={encoder}"]}}, "encoder_dir")])
def test_a_bad_profile_is_refused_naming_its_key(change, key):
    with pytest.raises(CompareError, match=f"^{key}:"):
        load_profile({**SPEC, **change}, "test")


# -- the driver, with a stand-in trainer ---------------------------------------------------------------
class FakeComposer:
    def key(self, base, strength, seed):
        return f"{'|'.join(base)}|{strength}|{seed}"


class FakeExecutor:
    """Trains by writing a result into the index: F1 from the method's effect, a per-seed shift, noise."""

    def __init__(self, index: RunIndex, effects: dict[str, float], collapses: set[tuple[str, int]] = frozenset()):
        self.index, self.effects, self.collapses, self.trained = index, effects, collapses, []
        self.slots = [None, None]
        self.failures: list[str] = []

    def run(self, tasks) -> None:
        for task in tasks:
            p = task.planned
            self.trained.append(task.key)
            shift = random.Random(p.seed).gauss(0, 0.02)
            f1 = 0.0 if (p.method, p.seed) in self.collapses else \
                0.6 + shift + self.effects.get(p.method, 0.0) + self.effects.get(p.strength, 0.0) \
                + random.Random(task.key).gauss(0, 0.003)
            self.index.add(CachedRun(task.key, str(task.directory), "completed", f1, f1, 60.0))


def driver(tmp_path: Path, index: RunIndex, executor, **spec) -> Driver:
    profile = load_profile({**SPEC, **spec}, "test")
    return Driver(profile, tmp_path, index, FakeComposer(), executor, lambda message: None)


def test_the_driver_races_then_compares_and_a_rerun_reuses_every_run(tmp_path):
    index = RunIndex()
    executor = FakeExecutor(index, {"a": 0.05, "b": 0.0})
    first = driver(tmp_path, index, executor)
    first.run()
    rows = {m: s.decision for m, s in first.comparisons[("d", "r")].states.items()}
    assert rows["a"].state == "better"
    assert len(executor.trained) == len(set(executor.trained)) == len(first.used)
    assert first.used_in("tune") == 6 and first.races[("d", "r", "a")].done  # 3 arms × 2 seeds, no survivors left out
    again = driver(tmp_path, index, FakeExecutor(index, {}))  # everything is in the cache now
    again.run()
    assert again.trained == 0 and len(again.used) == len(first.used)
    assert {m: s.decision.state for m, s in again.comparisons[("d", "r")].states.items()} == \
        {m: d.state for m, d in rows.items()}


def test_the_run_budget_stops_before_a_step_that_would_exceed_it_and_a_larger_one_continues(tmp_path):
    index = RunIndex()
    small = driver(tmp_path, index, FakeExecutor(index, {"a": 0.0}), budget={"max_runs": 8, "max_hours": None})
    small.run()
    assert len(small.used) <= 8
    assert all(s.stopped_by == "budget" for s in small.comparisons[("d", "r")].states.values())
    assert small.comparisons[("d", "r")].states["a"].decision is None  # the first look (6 runs) did not fit
    larger = driver(tmp_path, index, FakeExecutor(index, {"a": 0.0}))
    larger.run()
    assert larger.reused == len(small.used) and all(not s.open for s in larger.comparisons[("d", "r")].states.values())


def test_cache_only_lists_the_runs_it_lacks_and_trains_nothing(tmp_path):
    replay = driver(tmp_path, RunIndex(), None)
    replay.run()
    assert replay.missing and replay.trained == 0 and all(r.done for r in replay.races.values())


def test_a_collapse_makes_the_method_unstable_and_the_regime_watch_keeps_the_others_running(tmp_path):
    index = RunIndex()
    run = driver(tmp_path, index, FakeExecutor(index, {}, {("b", 1)}), looks=[2, 3, 4], seeds=[1, 2, 3, 4])
    run.run()
    states = run.comparisons[("d", "r")].states
    assert states["b"].decision.state == "unstable" and "seed 1" in states["b"].decision.reason
    assert states["a"].decision.n == 4  # held open to the last look though it was futile earlier
    off = driver(tmp_path / "off", RunIndex(), None, looks=[2, 3, 4], seeds=[1, 2, 3, 4])
    off.collapse_watch = "off"
    assert off.watch("r", None) == set()


def test_the_time_budget_uses_the_mean_run_time(tmp_path):
    index = RunIndex()
    run = driver(tmp_path, index, FakeExecutor(index, {}), budget={"max_runs": None, "max_hours": 0.02})
    run.run()  # 60 s per run on 2 slots: the racing (6 runs, 3 min) fits in 0.02 h only before any time is known
    assert run.used_in("compare") == 0
    assert math.isfinite(run._mean_seconds())


# -- slots and GPU memory --------------------------------------------------------------------------------
def test_a_busy_gpu_takes_another_run_only_when_its_memory_fits():
    from regner.experiments.compare.execution import CUDA_CONTEXT_MB, Slot, make_slots, may_start, memory_needed

    assert memory_needed("vat", {}) is None
    assert memory_needed("vat", {"none": 2000.0}) == 2 * 2000.0 + CUDA_CONTEXT_MB  # unknown method: twice the largest
    assert memory_needed("none", {"none": 2000.0}) == 1.25 * 2000.0 + CUDA_CONTEXT_MB
    slots = [Slot("0", running=object()), Slot("0"), Slot("1")]
    free = {"0": 4000.0, "1": 100.0}.get
    assert may_start(slots[2], slots, "none", {}, free)  # an idle device always takes one
    assert not may_start(slots[1], slots, "none", {}, free)  # nothing measured yet: not beside another run
    assert may_start(slots[1], slots, "none", {"none": 2000.0}, free)  # 3.5 GB needed, 4 GB free
    assert not may_start(slots[1], slots, "vat", {"none": 2000.0}, free)  # 5 GB needed
    assert may_start(Slot("cpu"), [Slot("cpu", running=object())], "vat", {}, free)
    assert [s.device for s in make_slots("0,1", 1, 2)] == ["0", "1", "0", "1"]
    assert [s.device for s in make_slots("cpu", 3, 4)] == ["cpu"] * 3


def test_a_grid_extension_the_config_refuses_leaves_the_race_named(tmp_path):
    from regner.errors import ConfigError

    class Refusing(FakeComposer):
        def key(self, base, strength, seed):
            if strength in ("alpha=4.0", "alpha=0.25"):
                raise ConfigError("alpha", strength, "a value the regularizer accepts")
            return super().key(base, strength, seed)

    index = RunIndex()
    profile = load_profile({**SPEC, "tune": {**SPEC["tune"], "extend_grid": True}}, "test")
    run = Driver(profile, tmp_path, index, Refusing(), FakeExecutor(index, {"alpha=2": 0.05}), lambda message: None)
    run.run()  # alpha 2, the grid's highest value, wins: the extension to 4 is refused
    race = run.races[("d", "r", "a")]
    added = [arm for arm in race.arms.values() if arm.added]
    assert race.done and race.chosen == 2 and [a.value for a in added] == [4.0]
    assert added[0].dropped.startswith("the extension is not a valid value (alpha='alpha=4.0' is not valid")


def test_no_method_is_better_than_a_none_that_collapsed(tmp_path):
    index = RunIndex()
    collapses = {("none", seed) for seed in (1, 2, 3, 4)}  # a's F1 − 0 on every seed: "better" by far
    run = driver(tmp_path, index, FakeExecutor(index, {}, collapses), looks=[2, 4], seeds=[1, 2, 3, 4])
    run.run()
    decision = run.comparisons[("d", "r")].states["a"].decision
    assert decision.state == "exhausted" and decision.n == 4
    assert decision.reason.startswith("none collapsed on seed 1, 2, 3, 4: no verdict against it")


def test_a_run_directory_started_for_another_run_is_never_resumed_for_this_one(tmp_path):
    from regner.experiments.compare.execution import claimed_for

    run = driver(tmp_path, RunIndex(), None)
    planned = run.planned("d", "r", "b", None, 1, "compare")
    first = run.directory(planned, "key-a")
    first.mkdir(parents=True)
    claimed_for(first).write_text("key-a\n")  # an interrupted run of key-a: no identity.sha256 yet
    assert run.directory(planned, "key-a") == first  # the same run continues there
    other = run.directory(planned, "key-b")
    assert other != first and other.name == "seed-1-2"


# -- the estimate (the expected time before any run is cached) -----------------------------------------
def test_the_estimate_is_the_profile_s_arithmetic():
    from regner.experiments.compare.estimate import plan_lines

    spec = {**SPEC, "datasets": {"d": ["data=demo"], "e": ["data=demo"]}, "budget": {"max_hours": 0.5},
            "estimate": {"none_seconds": {"d": 60, "e": 120}, "cost": {"a": 2.0, "b": 3.0}, "parallel": 2}}
    profile = load_profile(spec, "test")
    # one seed: (60 + 120) × (none 1 + a 2 + b 3) / 2 = 540 s; first look (2 seeds) 1080 s; every look (4) 2160 s
    assert profile.estimate.seconds([("d", "none"), ("d", "a"), ("e", "b")]) == (60 + 120 + 360) / 2
    lines = plan_lines(profile, {})
    assert "one seed of every method on every dataset ≈ 9 min" in lines[0]
    assert "the first look (2 seeds) ≈ 18 min" in lines[0] and "every look ≈ 36 min" in lines[0]
    assert "budget 0.5 h: the first look fits" in lines[1]
    # racing: each arm's runs (arms × the last rung's seeds) at its method's cost, once
    lines = plan_lines(profile, {("d", "r", "a"): 3})
    assert "after racing) ≈ 24 min" in lines[0]  # 1080 s + 3 arms × 2 seeds × (60 s × 2) / 2 = 1440 s
    assert "budget 0.5 h: the first look fits" in lines[1]
    assert "does not fit" in plan_lines(load_profile({**spec, "budget": {"max_hours": 0.2}}, "test"), {})[1]


@pytest.mark.parametrize("estimate, key", [({"none_seconds": {"d": 60}, "cost": {"zzz": 2}}, "estimate.cost"),
                                           ({"none_seconds": {"x": 60}}, "estimate.none_seconds"),
                                           ({"none_seconds": {"d": 0}}, "estimate.none_seconds"),
                                           ({"none_seconds": {"d": 60}, "parallel": 0.5}, "estimate.parallel"),
                                           ({"seconds": 1}, "estimate")])
def test_a_bad_estimate_is_refused_naming_its_key(estimate, key):
    with pytest.raises(CompareError, match=f"^{key}:"):
        load_profile({**SPEC, "estimate": estimate}, "test")


def test_a_regime_may_compare_some_methods_on_some_datasets_and_strengths_may_be_raced_on_one_dataset(tmp_path):
    spec = {"datasets": {"d": ["data=demo"], "e": ["data=demo", "data.train_size=100"]},
            "regimes": {"r": ["encoder=tiny"],
                        "x": {"overrides": ["encoder=tiny", "trainer.lr=1e-3"], "methods": ["b", "none"],
                              "datasets": ["e"]}},
            "tune": {**SPEC["tune"], "datasets": ["d"], "regimes": ["r"]}}
    index = RunIndex()
    executor = FakeExecutor(index, {"a": 0.05, "alpha=2": 0.02})
    run = driver(tmp_path, index, executor, **spec)
    assert run.profile.cells() == [("d", "r"), ("e", "r"), ("e", "x")]
    assert run.profile.rows == 2 + 2 + 1 and run.profile.design.methods == 5  # the family counts every row
    assert list(run.races) == [("d", "r", "a")]  # raced on d only
    assert all(isinstance(u.owner, Race) for u in run.units())  # e waits for d's race before comparing
    run.run()
    assert set(run.comparisons) == {("d", "r"), ("e", "r"), ("e", "x")}
    assert list(run.comparisons[("e", "x")].states) == ["b"]
    chosen = run.races[("d", "r", "a")].chosen
    assert run.chosen("e", "r", "a") == chosen
    e_runs = [k for k in executor.trained if k.startswith("data=demo|data.train_size=100") and "regularizer=fgm" in k]
    assert e_runs and all(f"|alpha={chosen}|" in k for k in e_runs)  # e's a runs use d's choice
    assert not any("trainer.lr=1e-3" in k and "regularizer=fgm" in k for k in executor.trained)  # x has no a


@pytest.mark.parametrize("change, key", [
    ({"regimes": {"r": {"overrides": ["encoder=tiny"], "methods": ["a"]}}}, "regimes.r.methods"),
    ({"regimes": {"r": {"overrides": ["encoder=tiny"], "methods": ["none", "zz"]}}}, "regimes.r.methods"),
    ({"regimes": {"r": {"overrides": ["encoder=tiny"], "dataset": ["d"]}}}, "regimes.r"),
    ({"regimes": {"r": ["encoder=tiny"], "x": {"overrides": [], "methods": ["none", "b"]}},
      "tune": {**SPEC["tune"], "regimes": ["x"]}}, "regimes.r.methods"),
    ({"tune": {**SPEC["tune"], "datasets": ["nope"]}}, "tune.datasets")])
def test_a_bad_regime_subset_or_tune_dataset_is_refused_naming_its_key(change, key):
    with pytest.raises(CompareError, match=f"^{key}:"):
        load_profile({**SPEC, **change}, "test")


def test_a_method_may_run_on_some_datasets_only(tmp_path):
    spec = {"datasets": {"d": ["data=demo"], "e": ["data=demo", "data.train_size=100"]},
            "methods": {**SPEC["methods"], "b": {"overrides": ["regularizer=noise"], "datasets": ["e"]}}}
    index = RunIndex()
    run = driver(tmp_path, index, FakeExecutor(index, {"b": 0.04}), looks=[3, 4], **spec)  # pooling needs 3 seeds
    assert run.profile.methods_in("r", "d") == ["none", "a"] and run.profile.rows == 3
    run.run()
    assert list(run.comparisons[("d", "r")].states) == ["a"] and list(run.comparisons[("e", "r")].states) == ["a", "b"]
    assert {r["method"] for r in report.pooled_rows(run)} == {"a"}  # b has one dataset: nothing to pool
    with pytest.raises(CompareError, match="^methods.a.datasets: a is tuned"):
        load_profile({**SPEC, **spec, "methods": {**spec["methods"], "a": {**SPEC["methods"]["a"], "datasets": ["e"]}},
                      "tune": {**SPEC["tune"], "datasets": ["d"]}}, "test")
    with pytest.raises(CompareError, match="^methods.none.datasets"):
        load_profile({**SPEC, **spec, "methods": {**spec["methods"], "none": {"overrides": [], "datasets": ["e"]}}},
                     "test")


def test_a_profile_without_grids_says_it_races_nothing(tmp_path):
    plain = driver(tmp_path, RunIndex(), None, methods={"none": ["regularizer=none"], "b": ["regularizer=noise"]})
    assert report.design_text(plain).startswith("No racing: every method runs at the strength its overrides set.")
    assert report.design_text(driver(tmp_path, RunIndex(), None)).startswith("Racing (strengths, on dev F1")
