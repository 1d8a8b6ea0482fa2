"""Where a saved model is: a run directory, its ``checkpoint/``, or a ``regner export`` directory."""

from __future__ import annotations

from pathlib import Path

from regner.data.errors import DataError
from regner.model.span_model import MODEL_CONFIG


def checkpoint_dir(path: str | Path) -> Path:
    """Accept a run directory (its ``checkpoint/``) or a checkpoint directory itself."""
    path = Path(path).expanduser()
    for candidate in (path, path / "checkpoint"):
        if (candidate / MODEL_CONFIG).exists():
            return candidate
    if not path.exists():
        raise DataError("no such run or checkpoint directory", str(path))
    raise DataError(f"not a regner checkpoint or run directory (no {MODEL_CONFIG} here or in checkpoint/)", str(path))
