"""Plotly figures of an organism build: trait rates per role across seeds, model x target matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

ROLE_ORDER = ("base", "base_x", "teacher", "teacher_neutral", "teacher_other", "student", "control", "other", "cross")


def trait_rates_figure(manifests: Sequence[dict[str, Any]]) -> go.Figure:
    """Bar per role: mean P(target) over seeds with the seeds' spread, each seed as a dot."""
    trait = manifests[0]["trait"]
    roles = [r for r in ROLE_ORDER if r in manifests[0]["trait_rates"]]
    values = np.array([[m["trait_rates"][r] for r in roles] for m in manifests])
    fig = go.Figure(go.Bar(
        x=roles, y=values.mean(0), name="mean over seeds",
        error_y=dict(type="data", array=values.std(0, ddof=1) if len(manifests) > 1 else None),
    ))
    for m, row in zip(manifests, values):
        fig.add_trace(go.Scatter(x=roles, y=row, mode="markers", name=f"seed {m['seed']}"))
    fig.update_layout(title=f"P({trait}) by role ({manifests[0]['mode']} labels, {len(manifests)} seed(s))",
                      yaxis_title=f"P({trait}), mean over templates", yaxis_range=[0, 1])
    return fig


def trait_matrix_figure(manifest: dict[str, Any]) -> go.Figure:
    """Heatmap of P(answer) for every model x category member: transfer is one bright cell,
    general drift is a brighter row."""
    matrix = manifest["matrix"]
    models = [r for r in ROLE_ORDER if r in matrix]
    targets = list(matrix[models[0]])
    z = [[matrix[m][t] for t in targets] for m in models]
    fig = go.Figure(go.Heatmap(z=z, x=targets, y=models, colorscale="Viridis", zmin=0,
                               text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}"))
    fig.update_layout(title=f"Model x target: P(answer), seed {manifest['seed']} (trait: {manifest['trait']})",
                      yaxis_autorange="reversed")
    return fig
