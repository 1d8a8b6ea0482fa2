"""Benchmark v2 (regner/experiments/benchmark/): the profile, the presets, the strength choice, and the whole
pipeline on the demo data (tune → choose → final → costs → report), with its statistics checked by hand."""

import csv
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from regner.config.paths import config_dir
from regner.experiments.benchmark.plots import pareto_front
from regner.experiments.benchmark.profile import Method, ProfileError, load_profile, preset_yaml, schedule
from regner.experiments.benchmark.reading import ClaimEvidence, claim_reading, conclusions
from regner.experiments.benchmark.runs import epochs_run, run_state
from regner.experiments.benchmark.selection import choose_strength, grid_edges, relative_strength
from regner.experiments.benchmark.tables import final_table, tune_table

from .test_cli import regner

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted((REPO / "scripts" / "matrices").glob("*.yaml"))
EVERY_METHOD = {"none", "rdrop", "rdrop_softmax", "vat", "vat_softmax", "fgm", "pgd", "awp", "gp", "noise", "ema",
                "rdrop_fgm"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_composes_every_run(path, tmp_path):
    """Each preset a profile generates is a valid regner config (never run in CI, so composed here)."""
    from regner.config.validation import validate_config
    from regner.experiments.benchmark.profile import final_jobs, tune_jobs

    profile = load_profile(path, encoder=str(tmp_path) if "{encoder}" in path.read_text() else None)
    if path.stem in ("cpu", "gpu"):
        assert set(profile.methods) == EVERY_METHOD and len(profile.final_seeds) >= 5 and set(profile.regimes) == {
            "pretrained", "random"}
        assert {"weibo", "cluener"} <= set(profile.datasets)
    seen = set()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for number, dataset in enumerate(profile.datasets):
            chosen = {(r, m.name): m.grid[-1] for r in profile.regimes for m in profile.methods.values() if m.tuned}
            tune = {}  # one grid value per method is composed: the others differ by one number
            for job in tune_jobs(profile, dataset):
                tune.setdefault(job.method, job)
            final = final_jobs(profile, dataset, chosen)
            # every method and regime on the first dataset; the others differ only in their data keys
            jobs = [*tune.values(), *final] if number == 0 else [final[0], final[-1]]
            for job in jobs:
                cfg = compose("config", overrides=job.overrides)
                validate_config(cfg)
                seen.add((cfg.regularizer.name, cfg.kl.name if "kl=" in " ".join(job.overrides) else None))
                if job.method == "ema":
                    assert cfg.trainer.ema.decay in profile.methods["ema"].grid
                    assert all(0 < d < 1 for d in profile.methods["ema"].grid)
    if path.stem == "cpu":  # the CLUENER arm tests on the official dev set and tunes on a dev carved from train
        overrides = " ".join(profile.datasets["cluener"])
        assert "data.dev=null" in overrides and "cluener/dev.json" in overrides
        assert ("rdrop", "softmax") in seen and ("vat", "globalpointer") in seen


@pytest.mark.parametrize("text, message", [
    ("methods: {none: [regularizer=none]}", "`regimes` must be a non-empty mapping"),
    ("""regimes: {a: []}
datasets: {d: [data=demo]}
methods: {fgm: [regularizer=fgm]}
tune: {seeds: [1]}
final: {seeds: [2]}""", "must include `none`"),
    ("""regimes: {a: []}
datasets: {d: [data=demo]}
methods: {none: [regularizer=none]}
tune: {seeds: [1]}
final: {seeds: [1, 2]}""", "tune.seeds and final.seeds must differ"),
    ("""regimes: {a: ["encoder.pretrained={encoder}"]}
datasets: {d: [data=demo]}
methods: {none: [regularizer=none]}
tune: {seeds: [1]}
final: {seeds: [2]}""", "no encoder directory was given"),
    ("""regimes: {a: []}
datasets: {d: [data=demo]}
methods: {none: [regularizer=none], fgm: {overrides: [regularizer=fgm], grid: {alpha: [1], regularizer.epsilon: [1]}}}
tune: {seeds: [1], regimes: [a]}
final: {seeds: [2]}""", "sweeps one knob"),
])
def test_bad_profiles_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_presets_turn_overrides_into_a_global_package():
    import yaml

    text = preset_yaml(["data=cluener", "data.dev=null", "data.test=${data.root}/cluener/dev.json", "alpha=3",
                        "regularizer=rdrop", "trainer.ema.decay=0.99"])
    assert text.startswith("# @package _global_")
    body = yaml.safe_load(text)
    assert body["defaults"] == [{"override /data": "cluener"}, {"override /regularizer": "rdrop"}, "_self_"]
    assert body["data"] == {"dev": None, "test": "${data.root}/cluener/dev.json"} and body["alpha"] == 3
    assert body["trainer"] == {"ema": {"decay": 0.99}}
    with pytest.raises(ProfileError):
        preset_yaml(["+regularizer@x=fgm"])


def test_strength_choice_takes_the_best_mean_and_breaks_ties_towards_the_default():
    method = Method("fgm", [], "regularizer.epsilon", [0.015, 0.05, 0.15], 0.05)
    assert choose_strength(method, {0.015: [0.5, 0.7], 0.05: [0.55], 0.15: [0.61]})[0] == 0.15
    assert choose_strength(method, {0.015: [0.6], 0.05: [0.6], 0.15: [0.6]})[0] == 0.05  # tie: the default
    assert choose_strength(method, {0.015: [0.6], 0.05: [0.1], 0.15: [0.6]})[0] in (0.015, 0.15)
    assert choose_strength(method, {0.015: [], 0.05: [], 0.15: []}) == (0.05, "no tune result")
    ema = Method("ema", [], "trainer.ema.decay", [0.9, 0.967, 0.99], 0.967)
    assert relative_strength(ema, 0.99) == pytest.approx(3.3, rel=1e-9)  # horizon 100 vs 30 steps
    assert relative_strength(method, 0.15) == pytest.approx(3.0)


def test_a_strength_chosen_at_the_edge_of_its_grid_is_flagged():
    assert grid_edges([0.05, 0.015, 0.15]) == {0.015: "lowest", 0.15: "highest"}
    assert grid_edges([0.05, 0.3]) == {} and grid_edges(["a", "b", "c"]) == {}
    rows = [{"dataset": "d", "regime": "r", "method": "fgm", "key": "regularizer.epsilon", "value": v, "dev_f1": f,
             "n": 1, "chosen": v == 0.015, "edge": "lowest" if v == 0.015 else ""}
            for v, f in ((0.015, 0.41), (0.05, 0.37), (0.15, 0.0))]
    table = tune_table(rows, "d", "r")
    assert "| fgm | regularizer.epsilon | 0.015 | 0.4100 | 1 | — | **✓** (grid edge) |" in table
    assert table[-1] == ("Chosen at the edge of its grid, so the best strength may lie beyond it: "
                         "fgm (regularizer.epsilon=0.015, the lowest).")
    assert not any("edge" in line for line in tune_table([r | {"edge": ""} for r in rows], "d", "r"))


def test_stage_one_shows_the_epochs_each_point_ran_and_names_those_stopped_by_the_cap(tmp_path):
    def run(name, epochs, stopped, status="completed"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "status.json").write_text(json.dumps({"status": status}))
        if status == "completed":
            (directory / "metrics.json").write_text(json.dumps(
                {"epochs": epochs, "best_epoch": epochs, "early_stopping": {"stopped": stopped, "max_epochs": 15}}))
        return directory

    assert epochs_run([run("a", 9, True), run("b", 15, False)]) == "9, 15 (cap)"
    assert epochs_run([run("c", 15, True)]) == "15"  # stopped early at its last allowed epoch: not capped
    assert epochs_run([run("d", 3, False, status="running"), tmp_path / "missing"]) == ""
    rows = [{"dataset": "d", "regime": "r", "method": m, "key": k, "value": v, "dev_f1": 0.4, "n": 1, "chosen": False,
             "edge": "", "epochs": e} for m, k, v, e in (("none", None, None, "11"), ("rdrop", "alpha", 0.3, "15 (cap)"),
                                                         ("rdrop", "alpha", 1, "13"))]
    table = tune_table(rows, "d", "r")
    assert "| rdrop | alpha | 0.3 | 0.4000 | 1 | 15 (cap) |  |" in table and "| none | — | — | 0.4000 | 1 | 11 |  |" in table
    assert table[-1].startswith("Used every allowed epoch without stopping early (1 of 3 points), so more epochs "
                                "might have changed their dev F1: rdrop (alpha=0.3).")
    assert not any("Used every" in line for line in tune_table(rows[:1] + rows[2:], "d", "r"))


def test_stage_two_runs_seed_by_seed_across_datasets_after_every_stage_one():
    profile = load_profile(REPO / "scripts" / "matrices" / "cpu.yaml")
    order = schedule(profile)
    datasets = list(profile.datasets)
    assert len(datasets) >= 2
    assert order[:len(datasets)] == [(d, "tune", [101]) for d in datasets]
    finals = order[len(datasets):]
    assert finals == [(d, "final", [s]) for s in profile.final_seeds for d in datasets]
    # every stage-2 run is scheduled exactly once: the order changes nothing but what a partial report covers
    assert sorted((d, s) for d, _, seeds in finals for s in seeds) == sorted(
        (d, s) for d in datasets for s in profile.final_seeds)


def test_pareto_front_keeps_what_nothing_beats():
    points = [(1.0, 0.0), (2.0, 0.01), (1.8, 0.03), (3.5, 0.02), (4.0, 0.05), (1.2, -0.01)]
    assert pareto_front(points) == [(1.0, 0.0), (1.8, 0.03), (4.0, 0.05)]


def test_run_states(tmp_path):
    import fcntl

    from regner.runs.directory import LOCK_FILE

    assert run_state(tmp_path / "nothing") == "missing"
    (tmp_path / "a").mkdir()
    assert run_state(tmp_path / "a") == "abandoned"
    with open(tmp_path / "a" / LOCK_FILE, "w") as holder:  # locked, status.json not written yet: just started
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert run_state(tmp_path / "a") == "running"
    (tmp_path / "a" / "status.json").write_text(json.dumps({"status": "running"}))
    assert run_state(tmp_path / "a") == "abandoned"  # no lock, no saved state: killed before its first save
    (tmp_path / "a" / "last").mkdir()
    (tmp_path / "a" / "last" / "trainer_state.pt").write_bytes(b"x")
    assert run_state(tmp_path / "a") == "interrupted"
    (tmp_path / "a" / "status.json").write_text(json.dumps({"status": "failed", "diverged": True}))
    assert run_state(tmp_path / "a") == "diverged"


def test_prune_keeps_what_a_report_reads_and_git_ignores_the_rest(tmp_path):
    from regner.experiments.benchmark.execution import GITIGNORE, prune

    done, running = tmp_path / "done", tmp_path / "running"
    for run, status in ((done, "completed"), (running, "interrupted")):
        (run / "checkpoint").mkdir(parents=True)
        (run / "last").mkdir()
        (run / "status.json").write_text(json.dumps({"status": status}))
    (done / "metrics.json").write_text("{}")
    prune([done, running])
    assert sorted(p.name for p in done.iterdir()) == ["metrics.json", "status.json"]
    assert (running / "last").exists() and (running / "checkpoint").exists()  # still needed to resume
    assert {"checkpoint/", "last/", ".hydra/"} <= set(GITIGNORE.splitlines())


def test_the_reading_of_a_partial_benchmark_claims_nothing_it_has_not_measured(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(DEMO_PROFILE.replace("methods:\n", "methods:\n  noise: {overrides: [regularizer=noise], "
                                         "grid: {regularizer.sigma: [0.1, 0.3]}, default: 0.1}\n"))
    profile = load_profile(path, encoder="enc")

    def row(method, verdict="baseline", delta=0.0):
        return {"_dataset": "demo", "_regime": "pretrained", "_method": method, "verdict": verdict,
                "delta_vs_none": delta, "delta_ci_low": math.nan, "delta_ci_high": math.nan, "regularizer": method,
                "kl": None, "_runs": []}

    only_none = conclusions([row("none")], profile)
    assert only_none[0] == "- **demo, pretrained**: no method besides `none` has stage-2 results yet."
    assert "no regularizer has stage-2 results with both KL variants" in only_none[-1]
    some = conclusions([row("none"), row("fgm", "within noise", 0.01)], profile)[0]
    assert some == "- **demo, pretrained**: no method is better than `none` beyond noise; within noise of `none`: fgm; " \
                   "no stage-2 result yet: noise."
    every = conclusions([row("none"), row("fgm", "better", 0.02), row("noise", "within noise")], profile)[0]
    assert "better than `none` beyond noise: fgm (+0.0200)" in every and "no stage-2 result yet" not in every
    untested = conclusions([row("none"), row("fgm", "n<2: cannot tell", 0.03)], profile)[0]
    assert untested == "- **demo, pretrained**: not tested: fgm (n<2: cannot tell); no stage-2 result yet: noise."
    unstable = row("fgm", "unstable (1 of 3 collapsed)", 0.01) | {"collapsed": 1, "judged_runs": 3}
    collapsed = conclusions([row("none"), unstable], profile)[0]
    assert "unstable: fgm (1 of 3 collapsed);" in collapsed and "unstable (" not in collapsed
    with_intervals = [row("none"), row("fgm", "within noise") | {"delta_ci_low": -0.03, "delta_ci_high": 0.05},
                      row("noise", "within noise") | {"delta_ci_low": -0.02, "delta_ci_high": 0.0}]
    assert "intervals are ±1.0 to ±4.0 F1 points wide" in conclusions(with_intervals, profile)[0]
    assert "epoch cap" not in conclusions(with_intervals, profile)[0]

    # `none` runs that used every epoch without early stopping: the reading says the cap may limit it
    runs = []
    for seed, (stopped, epochs) in enumerate([(False, 15), (True, 11)]):
        directory = tmp_path / f"seed-{seed}"
        directory.mkdir()
        (directory / "metrics.json").write_text(json.dumps(
            {"epochs": epochs, "best_epoch": 9, "early_stopping": {"stopped": stopped, "max_epochs": 15}}))
        runs.append(SimpleNamespace(path=directory, status="completed"))
    capped = [row("none") | {"_runs": runs}, row("fgm", "within noise")]
    assert "`none` used every allowed epoch in 1 of 2 runs" in conclusions(capped, profile)[0]

    # per-logit vs softmax KL: paired on the seeds both kept; an unstable row shows its count once
    def kl_row(kl, verdict, f1s, collapsed=0):
        runs = [SimpleNamespace(status="completed", collapsed=f1 < 0.05, seed=seed, test_f1=f1)
                for seed, f1 in enumerate(f1s)]
        return row(f"rdrop_{kl}", verdict, 0.01) | {"regularizer": "rdrop", "kl": kl, "judged_on": "test",
                                                   "strength": "alpha=1", "_runs": runs, "collapsed": collapsed,
                                                   "judged_runs": len(runs)}
    pair = [row("none"), kl_row("globalpointer", "within noise", [0.60, 0.70, 0.80]),
            kl_row("softmax", "unstable (1 of 3 collapsed)", [0.50, 0.61, 0.01], collapsed=1)]
    (line,) = [x for x in conclusions(pair, profile) if x.startswith("- rdrop, demo")]
    assert "(within noise); softmax KL at alpha=1" in line and "(unstable, 1 of 3 collapsed)" in line
    assert "per-logit − softmax +0.0950" in line and "(unstable (" not in line
    # two shared seeds, differences 0.10 and 0.09: t = 19 on 1 df, p = 0.033 (hand computation)
    assert line.endswith("p 0.033: per-logit ahead.")
    assert conclusions(pair, profile)[-1] == (
        "**Verdict on the claim, pretrained regime** (R-Drop, 1 setting(s) with both KL variants; vs `none` Holm-corrected, per-logit vs "
        "softmax unadjusted): regner's results agree where a difference is beyond noise: per-logit ahead of softmax "
        "in 1 of 1 (demo, pretrained); softmax with collapsed seeds in 1 of 1 (demo, pretrained); nothing against it. "
        "The point estimates put per-logit ahead of softmax in 1 of 1 settings (a direction, not evidence on its own).")
    both = pair + [r | {"_regime": "random"} for r in pair]  # each regime gets its own verdict
    assert [x.split("**")[1] for x in conclusions(both, profile) if x.startswith("**Verdict")] == [
        "Verdict on the claim, pretrained regime", "Verdict on the claim, random regime"]


def test_the_final_table_counts_collapses_over_judged_runs_and_caps_over_completed_ones(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(DEMO_PROFILE)
    profile = load_profile(path, encoder="enc")
    runs = []
    for seed, (status, epochs, stopped) in enumerate([("completed", 15, False), ("completed", 9, True),
                                                      ("diverged", None, False), ("failed", None, False)]):
        directory = tmp_path / f"seed-{seed}"
        directory.mkdir()
        if epochs:
            (directory / "metrics.json").write_text(json.dumps(
                {"epochs": epochs, "best_epoch": 5, "early_stopping": {"stopped": stopped, "max_epochs": 15}}))
        runs.append(SimpleNamespace(path=directory, status=status))
    row = {"_method": "none", "regularizer": "none", "kl": "—", "n": 2, "judged_on": "test", "test_f1_mean": 0.6,
           "test_f1_std": 0.01, "p_holm": math.nan, "verdict": "unstable (1 of 3 collapsed)", "collapsed": 1,
           "judged_runs": 3, "failed": 1, "_runs": runs}
    cells = [c.strip() for c in final_table([row], profile, {}, {})[-1].strip("|").split("|")]
    assert cells[9:11] == ["1 of 3 (+1 failed)", "1 of 2"]  # collapsed; hit epoch cap
    assert final_table([row | {"failed": 0}], profile, {}, {})[-1].split(" | ")[9] == "1 of 3"


def test_the_reading_of_su_jianlins_claim_counts_only_differences_beyond_noise_and_collapses():
    quiet = [ClaimEvidence("a, pretrained", "within noise", "within noise", "no difference beyond noise", 0.01),
             ClaimEvidence("b, random", "within noise", "n<2: cannot tell", "cannot tell", -0.02)]
    reading = claim_reading(quiet)
    assert "neither confirm nor contradict it: no R-Drop difference is beyond seed noise and no seed collapsed" in reading
    assert "per-logit ahead of softmax in 1 of 2 settings" in reading
    against = claim_reading([ClaimEvidence("a, pretrained", "worse", "better", "softmax ahead", -0.05)])
    assert ("disagree: per-logit worse than `none` in 1 of 1 (a, pretrained); softmax better than `none` in 1 of 1 "
            "(a, pretrained); softmax ahead of per-logit in 1 of 1 (a, pretrained); nothing for it") in against
    collapsed = claim_reading([ClaimEvidence("a, random", "unstable (1 of 5 collapsed)", "within noise", "cannot tell",
                                             math.nan)])
    assert "disagree: per-logit with collapsed seeds in 1 of 1 (a, random); nothing for it." in collapsed
    mixed = claim_reading([ClaimEvidence("a, pretrained", "better", "within noise", "no difference beyond noise", 0.02),
                           ClaimEvidence("b, pretrained", "within noise", "better", "cannot tell", math.nan)])
    assert ("are mixed: for it, per-logit better than `none` in 1 of 2 (a, pretrained); against it, softmax better than "
            "`none` in 1 of 2 (b, pretrained)") in mixed
    assert "in 1 of 1 settings" in mixed  # the direction counts only settings with a paired estimate


# -- the whole pipeline on the demo data ---------------------------------------------------------

DEMO_PROFILE = """
description: "test profile"
jobs: 2
keep_checkpoints: true   # the resume check below needs the runs' saved state
regimes:
  pretrained: [encoder=pretrained, "encoder.pretrained={encoder}", encoder.lr=3e-3, encoder.head_lr=3e-3]
  random: [encoder=pretrained, "encoder.pretrained={encoder}", encoder.random_init=true, encoder.lr=3e-3, encoder.head_lr=3e-3]
datasets:
  demo: [data=demo, data.train_size=80, data.dev_size=30, data.test_size=30, data.max_length=48]
common: [trainer.max_epochs=2, trainer.batch_size=16, trainer.patience=0, head.head_size=16, "trainer.loggers=[]"]
tune: {seeds: [101], regimes: [pretrained]}
final: {seeds: [1, 2]}
methods:
  none: [regularizer=none]
  fgm: {overrides: [regularizer=fgm], grid: {regularizer.epsilon: [0.05, 0.3]}, default: 0.05}
throughput: [--encoder, "{encoder}", --batch-sizes, "4", --steps, "1", --warmup, "0"]
"""


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from regner.data.demo import generate_split

    root = tmp_path_factory.mktemp("encoder")
    (root / "corpus.txt").write_text("\n".join(ex.text for ex in generate_split(200, 3, "train")), encoding="utf-8")
    result = regner("pretrain", f"pretrain.corpus=[{root / 'corpus.txt'}]", "encoder.hidden_size=32",
                    "encoder.num_layers=1", "pretrain.max_length=32", "pretrain.batch_size=16", "pretrain.epochs=1",
                    "pretrain.progress=false", f"hydra.run.dir={root / 'enc'}", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "enc"


def benchmark(profile: Path, encoder: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/benchmark.py", "--profile", str(profile), "--encoder", str(encoder),
                           "--out", str(out), "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # ~110 s; the fast suite checks each stage on its own, -m slow runs the pipeline
def test_the_whole_pipeline_on_demo_data(tmp_path, encoder_dir):
    profile, out = tmp_path / "demo.yaml", tmp_path / "bench"
    profile.write_text(DEMO_PROFILE)
    result = benchmark(profile, encoder_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = [line.split(": ")[1].split(" ")[1] + " " + line.split("seed(s) ")[1].split(",")[0]
              for line in result.stderr.splitlines() if line.startswith("benchmark: demo ")]
    assert sweeps == ["tune 101", "final 1", "final 2"], result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "## demo — pretrained" in report and "## demo — random" in report
    header = ("| method | regularizer | KL | strength | n | test F1 (mean ± std) | Δ F1 vs none [95 % CI] | p (Holm) | "
              "verdict | collapsed | hit epoch cap | cost × | memory × |")
    assert report.count(header) == 2
    assert "Strengths tuned in the pretrained regime" in report or "tuned in the pretrained regime" in report
    assert (out / "f1_vs_strength.png").exists() and (out / "cost_vs_gain.png").exists()

    # stage 1 chose the epsilon with the better dev F1 (one tune seed)
    tune = {eps: json.loads((out / "demo" / "tune" / f"demo.pretrained.fgm.{eps}" / "seed-101" /
                              "metrics.json").read_text())["dev"]["f1"] for eps in ("0.05", "0.3")}
    best = max(tune, key=lambda eps: (tune[eps], eps == "0.05"))
    stage1 = list(csv.DictReader((out / "stage1.csv").open()))
    assert [r["value"] for r in stage1 if r["chosen"] == "True"] == [best]

    # stage 2: paired test F1 differences, by hand (n = 2, so t has 1 df: a Cauchy tail), Holm over both rows
    rows = {(r["regime"], r["method"]): r for r in csv.DictReader((out / "report.csv").open())}
    hand = {}
    for regime in ("pretrained", "random"):
        def test_f1(method, seed, regime=regime):
            name = f"demo.{regime}.{method}" + (f".{best}" if method == "fgm" else "")
            path = out / "demo" / "final" / name / f"seed-{seed}" / "metrics.json"
            return json.loads(path.read_text())["test"]["f1"]

        diffs = [test_f1("fgm", s) - test_f1("none", s) for s in (1, 2)]
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        row = rows[(regime, "fgm")]
        assert float(row["delta_vs_none"]) == pytest.approx(mean, abs=1e-12)
        assert row["judged_on"] == "test" and row["test"] == "paired t (n=2)"
        if sd > 0:
            p = 1 - 2 * math.atan(abs(mean) / (sd / math.sqrt(2))) / math.pi
            half = 12.706205 * sd / math.sqrt(2)
            assert float(row["p"]) == pytest.approx(p, rel=1e-6)
            assert float(row["delta_ci_low"]) == pytest.approx(mean - half, abs=1e-6)
            assert float(row["delta_ci_high"]) == pytest.approx(mean + half, abs=1e-6)
            hand[regime] = p
    if len(hand) == 2:  # Holm over the two tested rows
        (low_regime, low), (high_regime, high) = sorted(hand.items(), key=lambda kv: kv[1])
        assert float(rows[(low_regime, "fgm")]["p_holm"]) == pytest.approx(min(1, 2 * low), rel=1e-6)
        assert float(rows[(high_regime, "fgm")]["p_holm"]) == pytest.approx(min(1, max(2 * low, high)), rel=1e-6)
    assert json.loads((out / "throughput.json").read_text())[0]["regularizer"] == "none"

    # an interrupted run is resumed, one killed before saving anything is rerun, finished ones are kept
    final = out / "demo" / "final"
    interrupted = final / "demo.random.none" / "seed-2"
    before = json.loads((interrupted / "metrics.json").read_text())["test"]["f1"]
    (interrupted / "metrics.json").unlink()
    run_info = json.loads((interrupted / "status.json").read_text())["run"]
    (interrupted / "status.json").write_text(json.dumps({"status": "interrupted", "run": run_info}))
    abandoned = final / "demo.pretrained.none" / "seed-1"
    kept = final / "demo.random.none" / "seed-1"
    kept_time = (kept / "metrics.json").stat().st_mtime_ns
    abandoned_info = json.loads((abandoned / "status.json").read_text())["run"]
    for child in abandoned.iterdir():
        if child.name != "status.json":
            subprocess.run(["rm", "-rf", str(child)], check=True)
    (abandoned / "status.json").write_text(json.dumps({"status": "running", "run": abandoned_info}))
    def report_only():
        result = subprocess.run([sys.executable, "scripts/benchmark.py", "--profile", str(profile), "--encoder",
                                 str(encoder_dir), "--out", str(out), "--report-only"], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return (out / "report.md").read_text()

    # a partial report lists the runs in flight and tables only finished ones (n counts them)
    partial = report_only()
    assert "**9 of 11 runs finished** (partial results)" in partial
    unfinished = partial.split("## Unfinished runs")[1]
    assert "`demo/final/demo.random.none/seed-2`: interrupted" in unfinished
    assert "`demo/final/demo.pretrained.none/seed-1`: running" in unfinished
    assert "| none | none | — | — | 1 |" in partial.split("## demo — random")[1]
    again = benchmark(profile, encoder_dir, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {interrupted}" in again.stderr and f"removing {abandoned}" in again.stderr
    assert json.loads((interrupted / "metrics.json").read_text())["test"]["f1"] == before
    assert run_state(abandoned) == "completed" and (kept / "metrics.json").stat().st_mtime_ns == kept_time
    timing = json.loads((out / "timing.json").read_text())["invocations"]
    assert len(timing) == 2 and all(i["finished"] and i["seconds"] > 0 for i in timing)
    complete = report_only()
    assert "**11 of 11 runs finished**; the benchmark took " in complete and "in 2 invocation(s)" in complete
    assert "Continue with" not in complete and "Continue with" in partial

    # compacted (as a committed benchmark is): the same report from runs.jsonl.gz, and a rerun unpacks it first
    packed = subprocess.run([sys.executable, "scripts/benchmark.py", "--profile", str(profile), "--encoder",
                             str(encoder_dir), "--out", str(out), "--pack"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert packed.returncode == 0, packed.stderr[-2000:]
    assert (out / "runs.jsonl.gz").is_file() and not list(out.rglob("metrics.json"))
    stamp = re.compile(r"Report written \d{4}-\d\d-\d\d \d\d:\d\d \w+")
    assert stamp.sub("", report_only()) == stamp.sub("", complete)
    rerun = benchmark(profile, encoder_dir, out)
    assert rerun.returncode == 0 and "unpacking" in rerun.stderr, rerun.stderr[-2000:]
    assert not (out / "runs.jsonl.gz").exists() and run_state(kept) == "completed"
    assert json.loads((interrupted / "metrics.json").read_text())["test"]["f1"] == before
    assert len(json.loads((out / "timing.json").read_text())["invocations"]) == 3


def test_another_profile_never_continues_a_benchmark_directory(tmp_path, encoder_dir):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "profile.yaml").write_text("something else")
    profile = tmp_path / "demo.yaml"
    profile.write_text(DEMO_PROFILE)
    result = benchmark(profile, encoder_dir, out)
    assert result.returncode == 2 and "holds a benchmark of another profile" in result.stderr
    missing = subprocess.run([sys.executable, "scripts/benchmark.py", "--profile", "cpu", "--encoder",
                              str(tmp_path / "nope"), "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "make pretrain" in missing.stderr
    assert not (tmp_path / "o").exists()


COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "2026-12-01-cpu"


def test_committed_benchmark_report_rebuilds_from_its_compact_runs(tmp_path):
    """The committed benchmark keeps its 308 runs as one runs.jsonl.gz; the report rebuilt from it is
    the committed report, byte for byte, apart from when it was written."""
    import re
    import shutil

    from regner.experiments.benchmark.main import main

    out = tmp_path / "benchmark"
    shutil.copytree(COMMITTED, out, ignore=shutil.ignore_patterns("report.md", "report.csv", "stage1.csv", "*.png"))
    assert (out / "runs.jsonl.gz").is_file() and not (out / "cluener").exists()
    assert main(["--report-only", "--profile", "cpu", "--out", str(out), "--encoder", str(COMMITTED / "encoder"),
                 "--no-progress"]) == 0
    stamp = re.compile(r"Report written \d{4}-\d\d-\d\d \d\d:\d\d \w+")
    for name in ("report.md", "report.csv", "stage1.csv"):
        committed, rebuilt = ((d / name).read_text(encoding="utf-8") for d in (COMMITTED, out))
        assert stamp.sub("Report written <when>", rebuilt) == stamp.sub("Report written <when>", committed), name
    assert (out / "f1_vs_strength.png").is_file() and (out / "cost_vs_gain.png").is_file()


def test_run_archive_round_trip_and_damage(tmp_path):
    from regner.errors import UserError
    from regner.runs import archive

    run = tmp_path / "runs" / "a" / "seed-1"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"status": "completed"}\r\n', encoding="utf-8")
    (run / "history.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n', encoding="utf-8")
    (tmp_path / "runs" / "notes.md").write_text("kept")
    before = {p.relative_to(tmp_path / "runs"): p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    packed = archive.pack(tmp_path / "runs")
    assert not (tmp_path / "runs" / "a").exists() and (tmp_path / "runs" / "notes.md").exists()
    first = packed.read_bytes()
    restored = tmp_path / "restored"
    archive.unpack(packed, restored)
    after = {p.relative_to(restored): p.read_bytes() for p in restored.rglob("*") if p.is_file()}
    assert after == {k: v for k, v in before.items() if k.name != "notes.md"}  # byte for byte, \r\n included
    with archive.expanded(tmp_path / "runs") as source:
        assert (source / "a" / "seed-1" / "status.json").read_bytes() == before[Path("a/seed-1/status.json")]
        assert (source / "notes.md").read_text() == "kept"
    archive.pack(restored)
    assert (restored / archive.ARCHIVE).read_bytes() == first  # same runs, same bytes: a repack changes nothing
    bad = tmp_path / "bad.jsonl.gz"
    import gzip

    with gzip.open(bad, "wt") as handle:
        handle.write('{"run": "../escape", "files": {}}\n')
    with pytest.raises(UserError, match=r"bad.jsonl.gz:1: .*leaves"):
        archive.read(bad)
