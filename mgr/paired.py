"""Paired differences over seeds: their mean, a 95% Student-t interval, and the verdict it supports.

A demo runs both of its arms with the same seeds, so each seed gives one difference d_k =
statistic(arm A) − statistic(arm B). The question "does A beat B?" is answered by the interval of
the mean difference, not by counting wins: "holds" exactly when the whole interval is above 0,
"opposite" when it is below 0, otherwise "inconclusive" (the data allow either sign).

No scipy: the two-sided 95% critical values of Student's t for df = 1..30 are below (tested
against scipy where it is installed); more than 31 seeds are refused rather than approximated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# t_{0.975, df} for df = 1 .. 30
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
MAX_SEEDS = len(T975) + 1
VERDICTS = ("holds", "opposite", "inconclusive")


def t_critical(df: int) -> float:
    """The two-sided 95% critical value of Student's t with `df` degrees of freedom."""
    if not isinstance(df, int) or not 1 <= df <= len(T975):
        raise ValueError(f"degrees of freedom {df!r} out of range: the table covers 1 to {len(T975)} "
                         f"(2 to {MAX_SEEDS} seeds)")
    return T975[df - 1]


@dataclass(frozen=True)
class Paired:
    """The summary of n paired differences. ci95 is None below 2 differences (no spread to measure)."""
    diffs: tuple
    mean: float | None
    ci95: tuple | None
    holds_in: int  # differences > 0
    verdict: str

    @property
    def n(self) -> int:
        return len(self.diffs)


def verdict_of(ci95: tuple | None) -> str:
    if ci95 is None:
        return "inconclusive"
    lo, hi = ci95
    return "holds" if lo > 0 else "opposite" if hi < 0 else "inconclusive"


def summarize(diffs) -> Paired:
    """Mean, 95% t-interval of the mean, wins and verdict of the paired differences `diffs`."""
    d = tuple(float(x) for x in diffs)
    if any(not math.isfinite(x) for x in d):
        raise ValueError(f"paired differences must be finite numbers, got {d}")
    if len(d) > MAX_SEEDS:
        raise ValueError(f"{len(d)} differences: at most {MAX_SEEDS} are supported")
    if not d:
        return Paired((), None, None, 0, "inconclusive")
    n = len(d)
    mean = sum(d) / n
    ci = None
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        half = t_critical(n - 1) * sd / math.sqrt(n)
        ci = (mean - half, mean + half)
    return Paired(d, mean, ci, sum(x > 0 for x in d), verdict_of(ci))
