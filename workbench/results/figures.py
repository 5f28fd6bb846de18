"""Figures: one naming convention and one writer.

`figures()` of a result returns snake_case names without its kind (`"bars"`, `"alignment"`); a
writer prefixes the kind or section id: `write_result_figures(result, dir)` writes
`<dir>/<kind>_<name>.html`, and report.py `<out>/<section id>_<name>.html`. Every file is
standalone HTML sharing one `plotly.min.js` beside it (offline, and small).

The shared figure helpers live here too: `line_figure` (layer on x, one line per model with its
interval shaded) and `layer_component_grid` (per-group values as a layer x component heatmap grid).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.core.io import atomic_write_text


def figure_stem(prefix: str, name: str) -> str:
    """The file stem of a figure: `<prefix>_<name>` (prefix: a result's kind or a report section id)."""
    return f"{prefix}_{name}" if prefix else name


def add_title_note(fig: Any, note: str) -> Any:
    """Put `note` on a line of its own under the figure's title (small type), with room above the
    plot for every title line, so a long title never runs into its subtitle or the plot."""
    title = fig.layout.title.text or ""
    text = f"{title}<br><sub>{note}</sub>" if title else f"<sub>{note}</sub>"
    lines = text.count("<br>") + 1
    top = fig.layout.margin.t
    fig.update_layout(title_text=text, margin_t=max(top if top is not None else 0, 40 + 22 * lines))
    return fig


def write_figures(figures: Mapping[str, Any], directory: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """Write each plotly figure as `<dir>/<prefix>_<name>.html` (`<name>.html` without a prefix),
    offline, sharing one plotly.min.js. Returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        path = directory / f"{figure_stem(prefix, name)}.html"
        atomic_write_text(path, fig.to_html(include_plotlyjs="directory", full_html=True))
        paths[name] = path
    if paths and not (directory / "plotly.min.js").exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(directory / "plotly.min.js", get_plotlyjs())
    return paths


def write_result_figures(result: Any, directory: str | os.PathLike) -> dict[str, Path]:
    """Write a result's figures as `<dir>/<kind>_<name>.html` (see the module docstring)."""
    return write_figures(result.figures(), directory, prefix=result.kind)


def line_figure(x: Sequence[str], lines: dict[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None]],
                title: str, y_title: str, null_band: float | None = None) -> Any:
    """Layer on x, one line per model, its interval shaded."""
    import plotly.graph_objects as go

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    fig = go.Figure()
    if null_band is not None:
        fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=[null_band] * len(x) + [-null_band] * len(x),
                                 fill="toself", fillcolor="rgba(0,0,0,0.07)", line=dict(width=0), hoverinfo="skip",
                                 name="±2/√d (random directions)"))
    for k, (name, (y, lo, hi)) in enumerate(lines.items()):
        color = colors[k % len(colors)]
        if lo is not None and hi is not None:
            rgba = "rgba({},{},{},0.18)".format(*(int(color[i:i + 2], 16) for i in (1, 3, 5)))
            fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo)[::-1], fill="toself",
                                     fillcolor=rgba, line=dict(width=0), hoverinfo="skip", showlegend=False,
                                     legendgroup=name))
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name, legendgroup=name,
                                 line=dict(color=color)))
    fig.update_layout(title=title, xaxis_title="layer (hook, in depth order)", yaxis_title=y_title)
    return fig


def layer_component_grid(
    rows: list[dict[str, Any]], value: str = "value"
) -> tuple[list[str], list[str], list[list[float | None]], list[list[str]]]:
    """Arrange per-group values (dicts with group, layer, component, `value`) into a grid with
    one row per layer (embeddings first, the final norm and unembedding last) and one column
    per component; missing cells are None. Returns (row labels, column labels, z, hover text)."""
    def row_of(r: dict[str, Any]) -> str:
        if r["layer"] is not None:
            return f"layer {r['layer']}"
        return "embed" if r["component"] in ("embed", "pos_embed") else "final"

    ylabels = list(dict.fromkeys(row_of(r) for r in rows))
    xlabels = list(dict.fromkeys(r["component"] for r in rows))
    z: list[list[float | None]] = [[None] * len(xlabels) for _ in ylabels]
    text = [[""] * len(xlabels) for _ in ylabels]
    for r in rows:
        i, j = ylabels.index(row_of(r)), xlabels.index(r["component"])
        z[i][j] = r[value]
        text[i][j] = r["hover"] if "hover" in r else r["group"]
    return ylabels, xlabels, z, text
