"""Config trees as flat ``dotted.key → value`` maps (what reports group by and trackers log)."""

from __future__ import annotations

import json
from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (as JSON, so they compare and hash)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(tree, sort_keys=True) if isinstance(tree, list) else tree}
