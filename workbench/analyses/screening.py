"""The screening defense: drop the teacher rows most aligned with the trait gradient (no teacher
needed to score them), retrain the student (with a `retrain` the source supplies: the organism's
own recipe and seed), and compare the transfer left against dropping a random fraction of the
same size.

With hard labels the signal is in the text, so screening can remove it; with soft labels it
rides in the teacher's logits at every position, so screening rows is not expected to help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from workbench.analyses.alignment import screen_rows
from workbench.analyses.trait_gradient import trait_gradient
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.per_example import alignment_scores
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.results.seeds import over_seeds
from workbench.trait import LogitsFn, Trait, check_trait


@dataclass
class ScreeningRow:
    """Transfer left after one screening choice on one seed."""

    seed: int
    fraction: float
    dropped: str  # "top_g_trait" or "random"
    n_kept: int
    p_target: float  # P(target) of the retrained student, mean over templates


Retrain = Callable[[Inputs], LogitsFn]
"""The rows kept -> a student retrained on them (from the same start, with the same recipe). One
with a `many` attribute (a list of kept rows -> their students, in order) gets every retrain of a
screening at once, so it may run them side by side (the organism's runs them in worker processes)."""


@dataclass
class ScreeningConfig:
    """What `run_screening` drops and how it scores rows."""

    fractions: tuple[float, ...] = (0.1, 0.25)  # fractions of the rows dropped (top by g_trait, and random)
    loss: str = "hard"  # the loss the student trains with: "hard" or "soft" (the soft one needs a teacher)
    channel_ids: tuple[int, ...] | None = None  # token ids both losses renormalise over (None: full vocabulary)
    base: str = "base"  # the model g_trait and the scores are taken at
    teacher: str = "teacher"  # the soft loss's targets
    seed: int = 0  # the random drop (and the seed recorded in the rows)
    batch_size: int = 256  # rows per jvp batch
    progress: bool = False


def run_screening(lineage: Lineage, inputs: Inputs, trait: Trait, retrain: Retrain,
                  config: ScreeningConfig | None = None) -> list[ScreeningRow]:
    """For each fraction: retrain on `inputs` minus the top rows by alignment with g_trait (the
    trait gradient at the base), and minus a random fraction of the same size; score each
    retrained student's P(target)."""
    config = config or ScreeningConfig()
    if config.loss not in ("hard", "soft"):
        raise ConfigError(f"ScreeningConfig.loss={config.loss!r}; use 'hard' or 'soft' (the loss the student trains with).")
    check_trait(trait, lineage.d_vocab, "run_screening's trait", single_token=False)
    if not callable(retrain):
        raise ConfigError(f"retrain must be a callable (kept Inputs -> a retrained student); got {type(retrain).__name__}.")
    model = AlignmentModel(lineage, config.base)
    ids = torch.tensor(config.channel_ids) if config.channel_ids is not None else None
    if config.loss == "hard":
        objective = Objective("hard", ids=ids)
    else:
        objective = Objective("soft", ids=ids, teacher=model.params_of(config.teacher))
    g_trait = trait_gradient(model, trait)
    scores = alignment_scores(model, inputs, g_trait, objective, batch_size=config.batch_size,
                              progress=config.progress).total
    plan = []
    for fraction in config.fractions:
        kept_top, kept_random = screen_rows(scores, fraction, seed=config.seed)
        plan += [(fraction, "top_g_trait", kept_top), (fraction, "random", kept_random)]
    kept_inputs = [inputs.select(kept) for _, _, kept in plan]
    many = getattr(retrain, "many", None)
    students = many(kept_inputs) if callable(many) else [retrain(k) for k in kept_inputs]
    return [ScreeningRow(config.seed, fraction, dropped, len(kept), trait.p_target(student))
            for (fraction, dropped, kept), student in zip(plan, students)]


@dataclass
class ScreeningResult(ResultBase):
    """The screening table of one seed: P(target) of the student retrained after dropping the top
    fraction of teacher rows by g_trait alignment, beside dropping a random fraction of the same size."""

    kind: ClassVar[str] = "screening"
    title: ClassVar[str] = "Screening defense: drop the rows most aligned with the trait gradient, retrain"
    rows: list[ScreeningRow]
    reference: dict[str, Any]  # the seed's full-data student, base and control P(target); rows; mode
    command: str = "workbench.run_screening(lineage, inputs, trait, retrain, config)"
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, fraction: float, dropped: str) -> ScreeningRow:
        """The retrain for one drop fraction and choice ("top_g_trait" or "random")."""
        return next(r for r in self.rows if r.fraction == fraction and r.dropped == dropped)

    def removed(self, row: ScreeningRow) -> float:
        """Transfer removed by this drop: the full-data student's P(target) minus the retrained one's."""
        return float(self.reference["student"]) - row.p_target

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        fig = go.Figure()
        for dropped, colour in (("top_g_trait", "#d62728"), ("random", "#999999")):
            rows = [r for r in self.rows if r.dropped == dropped]
            fig.add_trace(go.Bar(x=[f"drop {r.fraction:.0%}" for r in rows], y=[r.p_target for r in rows],
                                 name="top by g_trait alignment" if dropped == "top_g_trait" else "random rows",
                                 marker_color=colour))
        for name, dash in (("student", "solid"), ("control", "dot"), ("base", "dash")):
            # named in the legend, not annotated on the line: the three references often lie close together
            value = float(self.reference[name])
            fig.add_hline(y=value, line_dash=dash, line_color="#444")
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"dash": dash, "color": "#444"},
                                     name=f"{name}, full data ({value:.3f})"))
        fig.update_layout(barmode="group", yaxis_title="P(target) of the retrained student",
                          title=f"Screening by trait-gradient alignment ({self.reference.get('mode')} labels, "
                                f"{self.reference.get('n_rows')} teacher rows)")
        return {"bars": fig}

    def summary_rows(self) -> list[SummaryRow]:
        out = []
        for fraction in sorted({r.fraction for r in self.rows}):
            top, rnd = self.row(fraction, "top_g_trait"), self.row(fraction, "random")
            out.append(SummaryRow("student (retrained)", f"drop {fraction:.0%}",
                                  "P(target) removed: top rows by g_trait dropped", self.removed(top),
                                  control="random drop, same size", control_value=self.removed(rnd),
                                  clears=self.removed(top) > self.removed(rnd),
                                  details={"p_top": top.p_target, "p_random": rnd.p_target, "n_kept": top.n_kept}))
        return out


def screening_over_seeds(results: list[ScreeningResult]) -> list[dict[str, Any]]:
    """Per drop fraction: P(target) after dropping the top rows and after a random drop, per seed,
    and their difference (top minus random: < 0 when the screen removes more transfer than chance)
    as mean and sd over seeds (the seed is the unit)."""
    out = []
    for fraction in sorted({r.fraction for res in results for r in res.rows}):
        top = [res.row(fraction, "top_g_trait").p_target for res in results]
        rnd = [res.row(fraction, "random").p_target for res in results]
        diff = over_seeds((np.asarray(top) - np.asarray(rnd)).tolist())
        out.append({"fraction": fraction, "top_g_trait": top, "random": rnd, "difference": diff.per_seed,
                    "difference_mean": diff.mean, "difference_sd": diff.sd_or(0.0),
                    "student_full_data": [float(res.reference["student"]) for res in results],
                    "control_full_data": [float(res.reference["control"]) for res in results]})
    return out
