"""Encoders and tokenizers: pretrained through ``transformers``, or a tiny random BERT.

The tiny encoder exists for offline use and fast experiments: its character vocabulary is built
from the training texts (plus ``##`` continuation pieces for non-CJK characters, so Latin words and
digit runs split into characters instead of collapsing to one [UNK]) and saved with the run.
"""

from __future__ import annotations

import contextlib
import logging
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from regner.errors import UserError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class EncoderError(UserError):
    """The encoder cannot be loaded (not a model directory, hub unreachable, ...)."""


def _is_cjk(char: str) -> bool:
    return "CJK" in unicodedata.name(char, "")


def build_char_vocab(texts: Iterable[str], min_freq: int = 1) -> list[str]:
    """Tokens for a character-level WordPiece vocabulary, normalised the way BERT normalises."""
    from tokenizers.normalizers import BertNormalizer

    normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(ch for ch in normalizer.normalize_str(text) if not ch.isspace())
    chars = sorted(ch for ch, n in counts.items() if n >= min_freq)
    chars = sorted(set(chars) | set(string.ascii_lowercase + string.digits))
    continuation = sorted("##" + ch for ch in chars if not _is_cjk(ch))
    return SPECIAL_TOKENS + [ch for ch in chars if ch not in SPECIAL_TOKENS] + continuation


def tiny_tokenizer(vocab: list[str]):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)


def tiny_encoder(vocab_size: int, cfg: Any):
    """A randomly initialised BERT with the sizes given in the ``encoder`` config."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
    )
    config._attn_implementation = cfg.get("attn_implementation") or "sdpa"
    return BertModel(config, add_pooling_layer=False)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' per-load report and progress bars off for the block (regner logs what it loaded).
    The "unexpected" keys it would list for a masked-LM checkpoint are the MLM head, which an encoder drops."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(name_or_path: str, cfg: Any | None = None):
    """Tokenizer and encoder from a hub name or a local directory, with a clear error."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    cfg = cfg or {}
    local = Path(name_or_path).expanduser()
    if local.exists() and not (local / "config.json").exists():
        raise EncoderError(f"{name_or_path}: a directory without config.json is not a transformers model")
    if not local.exists() and cfg.get("missing_hint"):
        raise EncoderError(f"{name_or_path} does not exist: {cfg['missing_hint']}")
    overrides = {}
    if cfg.get("dropout") is not None:
        overrides = {"hidden_dropout_prob": cfg["dropout"], "attention_probs_dropout_prob": cfg["dropout"]}
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(name_or_path), **overrides)
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
            kwargs = {"attn_implementation": cfg["attn_implementation"]} if cfg.get("attn_implementation") else {}
            if not cfg.get("random_init", False):
                encoder = AutoModel.from_pretrained(str(name_or_path), config=config, add_pooling_layer=False,
                                                    **kwargs)
            else:  # the same architecture and tokenizer, freshly initialised (a from-scratch baseline)
                encoder = AutoModel.from_config(config, add_pooling_layer=False, **kwargs)
    except (OSError, ValueError) as err:
        raise EncoderError(f"cannot load encoder {name_or_path!r}: {err}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise EncoderError(f"{name_or_path}: regner needs a fast tokenizer (character offsets)")
    return tokenizer, encoder


def build_encoder(cfg: Any, train_texts: Iterable[str]):
    """(tokenizer, encoder) for an ``encoder`` config: pretrained if ``cfg.pretrained`` is set,
    else the tiny random BERT with a vocabulary taken from ``train_texts``."""
    if cfg.get("pretrained"):
        return load_pretrained(cfg.pretrained, cfg)
    vocab = build_char_vocab(train_texts, cfg.get("vocab_min_freq", 1))
    log.info("tiny encoder: %d-token character vocabulary built from the training texts", len(vocab))
    return tiny_tokenizer(vocab), tiny_encoder(len(vocab), cfg)
