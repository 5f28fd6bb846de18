"""The steering-vector result: per (hook, vector) sufficiency and necessity beside their controls,
its figures, and the table over seeds (the seed is the unit: `over_seeds`).

A row clears its control when its value is above the stronger of the control student's vector
(a fine-tune toward no target, used the same way) and the random band's max (random directions of
v_student's norm). The control vector's own rows are judged against the random band only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.results.seeds import over_seeds

SUFFICIENCY = "recovered fraction of the student's log-odds gain (base + alpha v)"
NECESSITY = "share of the student's log-odds gain lost (v's direction ablated in the student)"


def alpha_key(alpha: float) -> str:
    """A scale as a JSON key: 1.0 -> "1", 0.5 -> "0.5"."""
    return f"{float(alpha):g}"


def _defined(xs: Sequence[float | None]) -> list[float]:
    return [x for x in xs if x is not None and not math.isnan(x)]


def band(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean, sd, min and max of the random band's defined values (None when none is)."""
    xs = _defined(values)
    s = over_seeds(xs)
    return {"mean": s.mean, "sd": s.sd, "min": min(xs) if xs else None, "max": max(xs) if xs else None}


def _clears(value: float | None, bar: float | None) -> bool | None:
    return None if value is None or bar is None else bool(value > bar)


@dataclass
class SteeringResult(ResultBase):
    """Sufficiency and necessity of each model's mean shift per hook (see `workbench.analyses.steering`).

    hooks, alphas: where and with which scales v was added.
    log_odds: role -> `Trait.log_odds` of the unedited model (base, student, teacher, control).
    sufficiency: hook -> vector -> alpha key -> recovered fraction (None: no student gain).
    random_sufficiency: hook -> alpha key -> one fraction per random direction.
    necessity: hook -> vector -> share of the gain lost; random_necessity: hook -> per random direction.
    norms: hook -> vector -> |v|; vectors: hook -> vector -> v itself.
    """

    kind: ClassVar[str] = "steering"
    title: ClassVar[str] = "One steering vector: sufficiency and necessity of the mean activation shift"
    hooks: list[str]
    alphas: list[float]
    log_odds: dict[str, float]
    sufficiency: dict[str, dict[str, dict[str, float | None]]]
    random_sufficiency: dict[str, dict[str, list[float | None]]]
    necessity: dict[str, dict[str, float | None]]
    random_necessity: dict[str, list[float | None]]
    norms: dict[str, dict[str, float]]
    vectors: dict[str, dict[str, Tensor]]
    config: dict[str, Any] = field(default_factory=dict)
    command: str = "workbench.steering(...)"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """lo(student) - lo(base): the gain every fraction is of."""
        return self.log_odds["student"] - self.log_odds["base"]

    def _rows(self, hook: str, group: str, measure: str, values: dict[str, float | None],
              random: Sequence[float | None]) -> list[SummaryRow]:
        rb = band(random)
        ctrl = values.get("control")
        rows = []
        for vec, value in values.items():
            if vec == "control":
                name, bar = "random max", rb["max"]
            else:
                name = "max(control student, random max)" if "control" in values else "random max"
                bar = max(_defined([ctrl, rb["max"]]), default=None) if "control" in values else rb["max"]
                if "control" in values and (ctrl is None or rb["max"] is None):
                    bar = None
            rows.append(SummaryRow(hook, group, measure, value, control=name, control_value=bar,
                                   clears=_clears(value, bar),
                                   details={"vector": vec, "norm": self.norms[hook].get(vec), "random_mean": rb["mean"],
                                            "random_max": rb["max"]}))
        rows.append(SummaryRow(hook, group, measure, rb["mean"], sd=rb["sd"],
                               details={"vector": "random", "random_min": rb["min"], "random_max": rb["max"],
                                        "n_random": len(random)}))
        return rows

    def summary_rows(self) -> list[SummaryRow]:
        rows = []
        for h in self.hooks:
            for a in self.alphas:
                k = alpha_key(a)
                rows += self._rows(h, f"sufficiency alpha={k}", SUFFICIENCY,
                                   {v: by_a[k] for v, by_a in self.sufficiency[h].items()}, self.random_sufficiency[h][k])
            rows += self._rows(h, "necessity", NECESSITY, self.necessity[h], self.random_necessity[h])
        return rows

    def figures(self) -> dict[str, Any]:
        figs = {f"sufficiency_alpha{alpha_key(a).replace('.', '_')}":
                steering_figure(self.hooks, {v: [self.sufficiency[h][v][alpha_key(a)] for h in self.hooks]
                                             for v in self.sufficiency[self.hooks[0]]},
                                [self.random_sufficiency[h][alpha_key(a)] for h in self.hooks],
                                f"Sufficiency: base + {alpha_key(a)} v, fraction of the student's log-odds gain recovered",
                                "recovered fraction")
                for a in self.alphas}
        figs["necessity"] = steering_figure(
            self.hooks, {v: [self.necessity[h][v] for h in self.hooks] for v in self.necessity[self.hooks[0]]},
            [self.random_necessity[h] for h in self.hooks],
            "Necessity: v's direction ablated in the student, share of the log-odds gain lost", "share lost")
        return figs

    def table(self, alpha: float = 1.0) -> str:
        """Per hook: recovered fraction (alpha) per vector, the random band, and the necessity share."""
        return format_table([self], alpha)


def steering_figure(hooks: Sequence[str], lines: dict[str, Sequence[float | None]],
                    random: Sequence[Sequence[float | None]], title: str, y_title: str) -> Any:
    """One line per vector over hooks, the random band (min to max) shaded, its mean dashed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    bands = [band(r) for r in random]
    x = list(hooks)
    fig.add_trace(go.Scatter(x=x + x[::-1], y=[b["max"] for b in bands] + [b["min"] for b in bands][::-1],
                             fill="toself", fillcolor="rgba(128,128,128,0.25)", line={"width": 0},
                             name="random band (min-max)"))
    fig.add_trace(go.Scatter(x=x, y=[b["mean"] for b in bands], mode="lines", line={"dash": "dash", "color": "gray"},
                             name="random mean"))
    for name, ys in lines.items():
        fig.add_trace(go.Scatter(x=x, y=list(ys), mode="lines+markers", name=f"v_{name}"))
    fig.update_layout(title=title, xaxis_title="hook", yaxis_title=y_title, template="plotly_white")
    return fig


def _cell(values: Sequence[float | None]) -> str:
    s = over_seeds(list(values))
    if s.mean is None:
        return "n/a"
    return f"{s.mean:+.2f}" + (f" ± {s.sd:.2f}" if s.sd is not None else "")


def format_table(results: Sequence[SteeringResult], alpha: float = 1.0) -> str:
    """Mean ± sd over seeds (one result per seed) per hook: sufficiency at `alpha` of each vector,
    the random band's mean and max, and the necessity share of v_student (random band's max beside it)."""
    k = alpha_key(alpha)
    first = results[0]
    vecs = list(first.sufficiency[first.hooks[0]])
    head = ["hook", *[f"suff v_{v}" for v in vecs], "suff rand mean", "suff rand max", *[f"nec v_{v}" for v in vecs],
            "nec rand max"]
    lines = [f"one steering vector, alpha={k}, {len(results)} seed(s), mean ± sd over seeds "
             f"(gain lo(student)-lo(base): {_cell([r.gain for r in results])})", " | ".join(head)]
    for h in first.hooks:
        cells = [h]
        cells += [_cell([r.sufficiency[h][v][k] for r in results]) for v in vecs]
        bands = [band(r.random_sufficiency[h][k]) for r in results]
        cells += [_cell([b["mean"] for b in bands]), _cell([b["max"] for b in bands])]
        cells += [_cell([r.necessity[h][v] for r in results]) for v in vecs]
        cells.append(_cell([band(r.random_necessity[h])["max"] for r in results]))
        lines.append(" | ".join(cells))
    return "\n".join(lines)
