"""The sweep's three questions as paired contrasts over seeds, per organism (channel).

A regime's gain (student minus control log-odds) is a per-seed number; regimes of one seed share
its base, teacher and data, so every comparison between regimes is made within a seed first and
then carried over seeds (the seed is the unit: DESIGN.md section 5), with a 95% t interval:

- **optimiser**: for each pair of optimisers, the mean over the student shapes both were run with
  (full counts as one shape beside each rank) of gain(A) - gain(B);
- **full vs LoRA**: per optimiser, the mean over LoRA ranks of gain(LoRA r) - gain(full);
- **rank slope**: per optimiser, the least-squares slope of gain on log2(rank): log-odds per
  doubling of the rank;
- **rank curvature**: with three or more ranks, the coefficient of log2(rank)^2 in a quadratic fit.
  Negative is concave; it is the inverted U of Nief et al. only when the fit's peak (`peak_rank`,
  per seed) lies inside the swept ranks.

Every seed of a contrast averages the same shapes: a shape with a diverged cell (gain None), a
student that did not fit its data (`unfit_seeds` of the summary) or a missing seed is left out of
the whole contrast (listed in `left_out`), never of one seed only.
The intervals are not corrected for the number of contrasts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from workbench.results.seeds import t_interval

Shape = Any  # "full" or a LoRA rank (int)


def _defined(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def shape_name(shape: Shape) -> str:
    return "full" if shape == "full" else f"r={shape}"


def rank_fit(ranks: Sequence[int], gains: Sequence[float], degree: int) -> float:
    """The slope (degree 1) or the curvature (degree 2: the coefficient of x^2) of gain on x = log2(rank)."""
    return float(np.polyfit(np.log2(np.asarray(ranks, dtype=float)), np.asarray(gains, dtype=float), degree)[0])


def peak_rank(ranks: Sequence[int], gains: Sequence[float]) -> float | None:
    """The rank at the vertex of the quadratic fit in log2(rank), when the fit is concave (else None).

    >>> round(peak_rank([1, 4, 16, 64], [0.0, 2.0, 2.0, 0.0]), 6)
    8.0
    """
    a, b, _ = np.polyfit(np.log2(np.asarray(ranks, dtype=float)), np.asarray(gains, dtype=float), 2)
    return _vertex(a, b)


def _vertex(a: float, b: float) -> float | None:
    """2^x at the vertex of a x^2 + b x + c when it is concave (else None)."""
    if not a < -1e-9 * max(abs(b), 1.0):  # convex, or a line up to rounding
        return None
    return float(2.0 ** min(max(-b / (2 * a), -1000.0), 1000.0))


class _Organism:
    """One organism's gains: (optimiser, shape) -> seed -> gain, and the seeds of the sweep."""

    def __init__(self, entries: Sequence[dict[str, Any]]):
        self.gains: dict[tuple[str, Shape], dict[int, float | None]] = {}
        for e in entries:
            shape = "full" if e["regime"]["students"] == "full" else int(e["regime"]["r"])
            unfit = set(e.get("unfit_seeds") or [])  # a student that did not fit its data measures no transfer
            self.gains[(e["regime"]["optimizer"], shape)] = {int(s): None if s in unfit else g
                                                             for s, g in zip(e["seeds"], e["gain"])}
        self.seeds = sorted({s for per in self.gains.values() for s in per})
        self.optimisers = list(dict.fromkeys(opt for opt, _ in self.gains))

    def shapes(self, optimiser: str) -> list[Shape]:
        return [shape for opt, shape in self.gains if opt == optimiser]

    def complete(self, optimiser: str, shape: Shape) -> bool:
        """Whether the regime has a defined gain on every seed of the sweep."""
        per = self.gains[(optimiser, shape)]
        return all(_defined(per.get(s)) for s in self.seeds)

    def gain(self, optimiser: str, shape: Shape, seed: int) -> float:
        return float(self.gains[(optimiser, shape)][seed])  # type: ignore[arg-type]

    def over_ranks(self, optimiser: str, ranks: Sequence[int], seed: int) -> list[float]:
        return [self.gain(optimiser, r, seed) for r in ranks]


def _row(organism: str, channel: str, question: str, label: str, seeds: list[int], per_seed: list[float | None],
         shapes: Sequence[Shape], left_out: Sequence[Shape], **extra: Any) -> dict[str, Any]:
    kept = [v for v in per_seed if _defined(v)]
    return {"organism": organism, "channel": channel, "question": question, "label": label, "seeds": seeds,
            "per_seed": per_seed, "mean": float(np.mean(kept)) if kept else None, "ci": t_interval(per_seed),
            "shapes": [shape_name(s) for s in shapes], "left_out": [shape_name(s) for s in left_out], **extra}


def _split(org: _Organism, pairs: Sequence[tuple[Shape, Sequence[str]]]) -> tuple[list[Shape], list[Shape]]:
    """Shapes whose every named optimiser's regime is complete on every seed, and the rest."""
    kept = [shape for shape, opts in pairs if all(org.complete(o, shape) for o in opts)]
    return kept, [shape for shape, _ in pairs if shape not in kept]


def organism_contrasts(organism: str, channel: str, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every contrast one organism's regimes allow (see the module docstring)."""
    org = _Organism(entries)
    seeds, out = org.seeds, []

    for a, b in combinations(org.optimisers, 2):
        shared = [shape for shape in org.shapes(a) if shape in org.shapes(b)]
        kept, left = _split(org, [(shape, (a, b)) for shape in shared])
        if shared:  # with nothing kept the row still says which shapes were left out
            per_seed = [float(np.mean([org.gain(a, sh, s) - org.gain(b, sh, s) for sh in kept])) if kept else None
                        for s in seeds]
            out.append(_row(organism, channel, "optimiser", f"{a} - {b}", seeds, per_seed, kept, left))

    for opt in org.optimisers:
        ranks, left = _split(org, [(r, (opt,)) for r in sorted(sh for sh in org.shapes(opt) if sh != "full")])
        if "full" in org.shapes(opt) and ranks and org.complete(opt, "full"):
            per_seed = [float(np.mean([org.gain(opt, r, s) - org.gain(opt, "full", s) for r in ranks])) for s in seeds]
            out.append(_row(organism, channel, "full vs LoRA", f"{opt}: LoRA - full", seeds, per_seed, ranks, left))
        if len(ranks) >= 2:
            per_seed = [rank_fit(ranks, org.over_ranks(opt, ranks, s), 1) for s in seeds]
            out.append(_row(organism, channel, "rank slope", f"{opt}: per doubling of r", seeds, per_seed, ranks, left))
        if len(ranks) >= 3:
            x = np.log2(np.asarray(ranks, dtype=float))
            fits = [np.polyfit(x, np.asarray(org.over_ranks(opt, ranks, s)), 2) for s in seeds]  # one fit per seed
            out.append(_row(organism, channel, "rank curvature", f"{opt}: log2(r)^2", seeds, [float(a) for a, _, _ in fits],
                            ranks, left, peak_rank=[_vertex(a, b) for a, b, _ in fits]))
    return out


def contrasts(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every contrast the sweep's regimes allow, per organism (channel): see the module docstring."""
    out: list[dict[str, Any]] = []
    for organism in dict.fromkeys(e["organism"] for e in summary):
        entries = [e for e in summary if e["organism"] == organism]
        out += organism_contrasts(organism, entries[0].get("channel") or Path(organism).name, entries)
    return out


def compact(shapes: Sequence[str]) -> str:
    """Shape names in short: ["full", "r=1", "r=8"] -> "full, r=1,8"."""
    ranks = [name[2:] for name in shapes if name.startswith("r=")]
    return ", ".join([name for name in shapes if not name.startswith("r=")] + (["r=" + ",".join(ranks)] if ranks else []))


def _where(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A name per organism: its channel, or channel (directory) where two organisms share a channel."""
    channels: dict[str, set[str]] = {}
    for r in rows:
        channels.setdefault(r["channel"], set()).add(r["organism"])
    return {r["organism"]: r["channel"] if len(channels[r["channel"]]) == 1 else f"{r['channel']} ({Path(r['organism']).name})"
            for r in rows}


def format_contrasts(rows: Sequence[dict[str, Any]]) -> str:
    """The contrasts as text: per seed, mean and 95% t interval over seeds; * where the interval excludes 0."""
    if not rows:
        return ""
    where = _where(rows)
    cells = []
    for r in rows:
        ci = r["ci"]
        over = "; ".join(part for part in (compact(r["shapes"]), r["left_out"] and f"left out {compact(r['left_out'])}")
                         if part)
        peaks = [p for p in r.get("peak_rank") or [] if p is not None]
        note = ("" if r["question"] != "rank curvature" else
                f"; concave in {len(peaks)}/{len(r['per_seed'])} seeds" + (f", peak r~{np.median(peaks):.3g}" if peaks else ""))
        cells.append((where[r["organism"]], r["question"], f"{r['label']} ({over}{note})",
                      " / ".join("n/a" if v is None else f"{v:+.3f}" for v in r["per_seed"]),
                      ("n/a" if r["mean"] is None else f"{r['mean']:+.3f}")
                      + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" *" if ci[0] > 0 or ci[1] < 0 else ""))))
    head = ("channel", "question", "contrast (over)", "per seed", "mean [95% t]")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
    lines = ["paired contrasts of the gain over seeds (within each seed first; * = the 95% t interval excludes 0, "
             "not corrected for the number of contrasts)"]
    lines += ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in [head, *cells]]
    return "\n".join(lines)


__all__ = ["contrasts", "format_contrasts", "organism_contrasts", "peak_rank", "rank_fit"]
