"""Unlabeled text for semi-supervised consistency training (``data.unlabeled``).

The texts come from a plain-text file (one text per line), or from a file in one of the labeled
formats whose labels are **never read**: only the text field of a CLUENER/JSON line, only the token
column of a CoNLL/BMES file, only the text (or tokens) column of a local Hugging Face dataset. A
malformed label therefore cannot stop unlabeled reading, and the labels a file carries cannot change
what training sees (tests/test_unlabeled.py checks both). ``data.unlabeled_from_train=true`` takes the
training sentences that ``data.max_train_samples`` left out instead, for learning curves that need no
extra file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from regner.data.errors import DataError
from regner.data.readers import json_object, open_lines, token_text

log = logging.getLogger(__name__)

UNLABELED_FORMATS = ("text", "cluener", "jsonl", "conll", "hf")


def _texts_of_lines(path: Path, encoding: str) -> list[str]:
    return [line.strip() for _, line in open_lines(path, encoding) if line.strip()]


def _texts_of_json_lines(path: Path, encoding: str) -> list[str]:
    records = (json_object(path, number, line) for number, line in open_lines(path, encoding) if line.strip())
    return [record["text"] for record in records if record["text"].strip()]  # only "text" is read


def _texts_of_conll(path: Path, encoding: str, token_column: int, strip_position_digits: bool) -> list[str]:
    texts, tokens = [], []
    for number, line in open_lines(path, encoding):
        if not line.strip():
            if tokens:
                texts.append("".join(tokens))
                tokens = []
            continue
        fields = line.split()
        try:
            tokens.append(token_text(fields[token_column], strip_position_digits))
        except IndexError:
            raise DataError(f"no column {token_column} (data.columns.token) in {line!r}", str(path), number) from None
    if tokens:
        texts.append("".join(tokens))
    return texts


def _texts_of_hub(path: str, cfg: Any) -> list[str]:
    from regner.data import hub

    dataset = hub.load_hub_dataset(path, cfg.get("config_name"), cfg.get("revision"))
    split_name = (cfg.get("splits") or {}).get("train", "train")
    if split_name not in dataset:
        raise DataError(f"no {split_name!r} split; found {sorted(dataset)}", path)
    split = dataset[split_name]
    columns = cfg.get("columns") or {}
    text_column, tokens_column = columns.get("text_column", "text"), columns.get("tokens_column", "tokens")
    if text_column in split.column_names:
        return [t for t in split[text_column] if isinstance(t, str) and t.strip()]
    if tokens_column in split.column_names:
        return ["".join(tokens) for tokens in split[tokens_column] if tokens]
    raise DataError(f"neither a {text_column!r} nor a {tokens_column!r} column (data.columns.text_column / "
                    f"tokens_column); columns: {split.column_names}", path)


def read_unlabeled(path: str | Path, fmt: str, cfg: Any) -> list[str]:
    """The texts of ``path`` read as ``fmt`` (see the module's docstring); labels are never parsed."""
    if fmt not in UNLABELED_FORMATS:
        raise DataError(f"unknown data.unlabeled_format {fmt!r}; choose one of {', '.join(UNLABELED_FORMATS)}")
    encoding = cfg.get("encoding") or "utf-8"
    if fmt == "hf":
        return _texts_of_hub(str(path), cfg)
    path = Path(path)
    if fmt == "text":
        return _texts_of_lines(path, encoding)
    if fmt in ("cluener", "jsonl"):
        return _texts_of_json_lines(path, encoding)
    columns = cfg.get("columns") or {}
    return _texts_of_conll(path, encoding, int(columns.get("token", 0)), bool(cfg.get("strip_position_digits")))


def deduplicate(texts: list[str], held_out: list[str], drop: bool, name: str) -> list[str]:
    """Report (and with ``drop``, remove) unlabeled texts that are also dev/test texts: training on a
    test sentence, even without its labels, is a leak."""
    seen = set(held_out)
    overlap = sum(t in seen for t in texts)
    if overlap:
        if drop:
            log.warning("%s: %d unlabeled text(s) also occur in dev/test: dropped (data.unlabeled_dedup=true)", name,
                        overlap)
            return [t for t in texts if t not in seen]
        log.warning("%s: %d unlabeled text(s) also occur in dev/test and are kept (data.unlabeled_dedup=false)", name,
                    overlap)
    return texts
