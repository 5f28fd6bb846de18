"""Figures of the activation-shift results: cos(v_model, v_reference) and relative shift norms
per layer with their intervals (one seed) or mean ± std (over seeds), and the logit lens's
change of the target's logit per shift."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.results.figures import line_figure
from workbench.results.seeds import over_seeds

if TYPE_CHECKING:
    from workbench.analyses.shift_results import ActivationComparison, SeedAggregate


def comparison_figures(result: ActivationComparison) -> dict[str, Any]:
    """Alignment and shift-norm lines per layer, and the logit lens's target change when there is one."""
    x = result.layer_labels()
    seed = result.meta.get("seed")  # absent where the caller names no organism seed (the main job, your checkpoints)
    title = f"{result.meta.get('data', 'inputs')}, positions={result.meta['positions']}" + (
        f", seed {seed}" if seed is not None else "")
    figs = {
        "alignment": line_figure(x, {p: (result.cos[p], result.cos_lo[p], result.cos_hi[p]) for p in result.pairs},
                                 f"cos(v_model, v_reference) per layer ({title})", "cosine of mean shifts",
                                 null_band=2 / math.sqrt(max(result.meta.get("d_model", 1), 1))),
        "shift_norms": line_figure(x, {m: (result.rel_norm[m], result.rel_norm_lo[m], result.rel_norm_hi[m])
                                       for m in result.rel_norm},
                                   f"|v_model| / |a_parent| per layer ({title})", "relative shift norm"),
    }
    target = result.meta.get("target")
    if target and any(e for entries in result.lens.values() for e in entries):
        lines = {m: ([e.get("target_delta", float("nan")) for e in result.lens[m]], None, None) for m in result.lens}
        figs["logit_lens_target"] = line_figure(
            x, lines, f"logit-lens change of '{target}' caused by each shift ({title})",
            f"centred Δlogit of '{target}' (LN linearised at the parent's scale)")
    return figs


def seed_aggregate_figures(result: SeedAggregate) -> dict[str, Any]:
    """Alignment and shift-norm lines per layer over seeds (mean ± std)."""
    x = result.layer_labels()
    lines = {}
    for p in result.values:
        m, s = np.array(result.mean(p)), np.nan_to_num(np.array(result.std(p)))
        lines[p] = (m.tolist(), (m - s).tolist(), (m + s).tolist())
    norm_lines = {}
    for mdl, per_hook in result.norms.items():
        stats = [over_seeds(v) for v in per_hook]
        m = np.array([st.mean_or(float("nan")) for st in stats])
        s = np.array([st.sd_or(0.0) for st in stats])
        norm_lines[mdl] = (m.tolist(), (m - s).tolist(), (m + s).tolist())
    label = f"{len(result.seeds)} seeds, mean ± std; {result.meta.get('data', '')}"
    return {
        "alignment": line_figure(x, lines, f"cos(v_model, v_reference) per layer ({label})",
                                 "cosine of mean shifts", null_band=2 / math.sqrt(max(result.meta.get("d_model", 1), 1))),
        "shift_norms": line_figure(x, norm_lines, f"|v_model| / |a_parent| per layer ({label})",
                                   "relative shift norm"),
    }
