"""`AlignmentResult`: the tables of one lineage's alignment analysis (one seed), its report rows and figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow


@dataclass
class AlignmentResult(ResultBase):
    """Detection, path, per-group, per-token and first-order tables of one lineage (one seed).

    detection: rows {direction, kind ("direction", "random", "oracle", "baseline"), auroc,
        auroc_cosine, auroc_cosine_no_unembed, norm}.
    path: {"K", "auroc" (per K), "oracle", "k_reaches_oracle" (smallest K within 0.01, or None),
        "completeness_rel_error" (hard loss, per K: max_i |path_i - log-ratio_i| / max_i |log-ratio_i|)}.
    groups / group_diff / group_se: per-group mean a_{i,g} over positives minus negatives (and its
        standard error), per direction; "delta_T (path K=...)" for the path attribution.
    positions / token_diff / token_reference: per counted position, the same difference, beside
        the per-position log-likelihood ratio and mean KL(teacher || base) on positive rows.
    group_mean: per-group mean a_{i,g} over positive (teacher-written) rows, per direction: where a
        step on the teacher's data moves the model along each direction (the soft channel's view,
        where the teacher-minus-base difference is not expected to mean much).
    prediction: rows {eta, predicted, measured (per batch), relative_error, sign_agreement}.
    token_table: the written tokens whose log-likelihood ratio (teacher vs base) is largest on
        teacher rows, with their mean per-token alignment per direction; token_correlation:
        Pearson r between a_{i,t} and the per-token log-likelihood ratio over counted positions.
    scores: per-row tensors (labels, a_i per direction, oracle log-ratio, path scores).
    """

    kind: ClassVar[str] = "alignment"
    title: ClassVar[str] = "Gradient alignment: which data, tokens and parameters push toward the trait"

    command: str
    meta: dict[str, Any]
    detection: list[dict[str, Any]]
    path: dict[str, Any]
    groups: list[str]
    group_diff: dict[str, list[float]]
    group_se: dict[str, list[float]]
    positions: list[int]
    token_diff: dict[str, list[float]]
    token_reference: dict[str, list[float]]
    prediction: list[dict[str, Any]]
    group_mean: dict[str, list[float]] = field(default_factory=dict)
    token_table: list[dict[str, Any]] = field(default_factory=list)
    token_correlation: dict[str, float | None] = field(default_factory=dict)
    scores: dict[str, Tensor] = field(default_factory=dict)

    def detection_row(self, direction: str) -> dict[str, Any]:
        for row in self.detection:
            if row["direction"] == direction:
                return row
        raise KeyError(direction)

    def summary_rows(self) -> list[SummaryRow]:
        """Report rows (workbench.report's schema). Whole model: per direction, the AUROC of a_i for
        teacher- vs base-written rows beside the best random direction of equal norm (the exact
        log-ratio oracle and the bag-of-tokens classifier ride along), and the path-integrated
        teacher delta. Per parameter group: the teacher-minus-base difference of mean a_{i,g}
        (nats; path-integrated ΔT where computed, else ΔT, else g_trait; ± its standard error)
        beside the random directions' mean |difference|; the other directions ride along."""
        loss = self.meta["loss"]
        rand = [r["auroc"] for r in self.detection if r["kind"] == "random"]
        oracle = next((r["auroc"] for r in self.detection if r["kind"] == "oracle"), None)
        bag = next((r["auroc"] for r in self.detection if r["kind"] == "baseline"), None)
        control = {"control": "random directions max", "control_value": float(np.max(rand))} if rand else {}
        rows: list[SummaryRow] = []
        for r in self.detection:
            if r["kind"] != "direction":
                continue
            rows.append(SummaryRow(
                "whole model", "detection", f"AUROC of a_i along {r['direction']}", r["auroc"], **control,
                details={"direction": r["direction"], "loss": loss, "oracle": oracle, "bag_of_tokens": bag,
                         "random_mean": float(np.mean(rand)) if rand else None, "n_random": len(rand),
                         "auroc_cosine": r.get("auroc_cosine")},
            ))
        if self.path.get("K"):
            rows.append(SummaryRow(
                "whole model", "path", f"AUROC of path-integrated ΔT, K={self.path['K'][-1]}", self.path["auroc"][-1],
                **control, details={"loss": loss, "oracle": self.path.get("oracle"),
                                    "k_reaches_oracle": self.path.get("k_reaches_oracle"),
                                    "completeness_rel_error": (self.path.get("completeness_rel_error") or [None])[-1]},
            ))
        main = next((d for d in self.group_diff if d.startswith("delta_T (path")), None) or next(
            (d for d in ("delta_T", "g_trait") if d in self.group_diff), None)
        noise = self.group_diff.get("random (mean |diff|)")
        if main is not None:
            label = {"delta_T": "ΔT", "g_trait": "g_trait"}.get(main, "ΔT path")
            others = [d for d in self.group_diff if d not in (main, "random (mean |diff|)")]
            for i, g in enumerate(self.groups):
                row = SummaryRow(g, "group attribution", f"{label} a_ig, teacher - base rows, nats",
                                 self.group_diff[main][i], sd=self.group_se[main][i])
                if noise is not None:
                    row.control, row.control_value = "random mean |diff|", noise[i]
                row.details.update(direction=main, loss=loss)
                for d in others:
                    row.details[f"diff {d}"] = self.group_diff[d][i]
                rows.append(row)
        return rows

    # ---- figures

    def figures(self) -> dict[str, go.Figure]:
        return {"detection": self.detection_figure(), "groups": self.group_figure(), "tokens": self.token_figure(),
                "prediction": self.prediction_figure()}

    def detection_figure(self) -> go.Figure:
        colors = {"direction": "#1f77b4", "random": "#bbbbbb", "oracle": "#2ca02c", "baseline": "#ff7f0e"}
        rows = self.detection
        fig = go.Figure(go.Bar(
            x=[r["direction"] for r in rows], y=[r["auroc"] for r in rows],
            marker_color=[colors[r["kind"]] for r in rows], name="AUROC of a_i",
        ))
        cos = [(r["direction"], r["auroc_cosine"]) for r in rows if r.get("auroc_cosine") is not None]
        if cos:
            fig.add_trace(go.Scatter(x=[c[0] for c in cos], y=[c[1] for c in cos], mode="markers", name="AUROC of cosine"))
        fig.add_hline(y=0.5, line_dash="dot")
        fig.update_layout(title=f"Detection of teacher- vs base-written rows ({self.meta['loss']} loss; grey: random "
                                "directions, green: exact log-likelihood ratio)", yaxis_title="AUROC", yaxis_range=[0, 1])
        return fig

    def group_figure(self) -> go.Figure:
        fig = go.Figure()
        for name, diff in self.group_diff.items():
            fig.add_trace(go.Bar(x=self.groups, y=diff, name=name,
                                 error_y=dict(type="data", array=[1.96 * s for s in self.group_se[name]])))
        fig.update_layout(barmode="group", title="Per-group alignment: mean a_{i,g} over teacher rows minus base rows "
                                                 "(bars: 95% interval over rows)", yaxis_title="difference of means")
        return fig

    def token_figure(self) -> go.Figure:
        fig = go.Figure()
        for name, diff in self.token_diff.items():
            fig.add_trace(go.Scatter(x=self.positions, y=diff, mode="lines+markers", name=f"a_t: {name}"))
        for name, ref in self.token_reference.items():
            fig.add_trace(go.Scatter(x=self.positions, y=ref, mode="lines", line_dash="dash", name=name, yaxis="y2"))
        fig.update_layout(title="Per-token alignment (teacher rows minus base rows) beside where teacher and base diverge",
                          xaxis_title="position (predicts the next token)", yaxis_title="difference of mean a_{i,t}",
                          yaxis2=dict(overlaying="y", side="right", title="reference (dashed)"))
        return fig

    def prediction_figure(self) -> go.Figure:
        fig = go.Figure()
        for row in self.prediction:
            fig.add_trace(go.Scatter(x=row["predicted"], y=row["measured"], mode="markers", name=f"eta={row['eta']:g}"))
        allv = [abs(v) for r in self.prediction for v in r["predicted"] + r["measured"]] or [1.0]
        lim = max(allv)
        fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line_dash="dot", name="y = x"))
        fig.update_layout(title=f"First-order prediction of the change of log P({self.meta['target']}) after one SGD step",
                          xaxis_title="predicted: eta * mean_i a_i(g_trait)", yaxis_title="measured")
        return fig


__all__ = ["AlignmentResult"]
