"""The alignment analysis over seeds (the seed is the unit): AUROC per direction, and the per-group figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.analyses.alignment_result import AlignmentResult
from workbench.results.seeds import over_seeds


def detection_over_seeds(results: Sequence[AlignmentResult]) -> list[dict[str, Any]]:
    """Per direction: AUROC per seed, mean and sd over seeds (the seed is the unit; sd 0.0 with one
    seed, as printed); random directions pooled into one row (mean of per-seed means and per-seed max)."""
    per_seed: dict[str, list[float]] = {}
    for res in results:
        rand = [r["auroc"] for r in res.detection if r["kind"] == "random"]
        for r in res.detection:
            if r["kind"] != "random":
                per_seed.setdefault(r["direction"], []).append(r["auroc"])
        if rand:
            per_seed.setdefault("random (mean)", []).append(float(np.mean(rand)))
            per_seed.setdefault("random (max)", []).append(float(np.max(rand)))
        if res.path.get("K"):
            per_seed.setdefault("delta_T path (max K)", []).append(res.path["auroc"][-1])
    out = []
    for direction, values in per_seed.items():
        stats = over_seeds(values)
        out.append({"direction": direction, "per_seed": values, "mean": stats.mean, "sd": stats.sd_or(0.0)})
    return out


def group_figure_over_seeds(results: Sequence[AlignmentResult], direction: str) -> go.Figure:
    """Per-group difference for one direction: mean over seeds with the seeds' sd, seeds as dots."""
    groups = results[0].groups
    values = np.array([r.group_diff[direction] for r in results])
    fig = go.Figure(go.Bar(x=groups, y=values.mean(0), name="mean over seeds",
                           error_y=dict(type="data", array=values.std(0, ddof=1) if len(results) > 1 else None)))
    for i, row in enumerate(values):
        fig.add_trace(go.Scatter(x=groups, y=row, mode="markers", name=f"seed {i}"))
    fig.update_layout(title=f"Per-group alignment ({direction}): teacher rows minus base rows, over {len(results)} seed(s)",
                      yaxis_title="difference of mean a_{i,g}")
    return fig


__all__ = ["group_figure_over_seeds", "detection_over_seeds"]
