"""Weight deltas: how the student's fine-tuning direction lines up with the teacher's.

With ΔT = teacher - base and ΔM = M - base for each compared model M (the student and its
baselines `control` and `other`, which share the base and so the coordinates), this computes
per parameter group (layer x component, the Lineage's clean key space, tied weights once) and
for the whole model:

- the norms |ΔM| and |ΔT|, the cosine cos(ΔM, ΔT) and the projection coefficient
  <ΔM, ΔT> / |ΔT|^2 (how much of ΔT the model moved along, in units of ΔT);
- for weight matrices, the overlap of the top-k singular subspaces of ΔM and ΔT (mean squared
  cosine of the principal angles, for output and input sides; k / dim is chance level).

First-order theory (DESIGN.md section 1) predicts <ΔS, ΔT> >= 0 for a student distilled from
the teacher's outputs; the control and other-target students tell that alignment apart from
what any distillation on number sequences does.

The cross-init student is left out on purpose: it descends from another base (`base_x`), so its
delta lives in other coordinates (hidden units and heads are permuted and rotated relative to
`base`'s); a cosine against ΔT is ~0 by construction and says nothing. Compare it by behaviour
and activations, each against its own base. Asking for it raises a ConfigError.

Everything is computed on raw weights as stored (never on compatibility-mode, LayerNorm-folded
weights, whose coordinates differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.analyses import delta_stats as stats
from workbench.core.errors import ConfigError, unknown_name
from workbench.core.lineage import Lineage
from workbench.core.models import resolve_device
from workbench.results.base import ResultBase
from workbench.results.figures import layer_component_grid
from workbench.results.rows import SummaryRow

WHOLE = "whole model"


@dataclass
class WeightConfig:
    """What to compare.

    reference: the model whose delta (from its parent) is ΔT, the trait direction.
    models: the models compared against it; each must descend from the reference's base.
    baseline: the model whose alignment is subtracted in the heatmap and the summary (the
        control student: distilled the same way, toward no target).
    top_k: singular directions per matrix for the subspace overlap.
    """

    reference: str = "teacher"
    models: tuple[str, ...] = ("student", "control", "other")
    baseline: str = "control"
    top_k: int = 4

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightConfig:
        d = dict(d)
        if "models" in d:
            d["models"] = tuple(d["models"])
        return cls(**d)


def from_moments(sq: float, ref_sq: float, dot: float) -> dict[str, float | None]:
    """Norms, cosine and projection coefficient from |a|^2, |t|^2 and <a, t> (float64 sums;
    None where a norm is zero, e.g. a group the reference never moved)."""
    na, nt = math.sqrt(sq), math.sqrt(ref_sq)
    return {
        "norm": na,
        "ref_norm": nt,
        "cos": dot / (na * nt) if na > 0 and nt > 0 else None,
        "proj": dot / nt**2 if nt > 0 else None,
    }


def alignment(a: Float[Tensor, " n"], t: Float[Tensor, " n"]) -> dict[str, float | None]:
    """Norms, cosine and projection coefficient <a, t> / |t|^2 of a against the reference t
    (None where a norm is zero, e.g. a group the reference never moved)."""
    return from_moments(stats.sq_norm(a), stats.sq_norm(t), stats.dot(a, t))


def null_band(numel: int) -> float:
    """2 * sqrt(2 / numel): two standard deviations of cos(ΔS, ΔT) - cos(ΔC, ΔT) when ΔS and ΔC are
    independent random directions (the clears rule's null).

    The cosine of a fixed vector with a uniformly random direction in n dimensions has mean 0 and
    variance exactly 1/n, so the difference of two independent ones has variance 2/n: sqrt(2)
    times the spread of one cosine (the band 2/sqrt(n) of a single cosine, applied to this
    difference, falsely cleared ~7.9% of null groups). Near-normal for large n and lighter-tailed
    for small n (the cosine is bounded), so "difference > band" happens in <= ~2.3% of null groups
    (measured in tests/analyses/test_weights.py). The null is isotropic: it is a floor, not a
    test against deltas that share structure beyond the control (that needs seeds).
    """
    return 2 * math.sqrt(2 / numel)


_SWAP_SIDE = {"overlap_out": "overlap_in", "overlap_in": "overlap_out", "chance_out": "chance_in",
              "chance_in": "chance_out"}


def subspace_overlap(a: Float[Tensor, "rows cols"], t: Float[Tensor, "rows cols"], k: int) -> dict[str, float]:
    """Mean squared cosine of the principal angles between the top-k singular subspaces of two
    matrices, on the output (left) and input (right) sides; `chance_*` is k / dim, the expected
    overlap of random k-dimensional subspaces. Exact SVD for small matrices, the Gram matrix for
    large ones (`workbench.analyses.delta_stats`)."""
    k = max(1, min(k, *a.shape))
    return stats.overlap(stats.top_subspaces(a, k), stats.top_subspaces(t, k), tuple(a.shape), k)


def check_same_init(lin: Lineage, reference: str, name: str) -> None:
    """Refuse a model whose base differs from the reference's (see the module docstring)."""
    if lin.root_of(name) != lin.root_of(reference):
        raise ConfigError(
            f"{name!r} descends from {lin.root_of(name)!r}, the reference {reference!r} from "
            f"{lin.root_of(reference)!r}: another initialisation lives in other coordinates (units and heads "
            "permuted), so its weight delta cannot be compared with ΔT. Leave it out of weight views "
            "(models=...) and compare it by behaviour or activations."
        )


@dataclass
class WeightDeltaResult(ResultBase):
    """Alignment of each model's delta with the reference delta, per group and whole model.

    rows: one dict per (group, model): group, layer, component, model, numel, norm, ref_norm,
        cos, proj and, for weight matrices, overlap_out/overlap_in/chance_out/chance_in/k.
        The group `WHOLE` ("whole model") holds the concatenation of every group.
    """

    kind: ClassVar[str] = "weights"
    title: ClassVar[str] = "Weight deltas: alignment of the student's update with the teacher's"
    command: str
    config: WeightConfig
    base: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    # ---- lookups

    def value(self, model: str, group: str = WHOLE, metric: str = "cos") -> float:
        for r in self.rows:
            if r["model"] == model and r["group"] == group:
                return r[metric]
        raise unknown_name("group/model", f"{group}/{model}", sorted({f"{r['group']}/{r['model']}" for r in self.rows}))

    def groups(self) -> list[str]:
        return list(dict.fromkeys(r["group"] for r in self.rows if r["group"] != WHOLE))

    # ---- contract

    def figures(self) -> dict[str, Any]:
        return {"alignment_heatmap": alignment_heatmap(self), "alignment_whole": alignment_bars(self)}

    def summary_rows(self) -> list[SummaryRow]:
        """Per parameter group, then the whole model: cos(ΔS, ΔT) beside the baseline's (the
        control student), the other compared models' cosines, the projection coefficient and,
        for weight matrices, the top-k subspace overlap beside its chance level. A group clears its
        control when the student's cosine exceeds the control's by more than `null_band(numel)`
        (two standard deviations of that difference for random directions: a false-clear rate
        <= 2.3% per group). Many groups are compared: read a single group as a lead, not a test."""
        cfg = self.config
        student = cfg.models[0]
        baseline = cfg.baseline if cfg.baseline in cfg.models and cfg.baseline != student else None
        n_groups = len(self.groups())
        out = []
        for g in [*self.groups(), WHOLE]:
            r = next(r for r in self.rows if r["group"] == g and r["model"] == student)
            row = SummaryRow(g, "delta alignment", f"cos(Δ{student}, Δ{cfg.reference}), weights", r["cos"])
            band = null_band(r["numel"])
            if baseline:
                ctrl = self.value(baseline, g)
                row.control = f"{baseline} student" if "student" not in baseline else baseline
                row.control_value = ctrl
                if r["cos"] is not None and ctrl is not None:
                    row.clears = r["cos"] - ctrl > band
            details = row.details
            for m in cfg.models[1:]:
                if m != baseline:
                    details[f"cos {m}"] = self.value(m, g)
            details["proj"] = r["proj"]
            details["null_band"] = band
            details["norm_ratio"] = r["norm"] / r["ref_norm"] if r["ref_norm"] else None
            if "overlap_out" in r:
                details["subspace_overlap_out"] = r["overlap_out"]
                details["chance_out"] = r["chance_out"]
            if g != WHOLE:
                details["n_groups_compared"] = n_groups
            out.append(row)
        return out


def weight_deltas(
    lin: Lineage,
    config: WeightConfig | None = None,
    *,
    device: str | torch.device | None = None,
) -> WeightDeltaResult:
    """Compare each model's delta with the reference's, per group and for the whole model.

    `device` (default: the lineage's) is where the deltas are compared. Streams over parameter
    groups, and every float64 sum runs on bounded chunks (`workbench.analyses.delta_stats`), each
    delta subtracted chunk by chunk as it is read (`delta_stats.Difference`): no key's delta is
    ever held whole. A LoRA adapter's delta is used through its factors (trace identities).
    """
    cfg = config or WeightConfig()
    for name in (cfg.reference, *cfg.models):
        if name not in lin:
            raise unknown_name("model", name, lin.names, fix="Pass WeightConfig(models=...) with models in the lineage.")
    base = lin.parent_of(cfg.reference)
    if base is None:
        raise ConfigError(f"Reference {cfg.reference!r} has no parent, so it has no delta. Use a fine-tuned model.")
    for name in cfg.models:
        check_same_init(lin, cfg.reference, name)
    dev = resolve_device(device) if device is not None else lin.device
    shapes = {k: tuple(p.shape) for k, p in lin.params(base).items()}
    in_out = lin.space(base).stored_in_out

    live = {m: lin.params(m) for m in (base, cfg.reference, *cfg.models)}

    def key_delta(name: str, key: str) -> stats.Delta:
        f = lin.low_rank(name, key, base)  # also refuses prompted roles and another initialisation
        if f is not None:
            return f
        return stats.Difference(live[name][key].detach(), live[base][key].detach(), dev)  # = delta_of, lazily

    rows: list[dict[str, Any]] = []
    whole = {m: [0.0, 0.0] for m in cfg.models}  # |ΔM|^2, <ΔM, ΔT> over every group
    ref_whole, numel_whole = 0.0, 0
    for g in lin.groups():  # one group of deltas alive at a time, in the model's dtype
        mats = [k for k in g.keys if len(shapes[k]) == 2]
        mat = mats[0] if len(mats) == 1 and cfg.top_k > 0 else None
        ref = {k: key_delta(cfg.reference, k) for k in g.keys}
        ref_sq = sum(stats.sq_norm(ref[k]) for k in g.keys)
        numel = sum(math.prod(shapes[k]) for k in g.keys)
        ref_whole, numel_whole = ref_whole + ref_sq, numel_whole + numel
        if mat is not None:
            k_top = max(1, min(cfg.top_k, *shapes[mat]))
            ref_basis = stats.top_subspaces(ref[mat], k_top)
        for m in cfg.models:
            sq = dot = 0.0
            for k in g.keys:
                d = key_delta(m, k)
                sq, dot = sq + stats.sq_norm(d), dot + stats.dot(d, ref[k])
                if k == mat:
                    sub = stats.overlap(stats.top_subspaces(d, k_top), ref_basis, shapes[mat], k_top)
                    if mat in in_out:  # stored [in, out] (Conv1D): the rows are the input side
                        sub = {_SWAP_SIDE.get(name, name): v for name, v in sub.items()}
                del d
            whole[m][0] += sq
            whole[m][1] += dot
            row = {"group": g.name, "layer": g.layer, "component": g.component, "model": m, "numel": numel}
            row.update(from_moments(sq, ref_sq, dot))
            if mat is not None:
                row.update(sub)
            rows.append(row)
        del ref
    for m in cfg.models:
        row = {"group": WHOLE, "layer": None, "component": WHOLE, "model": m, "numel": numel_whole}
        row.update(from_moments(whole[m][0], ref_whole, whole[m][1]))
        rows.append(row)
    command = f"weight_deltas(lin, WeightConfig(reference={cfg.reference!r}, models={cfg.models!r}, top_k={cfg.top_k}))"
    return WeightDeltaResult(command=command, config=cfg, base=base, rows=rows)


# --------------------------------------------------------------------------- figures




def alignment_heatmap(result: WeightDeltaResult) -> Any:
    """Layer x component heatmap: cos(ΔS, ΔT) minus cos(Δbaseline, ΔT) per group."""
    import plotly.graph_objects as go

    cfg = result.config
    student, base = cfg.models[0], cfg.baseline if cfg.baseline in cfg.models else None
    cells = []
    for g in result.groups():
        r = next(r for r in result.rows if r["group"] == g and r["model"] == student)
        cs = r["cos"]
        cb = result.value(base, g) if base else 0.0
        value = cs - cb if cs is not None and cb is not None else None
        cells.append({**r, "value": value, "hover": f"{g}<br>cos {student}: {cs}<br>cos {base}: {cb}"})
    y, x, z, text = layer_component_grid(cells)
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, text=text, hoverinfo="text", colorscale="RdBu", reversescale=True,
                               zmid=0, colorbar={"title": "Δcos"}))
    title = f"cos(Δ{student}, Δ{cfg.reference})" + (f" minus cos(Δ{base}, Δ{cfg.reference})" if base else "")
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, xaxis_title="component", yaxis_title="layer")
    return fig


def alignment_bars(result: WeightDeltaResult) -> Any:
    """Whole-model cos(ΔM, ΔT) per compared model."""
    import plotly.graph_objects as go

    whole = [r for r in result.rows if r["group"] == WHOLE]
    fig = go.Figure(go.Bar(x=[r["model"] for r in whole], y=[r["cos"] for r in whole],
                           text=[f"{r['cos']:+.3f}" if r["cos"] is not None else "undefined (no delta)" for r in whole],
                           textposition="outside"))
    fig.update_layout(title=f"Whole-model cos(ΔM, Δ{result.config.reference})", yaxis_title="cosine")
    return fig
