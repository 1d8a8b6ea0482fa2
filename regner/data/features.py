"""Characters ↔ tokens: turn examples into model windows with span labels, exactly.

Each text is tokenised once with a fast tokenizer (``return_offsets_mapping``), entities are mapped
to token spans on the full token sequence, and only then is the sequence cut into overlapping
windows of ``max_length`` tokens. Doing it in this order makes "is this entity inside this window"
an exact integer test, and every entity that cannot be represented is counted, never lost silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from regner.data.types import Entity, Example

log = logging.getLogger(__name__)


@dataclass
class Window:
    """Model input for one window of one example. Token 0 is [CLS]; the last is [SEP]."""

    example_index: int
    input_ids: list[int]
    offsets: list[tuple[int, int]]  # character offsets per position, (0, 0) for specials
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (type_id, start, end) inclusive positions

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodingStats:
    """What could not be represented; logged so that no entity disappears silently."""

    examples: int = 0
    windows: int = 0
    entities: int = 0
    misaligned: int = 0  # a token straddles an entity boundary, or no token covers the entity
    outside_windows: int = 0  # aligned, but no window holds the whole entity
    unknown_type: int = 0
    long_examples: int = 0

    def report(self, split: str) -> None:
        log.info("%s: %d examples -> %d windows (%d longer than one window)",
                 split, self.examples, self.windows, self.long_examples)
        lost = self.misaligned + self.outside_windows + self.unknown_type
        if lost:
            log.warning(
                "%s: %d of %d entities cannot be trained on: %d misaligned with tokens, %d not inside "
                "any window, %d of a type not in the label set", split, lost, self.entities,
                self.misaligned, self.outside_windows, self.unknown_type)


def char_to_token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Inclusive token span exactly covering characters ``[start, end)``, or None.

    Characters no token covers (spaces, control characters the tokenizer drops) may sit at the
    edges; a token that straddles either boundary makes the span unrepresentable.
    """
    first = last = None
    for index, (a, b) in enumerate(offsets):
        if a >= b:
            continue
        if a < start < b or a < end < b:
            return None
        if start <= a and b <= end:
            if first is None:
                first = index
            last = index
    return None if first is None else (first, last)


def token_to_char_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Character span ``[a, b)`` of the inclusive token span ``start..end``."""
    return offsets[start][0], offsets[end][1]


def _special_ids(tokenizer) -> tuple[int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer has neither [CLS]/[SEP] nor BOS/EOS tokens")
    return cls_id, sep_id


def window_starts(n_tokens: int, size: int, overlap: int) -> list[int]:
    """Start positions of windows of ``size`` tokens overlapping by ``overlap``; the last window
    is aligned to the end so it is full-length."""
    if n_tokens <= size:
        return [0]
    step = max(1, size - overlap)
    starts = list(range(0, n_tokens - size, step))
    starts.append(n_tokens - size)
    return starts


def encode_examples(
    examples: Sequence[Example],
    tokenizer,
    label2id: dict[str, int],
    max_length: int = 512,
    overlap: int = 64,
    batch_size: int = 1000,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[list[Window], EncodingStats]:
    """Tokenise examples into windows of at most ``max_length`` positions (specials included);
    ``on_chunk(n)`` is told after every chunk of ``n`` examples (a progress bar)."""
    if max_length < 3:
        raise ValueError("max_length must leave room for at least one token besides [CLS]/[SEP]")
    size = max_length - 2
    overlap = min(overlap, size - 1)
    cls_id, sep_id = _special_ids(tokenizer)
    stats = EncodingStats(examples=len(examples))
    windows: list[Window] = []
    for chunk_start in range(0, len(examples), batch_size):
        chunk = examples[chunk_start : chunk_start + batch_size]
        encoded = tokenizer(
            [ex.text for ex in chunk], add_special_tokens=False, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False,
        )
        for offset_in_chunk, ex in enumerate(chunk):
            index = chunk_start + offset_in_chunk
            ids = encoded["input_ids"][offset_in_chunk]
            offsets = [tuple(o) for o in encoded["offset_mapping"][offset_in_chunk]]
            token_spans = []
            for entity in ex.entities:
                stats.entities += 1
                if entity.type not in label2id:
                    stats.unknown_type += 1
                    continue
                span = char_to_token_span(offsets, entity.start, entity.end)
                if span is None:
                    stats.misaligned += 1
                    continue
                token_spans.append((label2id[entity.type], span[0], span[1]))
            starts = window_starts(len(ids), size, overlap)
            if len(starts) > 1:
                stats.long_examples += 1
            covered = set()
            for w_start in starts:
                w_end = min(w_start + size, len(ids))
                inside = [(t, s - w_start + 1, e - w_start + 1) for t, s, e in token_spans if w_start <= s and e < w_end]
                covered.update((t, s + w_start - 1, e + w_start - 1) for t, s, e in inside)
                windows.append(Window(
                    example_index=index,
                    input_ids=[cls_id, *ids[w_start:w_end], sep_id],
                    offsets=[(0, 0), *offsets[w_start:w_end], (0, 0)],
                    spans=inside,
                ))
            stats.outside_windows += len(set(token_spans) - covered)
        if on_chunk is not None:
            on_chunk(len(chunk))
    stats.windows = len(windows)
    return windows, stats


def window_entities(window: Window, triples: Sequence[tuple[int, int, int]], id2label: Sequence[str]) -> list[Entity]:
    """Character-level entities for (type_id, start, end) positions predicted in ``window``."""
    out = []
    for type_id, start, end in triples:
        a, b = token_to_char_span(window.offsets, start, end)
        if a < b:
            out.append(Entity(a, b, id2label[type_id]))
    return out


FEATURE_CACHE_VERSION = 1


def feature_cache_key(examples: Sequence[Example], tokenizer, label2id: dict[str, int], max_length: int,
                      overlap: int) -> str:
    """A digest of everything the windows depend on: texts, entities, tokenizer, labels, sizes."""
    import hashlib
    import json

    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    header = [FEATURE_CACHE_VERSION, backend.to_str() if backend is not None else repr(tokenizer),
              sorted(label2id.items()), max_length, overlap]
    digest.update(json.dumps(header, ensure_ascii=False).encode())
    for ex in examples:
        digest.update(json.dumps([ex.text, [(e.start, e.end, e.type) for e in ex.entities]], ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def encode_examples_cached(examples, tokenizer, label2id, max_length=512, overlap=64, cache_dir=None,
                           on_chunk=None):
    """:func:`encode_examples`, reusing the windows of an identical earlier call from ``cache_dir``.

    Sweeps re-read the same data dozens of times; the cache makes that free. A damaged or foreign
    cache file is ignored and rewritten.
    """
    import pickle
    from pathlib import Path

    from regner.runs.io import atomic_target

    if not cache_dir:
        return encode_examples(examples, tokenizer, label2id, max_length, overlap, on_chunk=on_chunk)
    directory = Path(cache_dir).expanduser()
    key = feature_cache_key(examples, tokenizer, label2id, max_length, overlap)
    path = directory / f"{key}.pkl"
    if path.exists():
        try:
            with path.open("rb") as handle:
                windows, stats = pickle.load(handle)
            log.info("features of %d examples loaded from the feature cache %s (key %s: a digest of the texts, "
                     "entities, tokenizer, labels and window sizes, so edited data gets a new key; "
                     "trainer.feature_cache=null turns the cache off)", len(examples), path, key)
            return windows, stats
        except Exception as err:  # noqa: BLE001 - a bad cache file is just a cache miss
            log.warning("ignoring unreadable feature cache %s (%s)", path, err)
    windows, stats = encode_examples(examples, tokenizer, label2id, max_length, overlap, on_chunk=on_chunk)
    try:
        with atomic_target(path) as tmp:
            tmp.write_bytes(pickle.dumps((windows, stats), protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as err:
        log.warning("could not write the feature cache %s (%s)", path, err)
    return windows, stats
