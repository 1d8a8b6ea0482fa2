"""What a run *is*, independent of where and how it ran: the key of the comparison's run cache.

Two runs are the same run when their resolved configs (``config.yaml``) agree on everything that can
change the result. :func:`identity` turns a resolved config into that: it drops the keys that only say
how a run was watched or where it was written (threads, progress bars, loggers, the output and cache
directories, ``resume``), names every data file by the sha256 of its content instead of its path, and
the pretrained encoder by its fingerprint (:func:`encoder_fingerprint`), so the committed runs of
one machine are found from another checkout whose data and encoder live elsewhere. Keys added to
regner after runs were made are listed in :data:`LEGACY` with the value that behaves as the old code
did: a run without the key and a run with that value are the same run.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

# Keys that do not change what a run computes (how it was watched, where it was written).
# trainer.num_threads changes the order of float sums on CPU in the last bits only; so do head.blockwise and
# head.block_rows (the same loss and gradients within 1e-5, tests/test_blockwise.py).
RUN_ONLY = ("resume", "ckpt", "trainer.num_threads", "trainer.progress", "trainer.loggers", "trainer.mlflow",
            "trainer.log_every", "trainer.feature_cache", "trainer.num_workers", "trainer.save_every_steps",
            "trainer.resume", "encoder.missing_hint", "data.root", "head.blockwise", "head.block_rows")
DATA_FILES = ("data.train", "data.dev", "data.test", "data.unlabeled")
# (section, key) → the value at which the key behaves as the code before it existed (runs made then lack
# it), wherever under the section it is (a stacked regularizer's parts have their own)
LEGACY: dict[tuple[str, str], Any] = {("regularizer", "rampup_steps"): 0, ("data", "unlabeled"): None,
                                      ("data", "unlabeled_format"): "text", ("data", "unlabeled_from_train"): False,
                                      ("data", "unlabeled_dedup"): True, ("unlabeled", "rampup_epochs"): 0,
                                      ("unlabeled", "threshold"): None, ("trainer", "deterministic"): False}
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
ENCODER_FILES = ("config.json", *WEIGHTS, "tokenizer.json", "vocab.txt")
# A committed encoder directory keeps its fingerprint here instead of its weights.
FINGERPRINT_FILE = "fingerprint.sha256"

_file_digests: dict[tuple[str, int, int], str] = {}


def _pop(tree: dict, dotted: str) -> Any:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node.pop(leaf, None) if isinstance(node, dict) else None


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes (memoised by path, size and mtime); None when it does not exist."""
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        _file_digests[key] = _hash_file(hashlib.sha256(), path).hexdigest()
    return _file_digests[key]


def _hash_file(digest, path: Path):
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def encoder_files_digest(directory: Path) -> str:
    """sha256 over the encoder files ``directory`` holds (config, weights, tokenizer), each named first:
    the fingerprint a benchmark records and a comparison's cache keys on."""
    digest = hashlib.sha256()
    for name in ENCODER_FILES:
        path = directory / name
        if path.is_file():
            digest.update(name.encode())
            _hash_file(digest, path)
    return digest.hexdigest()


def encoder_fingerprint(directory: str | Path | None) -> str | None:
    """sha256 over a pretrained encoder directory's config, weights and tokenizer files (each named), or
    the fingerprint its ``fingerprint.sha256`` records where the weights were left out (a committed
    benchmark keeps its encoder's tokenizer and config, not its weights); None when neither is there."""
    if not directory:
        return None
    directory = Path(directory).expanduser()
    if not any((directory / name).is_file() for name in WEIGHTS):
        recorded = directory / FINGERPRINT_FILE
        if recorded.is_file():
            return recorded.read_text(encoding="utf-8").split()[0]
        return None
    return encoder_files_digest(directory)


def identity(config: dict, encoder_fingerprints: dict[str, str] | None = None) -> dict:
    """The result-determining part of a resolved run config (a plain dict, as ``config.yaml`` holds it).
    ``encoder_fingerprints`` maps encoder directories to fingerprints already known (e.g. recorded by
    the benchmark that made the runs) before the directory itself is asked."""
    tree = copy.deepcopy(config)
    for key in RUN_ONLY:
        _pop(tree, key)
    for key in DATA_FILES:
        path = _pop(tree, key)
        if path:
            digest = file_digest(path)
            if digest:
                _set(tree, key, f"sha256:{digest}")
            else:  # a directory (a saved dataset) is named by its path; a missing file by its name
                _set(tree, key, str(path) if Path(str(path)).expanduser().is_dir() else f"missing:{Path(str(path)).name}")
    pretrained = _get(tree, "encoder.pretrained")
    if isinstance(pretrained, str) and pretrained:
        known = (encoder_fingerprints or {}).get(pretrained)
        local = Path(pretrained).expanduser()
        if known is None and (local.is_dir() or local.is_absolute() or pretrained.startswith((".", "~"))):
            known = encoder_fingerprint(local)
            if known is None:
                known = f"unknown:{local.resolve()}"  # never matches a run made elsewhere
        if known is not None:  # else a hub id: the id names it
            _set(tree, "encoder.pretrained", f"sha256:{known}" if not known.startswith("unknown:") else known)
    for (section, key), old in LEGACY.items():
        _drop_legacy(tree.get(section), key, old)
    if not (tree.get("unlabeled") or {}).get("ratio"):  # supervised: how unlabeled text would be used is moot
        tree.pop("unlabeled", None)
    return tree


def _drop_legacy(node: Any, key: str, old: Any) -> None:
    if not isinstance(node, dict):
        return
    if key in node and node[key] == old:
        del node[key]
    for value in node.values():
        _drop_legacy(value, key, old)


def identity_key(config: dict, encoder_fingerprints: dict[str, str] | None = None) -> str:
    """The cache key: sha256 of the identity as canonical JSON."""
    text = json.dumps(identity(config, encoder_fingerprints), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
