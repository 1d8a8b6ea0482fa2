"""The benchmark matrices must only name configs and keys that exist (they are never run in CI)."""

import itertools
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from regner.cli import config_dir

MATRICES = sorted((Path(__file__).resolve().parents[1] / "scripts" / "matrices").glob("*.yaml"))


def expand(cell: str) -> list[list[str]]:
    """Every combination of a cell's comma-separated sweep values."""
    choices = []
    for override in shlex.split(cell):
        key, _, values = override.partition("=")
        choices.append([f"{key}={v}" for v in values.split(",")])
    return [list(combo) for combo in itertools.product(*choices)]


@pytest.mark.parametrize("matrix", MATRICES, ids=lambda p: p.stem)
def test_every_cell_composes(matrix):
    spec = OmegaConf.load(matrix)
    assert spec.experiments and spec.cells and len(str(spec.seeds).split(",")) >= 3
    names = set()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for experiment in spec.experiments:
            for cell in spec.cells:
                for overrides in expand(cell):
                    cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
                    names.add(cfg.regularizer.name)
    # every regularizer regner has is in every matrix (stack.yaml is the empty template for combinations)
    shipped = {path.stem for path in (Path(config_dir()) / "regularizer").glob("*.yaml")} - {"stack"}
    assert names == shipped
