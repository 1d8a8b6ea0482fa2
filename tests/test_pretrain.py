"""``regner pretrain``: masked-LM pretraining on a tiny corpus (seconds), its output as an encoder,
continued pretraining, exact resume, caching and bad corpus input."""

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from regner.config.paths import config_dir
from regner.pretraining.corpus import build_corpus, pack
from regner.pretraining.trainer import MLMPretrainer, corpus_for, run_pretraining
from regner.runs.interrupt import Interrupted, StopFlag

from .test_cli import regner
from .test_reliability import clean_failure, snapshot

ENCODER = ["encoder.hidden_size=32", "encoder.num_layers=1", "encoder.dropout=0.1"]
TINY = [*ENCODER, "pretrain.max_length=32", "pretrain.num_threads=1",  # fixed: auto follows the load, and
        # a different thread count changes float sums in the last bits (a resumed run in another process)
        "pretrain.batch_size=8", "pretrain.eval_batch_size=32", "pretrain.progress=false", "pretrain.eval_every=5",
        "pretrain.save_every_steps=0", "pretrain.lr=3e-3", "pretrain.warmup_ratio=0.1", "pretrain.held_out_fraction=0.1"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    from regner.data.demo import generate_split

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    texts = [ex.text for ex in generate_split(400, 3, "train")]
    path.write_text("\n".join(texts) + "\n" + texts[0] + "\n", encoding="utf-8")  # one duplicate
    return path


def pretrain_config(corpus, *overrides):
    settings = [o for o in TINY if not (o in ENCODER and any(x.startswith("encoder=") for x in overrides))]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("pretraining", overrides=[*settings, f"pretrain.corpus=[{corpus}]", *overrides])


def test_corpus_dedupes_holds_out_a_fixed_slice_and_packs_windows(corpus_file):
    corpus = build_corpus([str(corpus_file)], [], ["train"], 0.1, 1000, seed=0)
    assert corpus.duplicates >= 1 and len(set(corpus.train)) == len(corpus.train)
    assert not set(corpus.train) & set(corpus.held_out)
    again = build_corpus([str(corpus_file)], [], ["train"], 0.1, 1000, seed=0)
    assert again.held_out == corpus.held_out and again.fingerprint() == corpus.fingerprint()
    from regner.model.encoder import build_char_vocab, tiny_tokenizer

    tokenizer = tiny_tokenizer(build_char_vocab(corpus.train))
    windows = pack(corpus.train, tokenizer, 32)
    assert all(len(w) <= 32 and w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in windows)
    # every token of the training texts is in exactly one window, in order
    flat = [t for w in windows for t in w if t not in (tokenizer.cls_token_id, tokenizer.sep_token_id)]
    expected = [t for ids in tokenizer(corpus.train, add_special_tokens=False)["input_ids"] for t in ids]
    assert flat == expected


@pytest.fixture(scope="module")
def pretrained(corpus_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    cfg = pretrain_config(corpus_file, "pretrain.epochs=6")
    metrics = run_pretraining(cfg, run_dir, corpus_for(cfg))
    return run_dir, metrics


def test_mlm_loss_falls_and_the_output_is_a_hugging_face_model(pretrained):
    from transformers import AutoModel, AutoTokenizer

    run_dir, metrics = pretrained
    before, after = metrics["held_out"]["before"], metrics["held_out"]["after"]
    assert after["loss"] < before["loss"] - 1.0 and after["accuracy"] > before["accuracy"]
    assert after["perplexity"] == pytest.approx(torch.tensor(after["loss"]).exp().item(), rel=1e-5)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["train"]["tokens_seen"] > 0 and metrics["train"]["tokens_per_s"] > 0
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    model, tokenizer = AutoModel.from_pretrained(run_dir), AutoTokenizer.from_pretrained(run_dir)
    assert model.config.hidden_size == 32 and tokenizer.is_fast
    assert tokenizer.unk_token_id not in tokenizer("张伟在北京工作")["input_ids"]  # demo characters are in the vocabulary


def test_the_pretrained_directory_fine_tunes_with_regner_train(pretrained, tmp_path):
    run_dir, _ = pretrained
    result = regner("train", "encoder=pretrained", f"encoder.pretrained={run_dir}", "encoder.lr=1e-3",
                    "data.train_size=100", "data.dev_size=30", "data.test_size=0", "trainer.max_epochs=1",
                    "trainer.progress=false", "head.head_size=16", "hydra.run.dir=ft", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOAD REPORT" not in result.stderr and "UNEXPECTED" not in result.stderr  # the MLM head is dropped quietly
    assert (tmp_path / "ft" / "metrics.json").exists()


def test_continued_pretraining_starts_from_the_saved_weights(pretrained, corpus_file, tmp_path):
    run_dir, scratch = pretrained
    cfg = pretrain_config(corpus_file, "encoder=pretrained", f"encoder.pretrained={run_dir}", "pretrain.max_steps=2",
                          "pretrain.lr=5e-5")
    continued = run_pretraining(cfg, tmp_path / "continued", corpus_for(cfg))
    assert continued["model"]["continued_from"] == str(run_dir)
    assert continued["held_out"]["before"]["loss"] == pytest.approx(scratch["held_out"]["after"]["loss"], rel=1e-4)
    assert continued["held_out"]["before"]["loss"] < scratch["held_out"]["before"]["loss"] - 1.0


def test_interrupted_and_resumed_pretraining_matches_uninterrupted(corpus_file, tmp_path, monkeypatch):
    cfg = pretrain_config(corpus_file, "pretrain.max_steps=12", "pretrain.eval_every=4")
    corpus = corpus_for(cfg)
    reference = run_pretraining(cfg, tmp_path / "reference", corpus)
    stop = StopFlag()
    original = MLMPretrainer.train_step

    def train_step(self, indices):
        if self.state.step == 6:  # a SIGTERM arrives during step 7
            stop.request(15)
        return original(self, indices)

    monkeypatch.setattr(MLMPretrainer, "train_step", train_step)
    with pytest.raises(Interrupted):
        run_pretraining(cfg, tmp_path / "resumed", corpus, stop=stop)
    status = json.loads((tmp_path / "resumed" / "status.json").read_text())
    assert status["status"] == "interrupted" and "regner pretrain resume=" in status["resume_command"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, tmp_path / "resumed" / "config.yaml", resolve=True)  # what `regner pretrain` saves first
    result = regner(*status["resume_command"].split()[1:], cwd=tmp_path)  # the printed command, through the CLI
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed pretraining at step 7" in result.stderr
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["held_out"] == reference["held_out"]
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "history.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "reference" / "history.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train_loss"], r["held_out"]) for r in rows] == \
        [(r["step"], r["train_loss"], r["held_out"]) for r in expected]


BAD_CORPUS = [
    ("empty.txt", b"", ["empty.txt", "holds no text"]),
    ("missing.txt", None, ["missing.txt: file not found"]),
    ("gbk.txt", "你好世界\n再见\n".encode("gbk"), ["gbk.txt:1:", "not valid utf-8", "pretrain.encoding=gb18030"]),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": 3}\n', ["bad.jsonl:2:", '"text"']),
]


@pytest.mark.parametrize("name,content,needles", BAD_CORPUS, ids=[c[0] for c in BAD_CORPUS])
def test_bad_corpus_input_fails_with_file_and_line(tmp_path, name, content, needles):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    result = regner("pretrain", *TINY, f"pretrain.corpus=[{name}]", "hydra.run.dir=run", cwd=tmp_path)
    clean_failure(result, *needles)
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model.safetensors").exists()


def test_rerunning_the_same_pretraining_does_nothing(corpus_file, tmp_path):
    args = ["pretrain", *TINY, f"pretrain.corpus=[{corpus_file}]", "pretrain.max_steps=2", "hydra.run.dir=cached"]
    first = regner(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(tmp_path / "cached")
    again = regner(*args, cwd=tmp_path)
    assert again.returncode == 0 and "is up to date" in again.stderr, again.stderr[-3000:]
    assert snapshot(tmp_path / "cached") == before
    changed = regner(*args[:-1], "pretrain.max_steps=3", "hydra.run.dir=cached", cwd=tmp_path)
    clean_failure(changed, "holds a finished pretraining of other inputs")  # never overwritten
    assert snapshot(tmp_path / "cached") == before


def test_zh_mini_without_make_pretrain_says_what_to_run(tmp_path):
    env_dir = tmp_path / "nowhere"
    result = regner("train", "encoder=zh-mini", f"encoder.pretrained={env_dir}/zh-mini", "trainer.progress=false",
                    cwd=tmp_path)
    clean_failure(result, "does not exist", "make pretrain")


def test_pretrain_config_is_validated_before_reading(tmp_path):
    result = regner("pretrain", "pretrain.mlm_probability=1.5", "pretrain.corpus=[x.txt]", cwd=tmp_path)
    clean_failure(result, "pretrain.mlm_probability=1.5")
    assert os.listdir(tmp_path) in ([], ["outputs"])  # nothing that looks like a finished run
    assert not list(Path(tmp_path).glob("**/metrics.json"))


def test_random_init_keeps_architecture_and_tokenizer_but_not_weights(pretrained):
    from regner.model.encoder import load_pretrained

    run_dir, _ = pretrained
    tokenizer, trained = load_pretrained(str(run_dir), {})
    same_tokenizer, fresh = load_pretrained(str(run_dir), {"random_init": True})
    assert same_tokenizer.get_vocab() == tokenizer.get_vocab() and fresh.config.to_dict() == trained.config.to_dict()
    weights = trained.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in load_pretrained(str(run_dir), {})[1].state_dict().items())
    assert not torch.equal(fresh.state_dict()["embeddings.word_embeddings.weight"],
                           weights["embeddings.word_embeddings.weight"])


def test_comparison_table_pairs_seeds_by_hand(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_pretrained",
                                                  Path(__file__).resolve().parents[1] / "scripts" / "compare_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = {"pretrained": {1: 0.70, 2: 0.74, 3: 0.69}, "random": {1: 0.60, 2: 0.61, 3: 0.62}}
    for arm, per_seed in values.items():
        for seed, f1 in per_seed.items():
            run = tmp_path / "weibo" / arm / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"dev": {"f1": f1 + 0.1}, "test": {"f1": f1}, "epochs": 5,
                                                          "best_epoch": 4, "train": {"wall_time_s": 60}}))
    text = module.table(tmp_path, ["weibo"], [1, 2, 3])
    # differences 0.10, 0.13, 0.07: mean 0.10, sd 0.03, t = 0.10 / (0.03 / √3) = 5.774, df 2 → p = 0.0287
    assert "+10.00 points, p = 0.0287 (paired t (n=3))" in text and "| weibo | test | pretrained | 3 of 3 |" in text


def test_bf16_autocast_pretrains_with_finite_losses(corpus_file, tmp_path):
    cfg = pretrain_config(corpus_file, "pretrain.max_steps=3", "pretrain.precision=bf16", "pretrain.device=cpu")
    metrics = run_pretraining(cfg, tmp_path / "bf16", corpus_for(cfg))
    assert metrics["train"]["precision"] == "bf16"
    assert all(map(lambda v: v == v and v < 50, (metrics["held_out"]["before"]["loss"],
                                                 metrics["held_out"]["after"]["loss"])))


def test_two_gloo_ranks_pretrain_through_the_data_parallel_path(corpus_file, tmp_path):
    import subprocess
    import sys

    from .test_distributed import free_port

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "-m", "regner.cli", "pretrain", *TINY, f"pretrain.corpus=[{corpus_file}]",
               "pretrain.max_steps=4", "pretrain.device=cpu", "hydra.run.dir=run"]
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "REGNER_CACHE": os.environ["REGNER_CACHE"]}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["train"]["steps"] == 4
    assert list(tmp_path.glob("**/metrics.json")) == [tmp_path / "run" / "metrics.json"]  # rank 1 wrote nothing
    assert (tmp_path / "run" / "last" / "pretrain_rng_rank1.pt").exists()


def test_pretrain_help_lists_its_profiles_and_keys():
    result = regner("pretrain", "--help", cwd=Path.cwd())
    assert result.returncode == 0
    for needle in ("pretrain: default, zh-mini, zh-small-gpu", "pretrain.from_data", "resume=RUN_DIR"):
        assert needle in result.stdout, needle
