"""The raw-text corpus for masked-language-model pretraining.

Texts come from raw files (one text per line, or JSONL with a ``text`` field) and from the
*training* split of any ``data=`` config (never its dev/test splits unless named explicitly, so a
fine-tuning comparison never pretrains on the text it is scored on). Lines are stripped and
deduplicated (first occurrence kept), a small fixed slice is held out for evaluation, and texts are
packed into windows of ``max_length`` tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.data.errors import DataError
from regner.errors import ConfigError
from regner.runs.progress import step

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclass
class Corpus:
    train: list[str]
    held_out: list[str]
    sources: dict[str, int] = field(default_factory=dict)  # texts read per source, before deduplication
    duplicates: int = 0

    def fingerprint(self) -> str:
        """A content hash of the corpus (train and held-out texts, in order)."""
        digest = hashlib.sha256()
        for part in (self.train, self.held_out):
            for text in part:
                digest.update(text.encode("utf-8"))
                digest.update(b"\n")
            digest.update(b"\0")
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"sources": self.sources, "duplicates_removed": self.duplicates, "train_texts": len(self.train),
                "train_chars": sum(len(t) for t in self.train), "held_out_texts": len(self.held_out),
                "held_out_chars": sum(len(t) for t in self.held_out)}


def read_text_file(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """Texts of a raw file: one per line, or a JSON object with a string ``text`` per line; blank lines skipped."""
    from regner.data.readers import open_lines

    texts = []
    for number, line in open_lines(path, encoding, key="pretrain.encoding"):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", str(path), number) from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError('a JSON line needs a string "text" field', str(path), number)
            line = record["text"]
        if line.strip():
            texts.append(line.strip())
    if not texts:
        raise DataError("the corpus file holds no text", str(path))
    return texts


def data_config(name: str):
    """The ``conf/data/<name>.yaml`` config, resolved (``$REGNER_DATA`` and relative roots included)."""
    from omegaconf import OmegaConf

    from regner.config.paths import config_dir

    path = Path(config_dir()) / "data" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError("pretrain.from_data", name, f"a data config among {', '.join(options)}")
    cfg = OmegaConf.load(path)
    OmegaConf.resolve(cfg)
    return cfg


def data_texts(name: str, splits: list[str], base_dir: Path | None = None) -> list[str]:
    """Texts of the named splits of a ``data=`` config (as fine-tuning reads them: MSRA's carved dev
    split is not part of its train split here either)."""
    from regner.data.loading import load_splits

    loaded = load_splits(data_config(name), base_dir)
    texts = []
    for split in splits:
        examples = getattr(loaded, split)
        if examples is None:
            log.warning("pretrain.from_data: %s has no %s split", name, split)
            continue
        texts += [ex.text for ex in examples]
    return texts


def build_corpus(files: list[str], data_names: list[str], splits: list[str], held_out_fraction: float,
                 held_out_max: int, seed: int, encoding: str = "utf-8", base_dir: Path | None = None) -> Corpus:
    """Read, strip, deduplicate and split off the held-out slice (a fixed function of the texts and seed)."""
    for split in splits:
        if split not in SPLITS:
            raise ConfigError("pretrain.splits", split, "a list drawn from train, dev, test")
    if not files and not data_names:
        raise ConfigError("pretrain.corpus", [], "at least one text file, or a data config in pretrain.from_data")
    sources: dict[str, list[str]] = {}
    for path in files:
        resolved = Path(path).expanduser()
        if not resolved.is_absolute() and base_dir is not None:
            resolved = base_dir / resolved
        sources[str(resolved)] = read_text_file(resolved, encoding)
    for name in data_names:
        sources[f"data={name} ({'+'.join(splits)})"] = data_texts(name, splits, base_dir)
    seen: set[str] = set()
    texts: list[str] = []
    for source_texts in sources.values():
        for text in source_texts:
            text = text.strip()
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
    total = sum(len(v) for v in sources.values())
    if not texts:
        raise DataError("the pretraining corpus is empty")
    n_held = min(held_out_max, max(1, round(len(texts) * held_out_fraction))) if len(texts) > 1 else 0

    def rank(text: str) -> str:
        return hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()

    held = set(sorted(texts, key=rank)[:n_held])
    corpus = Corpus([t for t in texts if t not in held], [t for t in texts if t in held],
                    {k: len(v) for k, v in sources.items()}, total - len(texts))
    log.info("corpus: %d texts (%d duplicates removed) from %s; %d held out for evaluation", len(texts),
             corpus.duplicates, ", ".join(f"{k}: {v}" for k, v in corpus.sources.items()), len(corpus.held_out))
    return corpus


def pack(texts: list[str], tokenizer, max_length: int, description: str = "tokenising corpus",
         progress: bool = True, chunk: int = 2000) -> list[list[int]]:
    """Token windows ``[CLS] a [SEP] b [SEP] ...`` of at most ``max_length`` tokens. A text never
    straddles two windows unless it is longer than one window, then it is cut into window-sized pieces."""
    if max_length < 8:
        raise ConfigError("pretrain.max_length", max_length, "an integer ≥ 8")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    room = max_length - 2
    windows: list[list[int]] = []
    current: list[int] = [cls_id]
    with step(description, len(texts), progress) as bar:
        for first in range(0, len(texts), chunk):
            for ids in tokenizer(texts[first : first + chunk], add_special_tokens=False)["input_ids"]:
                for start in range(0, len(ids), room):
                    piece = ids[start : start + room]
                    if len(current) + len(piece) + 1 > max_length:
                        windows.append(current)
                        current = [cls_id]
                    current += piece + [sep_id]
            bar.advance(len(texts[first : first + chunk]))
    if len(current) > 1:
        windows.append(current)
    return windows
