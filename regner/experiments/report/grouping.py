"""Which runs belong together: every config key that differs splits them, the regularizer's keys
into rows, the others into settings; strengths get short labels."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from regner.experiments.report.records import Group, RunRecord, is_treatment, setting_of, varying_keys


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_value(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))


def strength_labels(records: list[RunRecord], orders: dict[int, tuple] | None = None) -> dict[int, str]:
    """Label each run by the regularizer/KL keys that vary among the runs of its regularizer (the KL
    name has its own column), e.g. ``alpha=4`` or ``epsilon=0.1, relative=True``."""
    by_regularizer: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_regularizer[r.regularizer].append(r)
    labels = {}
    for runs in by_regularizer.values():
        varying = [k for k in varying_keys(runs) if is_treatment(k) and k != "kl.name"]
        for r in runs:
            relevant = r.relevant
            parts = [f"{k.split('.', 1)[1] if k.startswith('regularizer.') else k}={_format_value(relevant.get(k))}"
                     for k in varying]
            labels[id(r)] = ", ".join(parts) or "default"
            if orders is not None:
                orders[id(r)] = tuple(_sort_value(relevant.get(k)) for k in varying)
    return labels


def group_runs(records: list[RunRecord]) -> list[Group]:
    orders: dict[int, tuple] = {}
    labels, keys = strength_labels(records, orders), varying_keys(records)
    groups: dict[tuple, Group] = {}
    for r in records:
        setting = setting_of(r, keys)
        key = (setting, r.dataset, r.encoder, r.regularizer, r.kl or "", labels[id(r)])
        group = groups.setdefault(key, Group(r.dataset, r.encoder, r.regularizer, r.kl, labels[id(r)], setting,
                                             order=orders[id(r)]))
        group.runs.append(r)
    first = {"none": 0}
    return sorted(groups.values(), key=lambda g: (json.dumps(g.setting, default=str), g.dataset, g.encoder,
                                                  first.get(g.regularizer, 1), g.regularizer, g.kl or "", g.order))


def setting_label(group: Group) -> str:
    """How a setting reads in a header: dataset, encoder, then the other keys that vary."""
    extra = [f"{k}={_format_value(v)}" for k, v in group.setting if k not in ("data.name", "encoder.name")]
    return f"{group.dataset} — encoder {group.encoder}" + (f" — {', '.join(extra)}" if extra else "")
