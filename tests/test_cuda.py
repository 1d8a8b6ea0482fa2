"""On a CUDA GPU: every regularizer in bf16 and fp16, VAT against its fp32 CPU reference, the exact gradient
penalty under SDPA, resume, torch.compile, ONNX export from a GPU-trained checkpoint and NCCL data parallel.

Every test here carries the ``cuda`` marker and is skipped (never errored) where CUDA is absent, as in CI:
``pytest -m cuda`` is the GPU suite (``scripts/device_check.sh`` runs it), and
tests/test_cuda_marker.py checks on any machine that the suite skips cleanly without a GPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from regner.model.head import span_mask
from regner.regularizers.base import DropoutState, TrainingStep
from regner.regularizers.gp import GradientPenalty
from regner.regularizers.kl import globalpointer_kl
from regner.regularizers.vat import VAT
from regner.training.run import run_training

from .helpers import killed_then_resumed, tiny_batch, tiny_model
from .test_training import compose_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda on one)")]

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["data.train_size=96", "data.dev_size=32", "data.test_size=32", "trainer.max_epochs=2",
            "trainer.batch_size=16", "trainer.progress=false", "trainer.device=cuda", "encoder.dropout=0.1"]
REGULARIZERS = ["none", "rdrop", "fgm", "pgd", "awp", "gp", "vat", "noise", "rdrop_fgm", "mean_teacher"]


def on(batch: dict, device: str) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def step_on(model, batch, **kwargs) -> TrainingStep:
    return TrainingStep(model=model, batch=batch, targets=batch["spans"], mask=span_mask(batch["token_mask"]),
                        kl=globalpointer_kl, **kwargs)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("regularizer", REGULARIZERS)
def test_every_regularizer_trains_in_half_precision_with_a_finite_loss(tmp_path, regularizer, precision):
    extra = ["regularizer.start_epoch=1"] if regularizer == "awp" else []
    metrics = run_training(compose_config(*TINY_RUN, f"regularizer={regularizer}", f"trainer.precision={precision}",
                                          *extra), tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert metrics["train"]["device"].startswith("cuda") and metrics["train"]["precision"] == precision
    assert all(torch.isfinite(torch.tensor(row["train"]["loss"])) for row in history)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_span_scores_stay_fp32_under_cuda_autocast(dtype):
    model, batch = tiny_model(dropout=0.1).cuda(), on(tiny_batch(), "cuda")
    with torch.autocast("cuda", dtype=dtype):
        scores = model(batch["input_ids"], batch["attention_mask"])
    assert scores.dtype == torch.float32 and torch.isfinite(scores[span_mask(batch["token_mask"]).expand_as(scores)]).all()


def test_vat_direction_on_cuda_matches_the_fp32_cpu_reference():
    torch.manual_seed(0)
    initial = None
    directions = {}
    for device in ("cpu", "cuda"):
        model, batch = tiny_model(seed=3, hidden=32).to(device), on(tiny_batch(), device)
        step = step_on(model, batch)
        base = step.embed().detach()
        initial = torch.randn_like(base.cpu()) if initial is None else initial
        dropout = DropoutState(step.device)
        with torch.no_grad(), dropout.replay():
            reference = step.fp32_scores(base)
        keep = step.padding_mask(base).expand_as(base)
        directions[device] = VAT(power_iterations=2).direction(step, base, reference, initial.to(device), dropout,
                                                               keep).cpu()
    cosine = torch.nn.functional.cosine_similarity(directions["cpu"].flatten(), directions["cuda"].flatten(), dim=0)
    assert float(cosine) > 0.999


def test_the_dropout_replay_forks_the_cuda_generator():
    model, batch = tiny_model(dropout=0.3).cuda(), on(tiny_batch(), "cuda")
    model.train()
    dropout = DropoutState(torch.device("cuda"))
    before = torch.cuda.get_rng_state()
    with torch.no_grad(), dropout.replay():
        first = model(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad(), dropout.replay():
        second = model(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(first, second)  # one dropout mask for every pass: VAT's search sees one function
    assert torch.equal(torch.cuda.get_rng_state(), before)  # and training continues as if nothing was replayed
    with torch.no_grad():
        fresh = model(batch["input_ids"], batch["attention_mask"])
    assert not torch.equal(fresh, first)


def test_the_exact_gradient_penalty_under_sdpa_is_second_order_on_cuda():
    """The GP's extra gradient equals a finite-difference derivative of ½ε‖∇ₑL‖² (fp64 on the GPU)."""
    torch.manual_seed(0)
    model, batch, epsilon = tiny_model().double().cuda(), on(tiny_batch(), "cuda"), 3.0

    def penalty() -> float:
        step = step_on(model, batch)
        embeds = step.embed()
        (g,) = torch.autograd.grad(step.ce(step.scores(inputs_embeds=embeds)), embeds)
        return float(0.5 * epsilon * g.pow(2).flatten(1).sum(1).mean())

    GradientPenalty(epsilon=epsilon, mode="exact").step(step_on(model, batch))
    with_penalty = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    step = step_on(model, batch)
    step.ce(step.scores()).backward()
    name = "encoder.encoder.layer.0.attention.self.query.weight"
    param = dict(model.named_parameters())[name]
    analytic = float(((with_penalty[name] - param.grad) * (direction := torch.randn_like(param))).sum())
    h = 1e-5
    with torch.no_grad():
        param.add_(h * direction)
    plus = penalty()
    with torch.no_grad():
        param.add_(-2 * h * direction)
    minus = penalty()
    assert abs(analytic) > 1e-6 and analytic == pytest.approx((plus - minus) / (2 * h), rel=1e-4)


def test_a_killed_and_resumed_cuda_run_matches_the_uninterrupted_one(tmp_path, monkeypatch):
    cfg = compose_config(*TINY_RUN, "regularizer=rdrop", "trainer.save_every_steps=2",
                         "trainer.deterministic=true")
    reference = run_training(cfg, tmp_path / "reference")
    resumed = killed_then_resumed(monkeypatch, cfg, tmp_path / "resumed", 5)
    assert resumed["dev"] == reference["dev"] and resumed["test"] == reference["test"]


def test_torch_compile_gives_the_eager_loss(tmp_path):
    run_training(compose_config(*TINY_RUN, "trainer.max_epochs=1"), tmp_path / "eager")
    compiled = run_training(compose_config(*TINY_RUN, "trainer.max_epochs=1", "trainer.compile=true"),
                            tmp_path / "compiled")
    assert compiled["train"]["compiled"] is True

    def losses(name):
        return [json.loads(line)["train"]["loss"] for line in (tmp_path / name / "history.jsonl").read_text().splitlines()]

    assert losses("compiled") == pytest.approx(losses("eager"), rel=1e-3)


def test_a_cuda_trained_checkpoint_exports_to_onnx_with_the_same_scores(tmp_path):
    pytest.importorskip("onnxruntime")
    from regner.data.batching import collate
    from regner.data.types import Example
    from regner.inference.export import export_onnx
    from regner.inference.loaded import LoadedModel

    run_training(compose_config(*TINY_RUN, "trainer.max_epochs=1"), tmp_path / "run")
    exported = export_onnx(tmp_path / "run", tmp_path / "onnx", progress=False)
    torch_model, onnx_model = LoadedModel.load(tmp_path / "run"), LoadedModel.load(exported)
    windows = torch_model.encode("dev", [Example("张三在北京大学工作"), Example("今天上海下雨")]).windows
    batch = collate(windows, 0)
    with torch.no_grad():
        expected = torch_model.model.cpu()(batch["input_ids"], batch["attention_mask"])
    got = onnx_model.model(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)


def test_data_parallel_over_nccl_on_one_gpu_runs(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
               f"--master_port={port}", "-m", "regner.cli", "train", *TINY_RUN, "regularizer=rdrop",
               f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "data parallel over 1 processes" in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 1 and metrics["train"]["ranks_in_sync"] is True


def test_the_blockwise_loss_and_kl_equal_the_dense_ones_on_cuda():
    from regner.model.blockwise import SpanField, blockwise_crossentropy, blockwise_rdrop
    from regner.model.loss import multilabel_crossentropy
    from regner.regularizers.kl import globalpointer_kl

    torch.manual_seed(0)
    batch, types, length = 4, 3, 37
    q, k = (torch.randn(2 * batch, types, length, 16, device="cuda", requires_grad=True) for _ in range(2))
    tokens = torch.arange(length, device="cuda")[None, :] < torch.tensor([37, 20, 9, 30], device="cuda")[:, None]
    rows = torch.tensor([[0, 1, 2, 4], [1, 0, 3, 3], [5, 2, 0, 7], [6, 1, 8, 8]], device="cuda")
    scores = torch.matmul(q, k.transpose(-1, -2))
    mask = span_mask(tokens)
    dense = multilabel_crossentropy(scores, rows, span_mask(torch.cat((tokens, tokens)))) \
        + 5.0 * globalpointer_kl(scores[:batch], scores[batch:], mask)
    ce, kl = blockwise_rdrop(SpanField(q, k), rows, tokens, block=5)
    assert float(ce + 5.0 * kl) == pytest.approx(float(dense), rel=1e-5)
    expected = torch.autograd.grad(dense, (q, k))
    got = torch.autograd.grad(ce + 5.0 * kl, (q, k))
    for e, g in zip(expected, got):
        assert float((g - e).abs().max()) <= 1e-5 * float(e.abs().max())
    single = blockwise_crossentropy(SpanField(q[:batch], k[:batch]), rows[:2], tokens)
    assert float(single) == pytest.approx(float(multilabel_crossentropy(scores[:batch], rows[:2], mask)), rel=1e-5)
