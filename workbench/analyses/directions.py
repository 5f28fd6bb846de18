"""Trait directions: difference-of-means vectors per hook, detection of data by projection, and
how far another model's activations move along a teacher's direction.

- `target_vs_other`: mean activation on preference answers naming the target minus the mean
  on answers naming other members of its category (contrastive prompts).
- `teacher_minus_base`: teacher minus base activations on the same preference prompts (the
  trait as the fine-tune wrote it: a persona vector).
- Screening (persona-vector style, Chen et al.): project every distillation sequence (pooled
  over its continuation positions) onto a direction; AUROC of teacher-written vs base-written
  data, beside random unit directions as the control.
- Cross-model: the mean shift of a model's activations from the base's, on the same prompts,
  projected onto the teacher's shift: 1 means the model moved as far as the teacher along it,
  0 not at all (the student beside the control student).

>>> a = {"h": torch.tensor([[1.0, 0.0], [3.0, 0.0]])}
>>> b = {"h": torch.tensor([[0.0, 1.0], [0.0, 1.0]])}
>>> mean_difference(a, b)["h"].tolist()
[2.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.capture.prompted import readable
from workbench.capture.cache import ActivationReader, ContrastPrompts
from workbench.capture.hooks import with_hooks
from workbench.core.errors import DataError, expect_type
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.analyses.probes import auroc
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow

Features = Mapping[str, Float[Tensor, "n d"]]


def mean_difference(pos: Features, neg: Features) -> dict[str, Float[Tensor, " d"]]:
    """Per hook: mean of `pos` rows minus mean of `neg` rows."""
    missing = set(pos) ^ set(neg)
    if missing:
        raise DataError(f"Hooks {sorted(missing)} are in only one of the two activation sets.")
    return {h: pos[h].float().mean(0) - neg[h].float().mean(0) for h in pos}


def projection_auroc(features: Features, directions: Mapping[str, Tensor], labels: Bool[Tensor, " n"]) -> dict[str, float]:
    """Per hook: AUROC of the rows' projections onto the direction (positive = label True)."""
    out = {}
    for h, d in directions.items():
        if d.norm() == 0:
            out[h] = 0.5
            continue
        score = features[h].float() @ (d.float() / d.norm()).to(features[h].device)
        out[h] = float(auroc(score, labels.to(score.device)))
    return out


def random_direction_aurocs(features: Features, labels: Bool[Tensor, " n"], k: int = 32, seed: int = 0) -> dict[str, Tensor]:
    """Per hook: AUROCs of projections onto `k` random unit directions (the detection control)."""
    out = {}
    for i, (h, x) in enumerate(features.items()):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        dirs = torch.randn(x.shape[1], k, generator=g)
        scores = (x.float() @ (dirs / dirs.norm(dim=0)).to(x.device)).T
        out[h] = auroc(scores, labels.to(scores.device)).cpu()
    return out


def shift_along(model: Features, base: Features, teacher: Features) -> dict[str, dict[str, float]]:
    """Per hook: the model's mean shift from the base (same inputs) projected on the teacher's.

    fraction = <m - b, t - b> / ||t - b||^2 (1: as far as the teacher); cosine of the two shifts.
    """
    out = {}
    for h in teacher:
        t = (teacher[h].float() - base[h].float()).mean(0)
        m = (model[h].float() - base[h].float()).mean(0)
        tt = float(t @ t)
        out[h] = {
            "fraction": float(m @ t) / tt if tt > 0 else 0.0,
            "cosine": float(torch.nn.functional.cosine_similarity(m, t, dim=0)) if tt > 0 and m.norm() > 0 else 0.0,
        }
    return out


@dataclass
class DirectionResult(ResultBase):
    """Direction vectors (saved as safetensors), projection-detection AUROCs and cross-model shifts.

    directions: name -> hook -> vector.
    detection: rows {direction, hook, reader, auroc, random_mean, random_p95, n}; random_p95 is
        0.5 + the 95th percentile of |AUROC - 0.5| over random directions.
    shifts: rows {direction, hook, model, fraction, cosine}.
    """

    kind: ClassVar[str] = "directions"
    title: ClassVar[str] = "Trait directions: detecting data by projection, and who moved along the teacher's direction"
    directions: dict[str, dict[str, Tensor]]
    detection: list[dict[str, Any]] = field(default_factory=list)
    shifts: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def summary_rows(self) -> list[SummaryRow]:
        rows = []
        for r in self.detection:
            rows.append(SummaryRow(r["hook"], "projection detection", f"projection AUROC on {r['direction']}, read by {r['reader']}",
                                   r["auroc"], sd=None, control="random directions p95", control_value=r["random_p95"]))
        for r in self.shifts:
            if r["model"] in ("control", "teacher"):
                continue
            ctrl = next((c for c in self.shifts if c["model"] == "control" and c["hook"] == r["hook"]
                         and c["direction"] == r["direction"]), None)
            rows.append(SummaryRow(r["hook"], "shift", f"{r['model']}'s shift along teacher's, fraction", r["fraction"],
                                   sd=None, control="control student", control_value=ctrl["fraction"] if ctrl else None,
                                   details={"cosine": r["cosine"]}))
        return rows

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        figs = {}
        if self.detection:
            fig = go.Figure()
            keys = dict.fromkeys((r["direction"], r["reader"]) for r in self.detection)
            for direction, reader in keys:
                rows = [r for r in self.detection if r["direction"] == direction and r["reader"] == reader]
                fig.add_trace(go.Scatter(x=[r["hook"] for r in rows], y=[r["auroc"] for r in rows], mode="lines+markers",
                                         name=f"{direction} (read by {reader})"))
                fig.add_trace(go.Scatter(x=[r["hook"] for r in rows], y=[r["random_p95"] for r in rows], mode="lines",
                                         line={"dash": "dash"}, name=f"random directions 95th pct ({reader})"))
            fig.update_layout(title="Screening distillation data by projection onto trait directions<br>"
                              "<sub>AUROC teacher-written vs base-written sequences; dashed: random directions</sub>",
                              xaxis_title="hook", yaxis_title="AUROC", template="plotly_white")
            figs["detection"] = fig
        if self.shifts:
            fig = go.Figure()
            for direction in dict.fromkeys(r["direction"] for r in self.shifts):
                for model in dict.fromkeys(r["model"] for r in self.shifts):
                    rows = [r for r in self.shifts if r["direction"] == direction and r["model"] == model]
                    fig.add_trace(go.Bar(x=[r["hook"] for r in rows], y=[r["fraction"] for r in rows],
                                         name=f"{model} ({direction})"))
            fig.update_layout(title="Shift of each model's activations along the teacher's shift (1 = as far as the teacher)",
                              xaxis_title="hook", yaxis_title="fraction of the teacher's shift", barmode="group",
                              template="plotly_white")
            figs["shift"] = fig
        return figs


# --------------------------------------------------------------------------- the analysis


@dataclass
class DirectionsConfig:
    """What trait directions read and how (CPU-friendly defaults)."""

    hooks: list[str] | None = None  # hooks read (None: hook_embed and per layer attn_out, resid_mid, mlp_out, resid_post)
    positions: str = "continuation"  # how distillation rows are pooled for detection (continuation, all, last)
    apply_to: tuple[str, ...] = ("student", "control", "other")  # models whose shift along the teacher's is measured
    batch_size: int = 256  # rows per forward pass
    random_directions: int = 64  # random unit directions per hook: the detection control
    seed: int = 0  # random directions
    progress: bool = False
    command: str = "trait_directions(lineage, inputs, prompts, config)"  # recorded in the result


def trait_directions(lineage: Lineage, inputs: Inputs, prompts: ContrastPrompts,
                     config: DirectionsConfig | None = None, activations: ActivationReader | None = None
                     ) -> DirectionResult:
    """Trait directions from contrastive prompts (target vs other answers, read by the teacher;
    teacher minus base on the same prompts), detection of teacher-written rows by projection
    beside random directions, and how far the student and its controls moved along the
    teacher's shift. `activations` (shared with other analyses) reads each model once."""
    expect_type(prompts, ContrastPrompts, "trait_directions' prompts", "Pass trait_directions(lineage, inputs, prompts, "
                "config) with prompts = contrast_prompts(trait) (or read_contrast_prompts(path)).")
    cfg = with_hooks(config or DirectionsConfig(), lineage)
    expect_type(cfg, DirectionsConfig, "trait_directions' config")
    reader = activations if activations is not None else ActivationReader()
    directions: dict[str, dict[str, torch.Tensor]] = {}
    source = "teacher" if readable(lineage, "teacher") else "base"  # a prompted teacher reads like a model
    acts = reader.last_token(lineage, source, prompts, cfg)
    pos = {h: a[prompts.labels] for h, a in acts.items()}
    neg = {h: a[~prompts.labels] for h, a in acts.items()}
    if prompts.labels.any() and (~prompts.labels).any():
        directions[f"target_vs_other ({source})"] = mean_difference(pos, neg)
    shifts = []
    if readable(lineage, "teacher") and "base" in lineage:
        q = prompts.questions()
        per_model = {m: reader.last_token(lineage, m, q, cfg) for m in ("base", "teacher", *cfg.apply_to)
                     if readable(lineage, m)}
        directions["teacher_minus_base"] = mean_difference(per_model["teacher"], per_model["base"])
        for m in [m for m in ("teacher", *cfg.apply_to) if m in per_model]:
            for h, v in shift_along(per_model[m], per_model["base"], per_model["teacher"]).items():
                shifts.append(dict(direction="teacher_minus_base", hook=h, model=m, **v))
    labels = torch.tensor([s == "teacher" for s in inputs.sources])
    detection = []
    for screen_reader in [m for m in ("base", "teacher") if readable(lineage, m)]:
        feats = reader.pooled(lineage, screen_reader, inputs, cfg)
        rand = random_direction_aurocs(feats, labels, cfg.random_directions, cfg.seed)
        for name, by_hook in directions.items():
            for h, a in projection_auroc(feats, by_hook, labels).items():
                dev = (rand[h] - 0.5).abs()
                detection.append(dict(direction=name, hook=h, reader=screen_reader, auroc=a, random_mean=float(rand[h].mean()),
                                      random_p95=0.5 + float(torch.quantile(dev, 0.95)), n=len(labels)))
    return DirectionResult(directions=directions, detection=detection, shifts=shifts, command=cfg.command,
                           config={"positions": cfg.positions, "n_prompts": len(prompts.labels),
                                   "random_directions": cfg.random_directions})
