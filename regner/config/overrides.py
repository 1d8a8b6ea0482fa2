"""Command-line overrides checked before Hydra runs: an unknown config group option, an unknown key or a
misspelt group is a :class:`~regner.errors.ConfigError` with the valid choices and a did-you-mean
(Hydra's own message exits 1 and names no alternative), and a ``+key=value`` that adds a key regner
never reads gets a warning (it would be stored in the run's config and change nothing)."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from regner.config.paths import config_dir
from regner.errors import ConfigError, UserError


def groups(root: Path) -> dict[str, list[str]]:
    """Config group → its options (the YAML files under ``conf/<group>/``)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(root.iterdir())
            if d.is_dir() and d.name != "hydra" and any(d.glob("*.yaml"))}


def _keys(tree, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return set()
    found = set()
    for key, value in tree.items():
        name = f"{prefix}{key}"
        found.add(name)
        found |= _keys(value, name + ".")
    return found


def known_keys(root: Path) -> set[str]:
    """Every dotted key some YAML of ``conf/`` sets (a group's files under the group's name), and every
    key the validation rules read: what a ``+key=value`` may add without being ignored."""
    from regner.config.validation import RULES

    found = {rule.key for rule in RULES}
    for path in root.rglob("*.yaml"):
        relative = path.relative_to(root)
        if relative.parts[0] == "hydra":
            continue
        text = path.read_text(encoding="utf-8")
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            continue
        global_package = any("@package _global_" in line for line in text.splitlines()[:5])
        prefix = "" if len(relative.parts) == 1 or global_package else relative.parts[0] + "."
        found |= _keys({k: v for k, v in tree.items() if k != "defaults"} if isinstance(tree, dict) else {}, prefix)
    return found


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(close)}? " if close else ""


def check_overrides(argv: list[str], config_name: str = "config") -> list[str]:
    """Compose ``config_name`` with the overrides of ``argv`` (each sweep at its first value); raise
    ConfigError for an unknown group option or key, return the warnings for added keys regner never reads.
    Hydra's own arguments, and commands with a ``hydra.searchpath`` (generated presets), are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    plain = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except OverrideParseException:
        return []  # Hydra reports a malformed override itself
    if any(o.key_or_group.startswith("hydra.searchpath") for o in parsed):
        return []
    root = Path(config_dir())
    options = groups(root)
    composed = []
    for override in parsed:
        if override.key_or_group.startswith(("hydra.", "hydra/")) or override.key_or_group == "hydra":
            continue
        value = next(iter(override.sweep_string_iterator()), None) if override.is_sweep_override() else None
        line = override.input_line if value is None else f"{override.get_key_element()}={value}"
        composed.append(line)
        group = override.key_or_group
        if group in options and not override.is_delete():
            for choice in override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]:
                if isinstance(choice, str) and choice not in options[group]:
                    raise ConfigError(group, choice, f"one of {', '.join(options[group])}",
                                      _did_you_mean(choice, options[group]).strip().capitalize())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            compose(config_name, overrides=composed)
    except MissingConfigException as err:
        missing = str(err).split("Could not find '", 1)[-1].split("'", 1)[0]
        group, _, choice = missing.partition("/")
        if group in options:
            raise ConfigError(group, choice, f"one of {', '.join(options[group])}",
                              _did_you_mean(choice, options[group]).strip().capitalize()) from None
        raise ConfigError(missing, None, "an existing config", str(err).splitlines()[0]) from None
    except ConfigCompositionException as err:
        text = str(err)
        if text.startswith("Could not override '"):
            key = text.split("'", 2)[1]
            known = sorted(known_keys(root) | set(options))
            siblings = [k for k in known if k.rpartition(".")[0] == key.rpartition(".")[0]]
            hint = _suggest(key, known)
            raise UserError(f"unknown key {key}: regner's config has no such key; {hint}the keys at that level: "
                            f"{', '.join(siblings[:40]) or 'none'} (to add a new key on purpose: +{key}=VALUE)") from None
        return []  # anything else (an ambiguous sweep outside sweep mode, ...) Hydra says itself
    finally:
        GlobalHydra.instance().clear()
    added = [o for o in parsed if o.is_add() and not o.key_or_group.startswith("hydra") and o.key_or_group not in options]
    known = sorted(known_keys(root)) if added else []  # read every YAML only when a +key asks
    return [f"+{o.key_or_group}={o.value()} adds a key regner does not read: it is stored in the run's config and "
            f"changes nothing. {_suggest(o.key_or_group, known).strip()}" for o in added if o.key_or_group not in known]


def _suggest(key: str, known: list[str]) -> str:
    """A did-you-mean among the keys beside ``key`` first, then among all."""
    siblings = [k for k in known if k.rpartition(".")[0] == key.rpartition(".")[0]]
    return _did_you_mean(key, siblings) or _did_you_mean(key, known)
