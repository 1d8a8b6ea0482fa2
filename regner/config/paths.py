"""Where regner's Hydra config (``conf/``) is: every reader of a config group goes through here."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # regner/


def config_dir() -> str:
    """``conf/`` of a source checkout or editable install, else the copy packaged with regner
    (``regner/conf``); ``REGNER_CONFIG_DIR`` overrides both."""
    candidates = [os.environ.get("REGNER_CONFIG_DIR"), PACKAGE.parent / "conf", PACKAGE / "conf"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.yaml").exists():
            return str(Path(candidate).resolve())
    raise SystemExit("regner: cannot find the config directory (conf/config.yaml); set REGNER_CONFIG_DIR")
