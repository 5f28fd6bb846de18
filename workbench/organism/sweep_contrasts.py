"""The sweep's three questions as paired contrasts over seeds, per channel.

A regime's gain (student minus control log-odds) is a per-seed number; regimes of one seed share
its base, teacher and data, so every comparison between regimes is made within a seed first and
then carried over seeds (the seed is the unit: DESIGN.md section 5), with a 95% t interval:

- **optimiser**: for each pair of optimisers, the mean over the student shapes both were run with
  of gain(A) - gain(B);
- **full vs LoRA**: per optimiser, the mean over LoRA ranks of gain(LoRA r) - gain(full);
- **rank**: per optimiser, the least-squares slope of gain on log2(rank) (log-odds per doubling of
  the rank), and with three or more ranks the curvature, the coefficient of log2(rank)^2 in a
  quadratic fit: negative is concave, the inverted U of Nief et al. when the peak lies inside the
  swept ranks.

A cell that diverged (gain None) leaves its shape out of that seed's contrast; a seed with nothing
to compare gives None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from workbench.results.seeds import over_seeds, paired_interval

Gains = dict[tuple[str, Any], dict[int, float | None]]  # (optimiser, rank or "full") -> seed -> gain


def _defined(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _gains_by_regime(entries: Sequence[dict[str, Any]]) -> Gains:
    gains: Gains = {}
    for e in entries:
        shape = "full" if e["regime"]["students"] == "full" else int(e["regime"]["r"])
        gains[(e["regime"]["optimizer"], shape)] = dict(zip((int(s) for s in e["seeds"]), e["gain"]))
    return gains


def _row(channel: str, question: str, label: str, seeds: list[int], per_seed: list[float | None]) -> dict[str, Any]:
    stats = over_seeds(per_seed)
    return {"channel": channel, "question": question, "label": label, "seeds": seeds, "per_seed": per_seed,
            "mean": stats.mean, "ci": paired_interval(per_seed, [0.0] * len(per_seed))}


def rank_fit(ranks: Sequence[int], gains: Sequence[float], degree: int) -> float:
    """The slope (degree 1) or the curvature (degree 2: the coefficient of x^2) of gain on x = log2(rank)."""
    x = np.log2(np.asarray(ranks, dtype=float))
    return float(np.polyfit(x, np.asarray(gains, dtype=float), degree)[0])


def contrasts(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every contrast the sweep's regimes allow, per channel (organism): see the module docstring."""
    out: list[dict[str, Any]] = []
    for organism in dict.fromkeys(e["organism"] for e in summary):
        entries = [e for e in summary if e["organism"] == organism]
        channel = entries[0].get("channel") or organism
        gains = _gains_by_regime(entries)
        seeds = sorted({s for per in gains.values() for s in per})
        optimisers = list(dict.fromkeys(opt for opt, _ in gains))
        shapes_of = {opt: [shape for o, shape in gains if o == opt] for opt in optimisers}

        for a, b in combinations(optimisers, 2):
            common = [shape for shape in shapes_of[a] if shape in shapes_of[b]]
            if not common:
                continue
            per_seed = []
            for s in seeds:
                diffs = [gains[(a, sh)].get(s) - gains[(b, sh)].get(s) for sh in common
                         if _defined(gains[(a, sh)].get(s)) and _defined(gains[(b, sh)].get(s))]
                per_seed.append(float(np.mean(diffs)) if diffs else None)
            out.append(_row(channel, "optimiser", f"{a} - {b} (mean over {len(common)} shapes)", seeds, per_seed))

        for opt in optimisers:
            ranks = sorted(sh for sh in shapes_of[opt] if sh != "full")
            if "full" in shapes_of[opt] and ranks:
                per_seed = []
                for s in seeds:
                    full = gains[(opt, "full")].get(s)
                    diffs = [gains[(opt, r)].get(s) - full for r in ranks if _defined(full) and _defined(gains[(opt, r)].get(s))]
                    per_seed.append(float(np.mean(diffs)) if diffs else None)
                out.append(_row(channel, "full vs LoRA", f"{opt}: LoRA (mean over r={','.join(map(str, ranks))}) - full",
                                seeds, per_seed))
            for degree, question, what in ((1, "rank slope", "per doubling of r"), (2, "rank curvature", "log2(r)^2")):
                if len(ranks) <= degree:
                    continue
                per_seed = []
                for s in seeds:
                    points = [(r, gains[(opt, r)].get(s)) for r in ranks if _defined(gains[(opt, r)].get(s))]
                    per_seed.append(rank_fit([r for r, _ in points], [g for _, g in points], degree)
                                    if len(points) > degree else None)
                out.append(_row(channel, question, f"{opt}: {what}, r={ranks[0]}-{ranks[-1]}", seeds, per_seed))
    return out


def format_contrasts(rows: Sequence[dict[str, Any]]) -> str:
    """The contrasts as text: per seed, mean and 95% t interval over seeds; * where the interval excludes 0."""
    if not rows:
        return ""
    lines = ["paired contrasts of the gain over seeds (within each seed first; * = the 95% t interval excludes 0, "
             "not corrected for the number of contrasts)",
             f"{'channel':<8} {'question':<15} {'contrast':<52} {'per seed':<24} mean [95% t]"]
    for r in rows:
        per = " / ".join("n/a" if v is None else f"{v:+.2f}" for v in r["per_seed"])
        ci = r["ci"]
        mean = "n/a" if r["mean"] is None else f"{r['mean']:+.2f}"
        interval = "" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" + (" *" if ci[0] > 0 or ci[1] < 0 else "")
        lines.append(f"{r['channel']:<8} {r['question']:<15} {r['label']:<52} {per:<24} {mean}{interval}")
    return "\n".join(lines)


__all__ = ["contrasts", "format_contrasts", "rank_fit"]
