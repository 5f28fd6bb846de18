"""Figures of the patching results: per-group bars and a layer x component heatmap for delta
patching; per-hook bars and hook x position heatmaps for activation patching."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.analyses.patching.rules import DIRECTIONS
from workbench.results.figures import layer_component_grid

if TYPE_CHECKING:
    from workbench.analyses.patching.activation import ActivationPatchingResult
    from workbench.analyses.patching.delta import DeltaPatchingResult


def _metric_label(defined: bool) -> tuple[str, str]:
    return ("recovered", "recovered fraction") if defined else ("gain", "log-odds gain over base (recovered undefined)")


def delta_bars(result: DeltaPatchingResult) -> Any:
    """Per group: the gain from the student's delta alone, the loss from removing it, and the controls."""
    import plotly.graph_objects as go

    groups = result.table("group")
    x = [r["name"] for r in groups]
    lo = result.log_odds
    s_gain = lo["student"] - lo["base"]
    fig = go.Figure()
    fig.add_bar(name=f"base + Δ{result.config.student} on group", x=x, y=[r["gain"] for r in groups])
    fig.add_bar(name=f"{result.config.student} − its Δ on group (loss)", x=x,
                y=[lo["student"] - r["log_odds"] for r in result.table("leave_one_out")])
    if result.config.control:
        fig.add_bar(name=f"base + Δ{result.config.control} on group", x=x, y=[r["control_gain"] for r in groups])
    if result.config.random_control:
        fig.add_bar(name="base + norm-matched random Δ", x=x, y=[r["random_gain"] for r in groups])
    fig.add_hline(y=s_gain, line_dash="dash", annotation_text=f"{result.config.student}: {s_gain:+.2f}")
    note = "" if result.defined else " (student effect not clear: recovered fractions undefined)"
    fig.update_layout(title=f"Delta patching, log-odds of P({result.target}) vs base{note}", barmode="group",
                      yaxis_title="Δ log-odds (nats)", xaxis_tickangle=-45)
    return fig


def delta_heatmap(result: DeltaPatchingResult) -> Any:
    """Layer x component: recovered fraction of each group alone (gain when undefined)."""
    import plotly.graph_objects as go

    metric, label = _metric_label(result.defined)
    cells = [{**r, "value": r[metric], "hover": f"{r['name']}<br>gain {r['gain']:+.3f}<br>control {r['control_gain']}"}
             for r in result.table("group")]
    y, x, z, text = layer_component_grid(cells)
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, text=text, hoverinfo="text", colorscale="RdBu", reversescale=True,
                               zmid=0, colorbar={"title": metric}))
    fig.update_layout(title=f"Delta patching per group: {label}", yaxis={"autorange": "reversed"})
    return fig


def activation_heatmap(result: ActivationPatchingResult, direction: str) -> Any:
    """Hook x position (offset before the answer position) for one direction."""
    import plotly.graph_objects as go

    metric, label = _metric_label(result.defined)
    rows = [r for r in result.rows if r["direction"] == direction and r["position"] != "all"]
    pos = sorted({r["position"] for r in rows})
    z = [[next(r[metric] for r in rows if r["hook"] == h and r["position"] == p) for p in pos] for h in result.hooks]
    fig = go.Figure(go.Heatmap(z=z, x=[f"-{p}" if p else "answer" for p in pos], y=result.hooks, colorscale="Viridis",
                               colorbar={"title": metric}))
    fig.update_layout(title=f"Activation patching {direction}: {label}", yaxis={"autorange": "reversed"},
                      xaxis_title="position (offset from the answer position)")
    return fig


def activation_bars(result: ActivationPatchingResult) -> Any:
    """Per hook over all positions: gain in every direction."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for direction in DIRECTIONS:
        rows = [r for r in result.rows if r["direction"] == direction and r["position"] == "all"]
        if rows:
            fig.add_bar(name=direction, x=[r["hook"] for r in rows], y=[r["gain"] for r in rows])
    s_gain = result.log_odds["student"] - result.log_odds["base"]
    fig.add_hline(y=s_gain, line_dash="dash", annotation_text=f"student: {s_gain:+.2f}")
    fig.update_layout(title=f"Activation patching, all positions: log-odds of P({result.target}) vs base",
                      barmode="group", yaxis_title="Δ log-odds (nats)", xaxis_tickangle=-45)
    return fig
