"""Figures: `<kind>_<name>.html`, offline, one plotly.min.js; shared helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import plotly.graph_objects as go

from workbench.results.figures import (
    figure_stem,
    layer_component_grid,
    line_figure,
    write_figures,
    write_result_figures,
)


@dataclass
class WithFigures:
    kind: ClassVar[str] = "weights"
    command: str = ""

    def figures(self):
        return {"alignment_heatmap": go.Figure(go.Bar(x=["a"], y=[1.0]))}


def test_result_figures_are_prefixed_with_the_kind_and_offline(tmp_path):
    paths = write_result_figures(WithFigures(), tmp_path)
    assert paths["alignment_heatmap"].name == "weights_alignment_heatmap.html"
    html = paths["alignment_heatmap"].read_text()
    assert 'src="plotly.min.js"' in html and (tmp_path / "plotly.min.js").is_file()
    assert write_figures({"x": go.Figure()}, tmp_path)["x"].name == "x.html" and figure_stem("", "x") == "x"


def test_layer_component_grid_orders_embeddings_layers_and_final():
    rows = [{"group": "embed", "layer": None, "component": "embed", "value": 1.0},
            {"group": "blocks.0.attn", "layer": 0, "component": "attn", "value": 2.0},
            {"group": "unembed", "layer": None, "component": "unembed", "value": 3.0}]
    y, x, z, text = layer_component_grid(rows)
    assert y == ["embed", "layer 0", "final"] and x == ["embed", "attn", "unembed"]
    assert z[1] == [None, 2.0, None] and text[2][2] == "unembed"


def test_line_figure_draws_the_null_band_and_one_line_per_model():
    fig = line_figure(["L0", "L1"], {"a": ([0.1, 0.2], [0.0, 0.1], [0.2, 0.3]), "b": ([0.3, 0.4], None, None)},
                      "t", "y", null_band=0.1)
    assert [t.name for t in fig.data if t.showlegend is not False] == ["±2/√d (random directions)", "a", "b"]
