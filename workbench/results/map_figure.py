"""The report's map: layers x components, which analyses point at each place and how firmly.

One heatmap cell per place (`results/places.py`) that some row names: its colour is the number of
sections with a starred row there (a single-seed point value counts a half), its text the count
and how many of them are causal, and its hover every section's strongest row there, value beside
its control and its mark. Rows about no place (whole model, data) are left off (the verdict names
them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.results.places import COMPONENTS, Place
from workbench.results.stars import MARK, Star, number
from workbench.results.verdict import Evidence, evidence_of


def map_cells(sections: Sequence[dict[str, Any]]) -> dict[Place, dict[str, Evidence]]:
    """Per place, per section: the section's strongest row there (furthest above its control)."""
    cells: dict[Place, dict[str, Evidence]] = {}
    for e in evidence_of(sections):
        if e.place is None:
            continue
        here = cells.setdefault(e.place, {})
        if e.section not in here or e.margin > here[e.section].margin:
            here[e.section] = e
    return cells


def _score(evs: dict[str, Evidence]) -> tuple[float, int, int]:
    """(strength, sections pointing here, causal ones among them): a star 1, a single-seed clear 0.5."""
    pointing = [e for e in evs.values() if e.star in (Star.CLEARS, Star.SINGLE)]
    score = sum(1.0 if e.star is Star.CLEARS else 0.5 for e in pointing)
    return score, len(pointing), sum(e.causal for e in pointing)


def _hover(place: Place, evs: dict[str, Evidence]) -> str:
    lines = [f"<b>{place.label}</b>"]
    for e in sorted(evs.values(), key=lambda e: (e.star is not Star.CLEARS, e.star is not Star.SINGLE, e.section)):
        v, c = number(e.row.get("value")), number(e.row.get("control_value"))
        value = f"{v:.3f}" if v is not None else "n/a"
        ctrl = f" vs {e.row.get('control', 'control')} {c:.3f}" if c is not None else " (no control)"
        kind = "causal" if e.causal else "correlational"
        lines.append(f"{MARK[e.star] or '·'} {e.section} ({kind}): {e.row.get('where')} {value}{ctrl}")
    return "<br>".join(lines)


def map_figure(sections: Sequence[dict[str, Any]], seeds_phrase: str = "") -> Any | None:
    """The map as a plotly heatmap (None where no row names a place)."""
    import plotly.graph_objects as go

    cells = map_cells(sections)
    if not cells:
        return None
    rows = sorted({p.layer for p in cells})
    row_label = {p.layer: p.row for p in cells}
    cols = [c for c in COMPONENTS if any(p.component == c for p in cells)]
    z: list[list[float | None]] = [[None] * len(cols) for _ in rows]
    text = [[""] * len(cols) for _ in rows]
    hover = [[""] * len(cols) for _ in rows]
    for p, evs in cells.items():
        i, j = rows.index(p.layer), cols.index(p.component)
        score, n, n_causal = _score(evs)
        z[i][j] = score
        text[i][j] = f"{n} of {len(evs)}" + (f"<br>{n_causal} causal" if n_causal else "")
        hover[i][j] = _hover(p, evs)
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=[row_label[r] for r in rows], text=text, texttemplate="%{text}", customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", colorscale="Greens", zmin=0, xgap=3, ygap=3,
        colorbar={"title": "sections<br>clearing"}))
    fig.update_layout(
        title="Where the analyses point: sections whose row here clears its control (of those with a row here)"
              f"<br><sub>colour: starred sections (a single-seed point value counts ½); hover: each section's "
              f"strongest row vs its control; {seeds_phrase}</sub>",
        xaxis_title="component", yaxis_title="depth", yaxis_autorange="reversed", template="plotly_white",
        height=120 + len(rows) * max(24, min(70, 900 // len(rows))), margin={"t": 90})
    if len(rows) > 16:  # too small to read in the cells: the hover keeps it
        fig.update_traces(texttemplate=None)
    return fig
