"""Datasets from the Hugging Face hub or a local ``datasets`` directory.

Two layouts are understood: token/tag columns (the common hub layout, tags as strings or
``ClassLabel`` ids), or a text column with span entities in the canonical form.
"""

from __future__ import annotations

from pathlib import Path

from regner.data.errors import DataError
from regner.data.schemes import TagSchemeError, check_scheme_name, tags_to_spans
from regner.data.types import Entity, Example


def load_hub_dataset(path: str, name: str | None = None, revision: str | None = None):
    """A ``DatasetDict`` from a hub id, a directory of data files, or a ``save_to_disk`` dir."""
    import datasets

    local = Path(path)
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(path, name, revision=revision)
    except FileNotFoundError as err:
        raise DataError(f"cannot load dataset: {err}", path) from None
    except Exception as err:  # network errors, unknown hub ids, bad files
        raise DataError(f"cannot load dataset ({type(err).__name__}: {err})", path) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _tag_names(split, tags_column: str) -> list[str] | None:
    feature = split.features[tags_column]
    inner = getattr(feature, "feature", None)
    names = getattr(inner, "names", None)
    return list(names) if names else None


def examples_from_hub_split(
    split,
    where: str,
    text_column: str = "text",
    entities_column: str = "entities",
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    scheme: str = "bio",
    on_invalid: str = "repair",
) -> list[Example]:
    """Convert one ``datasets.Dataset`` split; ``where`` names it in error messages."""
    columns = set(split.column_names)
    examples = []
    if tokens_column in columns and tags_column in columns:
        scheme = check_scheme_name(scheme, where)
        names = _tag_names(split, tags_column)
        for row_index, row in enumerate(split):
            tags = [names[t] if names is not None else str(t) for t in row[tags_column]]
            tokens = [str(t) for t in row[tokens_column]]
            if len(tags) != len(tokens):
                raise DataError(f"{len(tokens)} tokens but {len(tags)} tags", where, row_index)
            try:
                spans, _ = tags_to_spans(tags, scheme, on_invalid)
            except TagSchemeError as err:
                raise DataError(f"{err} (scheme {scheme})", where, row_index) from None
            starts = [0]
            for token in tokens:
                starts.append(starts[-1] + len(token))
            text = "".join(tokens)
            entities = sorted({Entity(starts[s], starts[e], t) for s, e, t in spans})
            examples.append(Example(text, entities, f"{where}:{row_index}"))
        return examples
    if text_column in columns:
        for row_index, row in enumerate(split):
            text = row[text_column]
            entities = set()
            for item in row.get(entities_column) or []:
                start, end, type_ = item["start"], item["end"], item["type"]
                if not (0 <= start < end <= len(text)):
                    raise DataError(f"span [{start}, {end}) of type {type_!r} is out of range", where, row_index)
                entities.add(Entity(start, end, type_))
            examples.append(Example(text, sorted(entities), f"{where}:{row_index}"))
        return examples
    raise DataError(
        f"found columns {sorted(columns)}; expected {tokens_column!r}+{tags_column!r} or "
        f"{text_column!r}+{entities_column!r} (set data.columns.* to map them)",
        where,
    )
