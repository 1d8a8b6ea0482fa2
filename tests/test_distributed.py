"""Two-process data-parallel training on CPU with the gloo backend, launched like torchrun does."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from regner.training.distributed import Distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_is_a_no_op():
    d = Distributed()
    assert not d.enabled and d.is_main and d.shard([[1], [2], [3]]) == [[1], [2], [3]]
    loss = torch.tensor(2.0)
    assert d.average_gradients([], loss) is loss


def test_sharding_gives_each_rank_equal_disjoint_batches():
    batches = [[i] for i in range(7)]
    shards = [Distributed(rank=r, world_size=2).shard(batches) for r in range(2)]
    assert shards == [[[0], [2], [4]], [[1], [3], [5]]]


def test_two_gloo_ranks_agree_and_write_once(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "-m", "regner.cli", "train",
               "data.train_size=96", "data.dev_size=24", "data.test_size=0", "trainer.max_epochs=2",
               "trainer.batch_size=8", "trainer.progress=false", "trainer.device=cpu", "regularizer=rdrop",
               "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.intermediate_size=64", f"hydra.run.dir={run_dir}"]
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "REGNER_CACHE": os.environ["REGNER_CACHE"]}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["train"]["ranks_in_sync"] is True
    assert metrics["train"]["steps"] == 2 * (96 // 8 // 2)  # each rank takes half of the 12 batches per epoch
    assert [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()] == [1, 2]
    assert list(tmp_path.glob("**/metrics.json")) == [run_dir / "metrics.json"]
    assert list(tmp_path.glob("outputs")) == []
    # each rank draws its own dropout masks: its saved random state differs from rank 0's
    rank0 = torch.load(run_dir / "last" / "trainer_state.pt", weights_only=False)["rng"]["torch"]
    rank1 = torch.load(run_dir / "last" / "rng_rank1.pt", weights_only=False)["torch"]
    assert not torch.equal(rank0, rank1)
    # resumed through the CLI on both ranks (rank 0 locks the directory; rank 1 must not trip on that lock)
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    resume = [*command[:command.index("train") + 1], f"resume={run_dir}", "trainer.max_epochs=3"]
    resume[resume.index(next(a for a in resume if a.startswith("--master_port")))] = f"--master_port={free_port()}"
    result = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["ranks_in_sync"] is True


def _broadcast_worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        d = Distributed(rank=rank, world_size=2)
        results[rank] = d.broadcast_flag(rank == 1)  # only rank 1 "wants" to stop
    finally:
        dist.destroy_process_group()


def test_early_stopping_flag_is_rank_zeros_on_every_rank():
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_broadcast_worker, args=(free_port(), results), nprocs=2, join=True)
    assert dict(results) == {0: False, 1: False}


def test_torchrun_with_one_process_joins_a_group_of_one(monkeypatch):
    """Under torchrun even world size 1 runs the collectives (the NCCL path of a single GPU); plain
    `regner train` (no TORCHELASTIC_RUN_ID) stays a single process without a group."""
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not Distributed.from_env("cpu").enabled
    for key, value in {"TORCHELASTIC_RUN_ID": "test", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    d = Distributed.from_env("cpu")
    try:
        assert d.enabled and d.joined and d.world_size == 1 and d.is_main
        assert d.broadcast_flag(True) is True
    finally:
        dist.destroy_process_group()
