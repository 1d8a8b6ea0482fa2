"""Turn a ``data`` config into train/dev/test example lists and a label set."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regner.data import demo, hub, readers
from regner.data.errors import DataError
from regner.data.types import Example

log = logging.getLogger(__name__)

FORMATS = ("demo", "cluener", "jsonl", "conll", "hf")


@dataclass
class DataSplits:
    name: str
    train: list[Example]
    dev: list[Example]
    test: list[Example] | None
    labels: list[str]
    unlabeled: list[str] | None = None  # texts for consistency training (data.unlabeled*)

    def summary(self) -> str:
        parts = [f"train {len(self.train)}", f"dev {len(self.dev)}"]
        if self.test is not None:
            parts.append(f"test {len(self.test)}")
        if self.unlabeled is not None:
            parts.append(f"unlabeled {len(self.unlabeled)}")
        return f"{self.name}: " + ", ".join(parts) + f"; {len(self.labels)} types: {', '.join(self.labels)}"


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def _read_file(cfg: Any, path: str) -> list[Example]:
    fmt, encoding = cfg["format"], _get(cfg, "encoding", "utf-8")
    if fmt == "cluener":
        return readers.read_cluener(path, end_inclusive=_get(cfg, "end_inclusive", True), encoding=encoding)
    if fmt == "jsonl":
        return readers.read_jsonl(path, end_inclusive=_get(cfg, "end_inclusive", False), encoding=encoding)
    columns = _get(cfg, "columns", {})
    return readers.read_conll(
        path,
        scheme=_get(cfg, "scheme", "bio"),
        on_invalid=_get(cfg, "on_invalid", "repair"),
        strip_position_digits=_get(cfg, "strip_position_digits", False),
        token_column=_get(columns, "token", 0),
        tag_column=_get(columns, "tag", -1),
        encoding=encoding,
    )


def _resolve(path: str | None, base_dir: Path | None) -> str | None:
    if path is None:
        return None
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p)


def _read_splits(cfg: Any, base_dir: Path | None) -> tuple[list, list | None, list | None]:
    fmt = cfg["format"]
    if fmt == "demo":
        seed = _get(cfg, "seed", 0)
        test_size = _get(cfg, "test_size", 0)
        return (
            demo.generate_split(cfg["train_size"], seed, "train"),
            demo.generate_split(cfg["dev_size"], seed, "dev"),
            demo.generate_split(test_size, seed, "test") if test_size else None,
        )
    if fmt == "hf":
        path = str(cfg["path"])
        local = _resolve(path, base_dir)
        source = local if Path(local).exists() else path
        dataset = hub.load_hub_dataset(source, _get(cfg, "config_name"), _get(cfg, "revision"))
        columns = dict(_get(cfg, "columns", {}))
        split_names = dict(_get(cfg, "splits", {"train": "train", "dev": "validation", "test": "test"}))
        out = []
        for role in ("train", "dev", "test"):
            split_name = split_names.get(role)
            if split_name and split_name in dataset:
                out.append(
                    hub.examples_from_hub_split(
                        dataset[split_name],
                        f"{source}[{split_name}]",
                        scheme=_get(cfg, "scheme", "bio"),
                        on_invalid=_get(cfg, "on_invalid", "repair"),
                        **columns,
                    )
                )
            elif role == "train":
                raise DataError(f"no {split_name!r} split; found {sorted(dataset)}", source)
            else:
                out.append(None)
        return out[0], out[1], out[2]
    if fmt not in FORMATS:
        raise DataError(f"unknown data.format {fmt!r}; choose one of {', '.join(FORMATS)}")
    paths = {role: _resolve(_get(cfg, role), base_dir) for role in ("train", "dev", "test")}
    if paths["train"] is None:
        raise DataError("data.train is not set: give the path of the training file")
    train = _read_file(cfg, paths["train"])
    dev = _read_file(cfg, paths["dev"]) if paths["dev"] else None
    test = _read_file(cfg, paths["test"]) if paths["test"] else None
    return train, dev, test


PATH_KEYS = ("train", "dev", "test", "root")


def absolutize_paths(cfg: Any, base_dir: str | Path) -> None:
    """Rewrite relative data paths in ``cfg`` (an OmegaConf node) as absolute, in place, so a saved
    run config can be evaluated or resumed from any working directory. A hub id is left alone."""
    for key in (*PATH_KEYS, "path"):
        value = cfg.get(key)
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        candidate = Path(base_dir) / Path(value).expanduser()
        if key != "path" or candidate.exists():
            cfg[key] = str(candidate.resolve())


def carve_dev(train: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministically move ``fraction`` of train into a dev split."""
    if not 0 < fraction < 1:
        raise DataError(f"data.dev_fraction must be in (0, 1) to carve a dev split, got {fraction}")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(train) * fraction))
    dev_ids = set(order[:n_dev])
    return [ex for i, ex in enumerate(train) if i not in dev_ids], [train[i] for i in sorted(dev_ids)]


def load_splits(cfg: Any, base_dir: str | Path | None = None) -> DataSplits:
    """Read every split named by ``cfg``; relative paths are taken from ``base_dir``."""
    base = Path(base_dir) if base_dir is not None else None
    name = _get(cfg, "name", cfg["format"])
    train, dev, test = _read_splits(cfg, base)
    if not train:
        raise DataError(f"the training split of {name!r} is empty")
    if dev is None:
        fraction, seed = _get(cfg, "dev_fraction", 0.1), _get(cfg, "split_seed", 0)
        train, dev = carve_dev(train, fraction, seed)
        log.info("%s has no dev split: carved %d of %d training examples (fraction %.3g, seed %d)",
                 name, len(dev), len(train) + len(dev), fraction, seed)
    if not dev:
        raise DataError(f"the dev split of {name!r} is empty")
    if test is not None and not test:
        raise DataError(f"the test split of {name!r} is empty")
    full_train = train
    train = _limit(train, _get(cfg, "max_train_samples"), "train", _get(cfg, "split_seed", 0))
    dev = _limit(dev, _get(cfg, "max_eval_samples"), "dev", _get(cfg, "split_seed", 0))
    if test is not None:
        test = _limit(test, _get(cfg, "max_eval_samples"), "test", _get(cfg, "split_seed", 0))
    trained = {e.type for ex in train for e in ex.entities}
    labels = list(_get(cfg, "labels", [])) or sorted(trained)
    if len(set(labels)) != len(labels):
        raise DataError(f"data.labels lists a type twice: {labels}")
    undeclared = sorted(trained - set(labels))
    if undeclared:
        raise DataError(f"the training split has entity types {undeclared} that data.labels {labels} does not list; "
                        "add them to data.labels (or set data.labels=null to take every type seen in train)")
    untrained = [label for label in labels if label not in trained]
    if untrained:
        log.warning("%s: data.labels declares %s but the training split has no example of %s; the model will "
                    "never learn to predict %s", name, untrained, "it" if len(untrained) == 1 else "them",
                    "it" if len(untrained) == 1 else "them")
    unknown = sorted({e.type for ex in dev + (test or []) for e in ex.entities} - set(labels))
    if unknown:
        log.warning("%s: entity types %s occur in dev/test but not in the training labels; they can never be predicted",
                    name, unknown)
    if not labels:
        raise DataError(f"the training split of {name!r} has no entities")
    return DataSplits(name, train, dev, test, labels, _unlabeled(cfg, base, name, full_train, train, dev, test))


def _unlabeled(cfg: Any, base: Path | None, name: str, full_train: list[Example], train: list[Example],
               dev: list[Example], test: list[Example] | None) -> list[str] | None:
    """The unlabeled texts (None when none are configured): ``data.unlabeled`` read without its labels,
    and/or the training sentences ``max_train_samples`` left out (``data.unlabeled_from_train``)."""
    from regner.data.unlabeled import deduplicate, read_unlabeled

    path, from_train = _get(cfg, "unlabeled"), bool(_get(cfg, "unlabeled_from_train", False))
    if not path and not from_train:
        return None
    texts: list[str] = []
    if path:
        fmt, resolved = _get(cfg, "unlabeled_format", "text"), _resolve(str(path), base)
        source = resolved if fmt != "hf" or Path(resolved).exists() else str(path)  # hf: a hub id stays an id
        texts += read_unlabeled(source, fmt, cfg)
    if from_train:
        if len(train) == len(full_train):
            raise DataError("data.unlabeled_from_train=true takes the training sentences that data.max_train_samples "
                            f"leaves out, but max_train_samples keeps all {len(full_train)} of {name!r}: set "
                            "data.max_train_samples=N below that")
        kept = {id(example) for example in train}
        texts += [example.text for example in full_train if id(example) not in kept]
    texts = deduplicate(texts, [e.text for e in dev + (test or [])], bool(_get(cfg, "unlabeled_dedup", True)), name)
    if not texts:
        raise DataError(f"no unlabeled text for {name!r} (data.unlabeled={path}, "
                        f"data.unlabeled_from_train={from_train})")
    log.info("%s: %d unlabeled text(s) for consistency training", name, len(texts))
    return texts


def _limit(examples: list[Example], limit: int | None, split: str, seed: int) -> list[Example]:
    """A deterministic random subset (benchmarks use CLUENER subsets), original order kept."""
    if not limit or limit >= len(examples):
        return examples
    keep = sorted(random.Random(f"{split}/{seed}").sample(range(len(examples)), limit))
    log.info("using %d of %d %s examples (max_*_samples)", limit, len(examples), split)
    return [examples[i] for i in keep]
