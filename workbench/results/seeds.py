"""One way to combine a number over seeds: the training run (seed) is the unit (DESIGN.md section 5).

`over_seeds(values)` gives the mean, the sample standard deviation (ddof=1), the number of
seeds that count and the per-seed values. Undefined values (None or NaN: e.g. a cosine of no
shift) are left out of the mean and sd but kept in `per_seed`; with fewer than two defined
values the sd is None (one seed has no spread), with none the mean is None too. Callers choose
how to print a missing sd.

>>> s = over_seeds([0.2, 0.4, None])
>>> round(s.mean, 6), round(s.sd, 6), s.n, s.per_seed
(0.3, 0.141421, 2, [0.2, 0.4, None])
>>> over_seeds([0.5]).sd is None
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedStats:
    """A number over seeds: mean and sample sd of the defined values, their count, every seed's value."""

    mean: float | None
    sd: float | None
    n: int
    per_seed: list[float | None]

    def mean_or(self, missing: float) -> float:
        return self.mean if self.mean is not None else missing

    def sd_or(self, missing: float) -> float:
        """The sd, or `missing` where it is undefined (fewer than two seeds)."""
        return self.sd if self.sd is not None else missing


def t_quantile(df: int, level: float = 0.975) -> float:
    """Student's t quantile (scipy's), e.g. 4.303 for a two-sided 95% interval over 3 seeds (df 2)."""
    from scipy.stats import t

    return float(t.ppf(level, df))


def paired_interval(values: Sequence[float | None], controls: Sequence[float | None],
                    level: float = 0.975) -> tuple[float, float] | None:
    """The t interval of value - control over the seeds where both are defined (mean +- t * sd / sqrt(n),
    two-sided 95% by default): None with fewer than two such seeds.

    >>> lo, hi = paired_interval([0.9, 0.8, 0.85], [0.1, 0.12, 0.11])
    >>> round(lo, 3), round(hi, 3)
    (0.591, 0.889)
    >>> paired_interval([0.9, 0.2, 0.85], [0.1, 0.12, 0.11])[0] < 0  # one seed barely clears: the interval spans 0
    True
    """
    return t_interval([v - c for v, c in zip(values, controls) if _defined(v) and _defined(c)], level)


def t_interval(values: Sequence[float | None], level: float = 0.975) -> tuple[float, float] | None:
    """The t interval of the mean of the defined values (mean +- t * sd / sqrt(n)): None with fewer than two.

    >>> [round(x, 3) for x in t_interval([1.0, 2.0, 3.0])]
    [-0.484, 4.484]
    """
    kept = np.asarray([v for v in values if _defined(v)], dtype=float)
    if len(kept) < 2:
        return None
    half = t_quantile(len(kept) - 1, level) * float(np.std(kept, ddof=1)) / math.sqrt(len(kept))
    mean = float(np.mean(kept))
    return mean - half, mean + half


def _defined(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def over_seeds(values: Sequence[float | None]) -> SeedStats:
    """Mean, sample sd (ddof=1), count and per-seed values of one number over seeds."""
    per_seed = [None if v is None else float(v) for v in values]
    finite = np.asarray([v for v in per_seed if _defined(v)], dtype=float)
    mean = float(np.mean(finite)) if len(finite) else None
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return SeedStats(mean=mean, sd=sd, n=len(finite), per_seed=per_seed)
