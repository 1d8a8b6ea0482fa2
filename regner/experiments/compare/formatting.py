"""How a comparison's numbers are written: F1 differences in points, one function for every part of the report."""

from __future__ import annotations

import math


def points(value: float | None, signed: bool = True) -> str:
    """An F1 difference in points (0.0123 → +1.23); "—" where there is none."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def mde_text(mde: float) -> str:
    """An MDE in points; "> 100" where it exceeds any possible F1 difference."""
    return "> 100" if math.isfinite(mde) and mde >= 1 else points(mde, False)


def ratio(value: float | None) -> str:
    """A cost or memory ratio to none (1.234 → 1.23); "—" where it was not measured."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2f}"
