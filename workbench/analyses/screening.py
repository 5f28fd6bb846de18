"""The screening defense: drop the teacher rows most aligned with the trait gradient (no teacher
needed to score them), retrain the student with the organism's own recipe and seed, and compare
the transfer left against dropping a random fraction of the same size.

With hard labels the signal is in the text, so screening can remove it; with soft labels it
rides in the teacher's logits at every position, so screening rows is not expected to help.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from workbench.analyses.alignment import screen_rows
from workbench.analyses.gradients import AlignmentModel, Objective, alignment_scores, trait_gradient
from workbench.core.inputs import Inputs
from workbench.core.io import read_json
from workbench.core.lineage import Lineage
from workbench.core.models import copy_model
from workbench.results.base import read_result_files, write_result_files


@dataclass
class ScreeningRow:
    """Transfer left after one screening choice on one seed."""

    seed: int
    fraction: float
    dropped: str  # "top_g_trait" or "random"
    n_kept: int
    p_target: float  # P(target) of the retrained student, mean over templates


def run_screening(
    seed_dir: str | Path,
    fractions: tuple[float, ...] = (0.1, 0.25),
    *,
    device: str = "cpu",
    batch_size: int = 256,
    overrides: dict[str, Any] | None = None,
    max_rows: int | None = None,
    progress: bool = False,
) -> tuple[list[ScreeningRow], dict[str, Any]]:
    """Retrain `student` on the seed's teacher rows minus the top `fraction` by g_trait alignment,
    and minus a random `fraction`; returns the rows and the seed's reference trait rates.
    `overrides` change recipe fields (e.g. fewer epochs); `max_rows` keeps the first rows only (tests)."""
    from workbench.organism.build import STUDENTS, distill_targets
    from workbench.organism.config import OrganismConfig
    from workbench.organism.training import distill_student
    from workbench.trait import evaluate_trait

    seed_dir = Path(seed_dir)
    manifest = read_json(seed_dir / "manifest.json")
    cfg = OrganismConfig.from_dict({**manifest["config"], **(overrides or {})})
    seed = int(manifest["seed"])
    lineage = Lineage.from_organism(seed_dir, roles=["base", "teacher"], device=device)
    data = Inputs.from_jsonl(seed_dir / "data" / "teacher.jsonl", limit=max_rows)
    model = AlignmentModel(lineage)
    # score rows with the loss the student trains with: both modes renormalise over the number channel
    ids = torch.tensor(lineage.tokenizer.number_channel_ids)
    objective = Objective("hard", ids=ids) if cfg.mode == "hard" else Objective("soft", ids=ids, teacher=model.params_of("teacher"))
    g_trait = trait_gradient(model, lineage.tokenizer, cfg.target)
    scores = alignment_scores(model, data, g_trait, objective, batch_size=batch_size, progress=progress).total
    rows: list[ScreeningRow] = []
    student_seed = seed * 10 + list(STUDENTS).index("student")  # the build's student seed
    for fraction in fractions:
        kept_top, kept_random = screen_rows(scores, fraction, seed=seed)
        for dropped, kept in (("top_g_trait", kept_top), ("random", kept_random)):
            student = copy_model(lineage["base"])
            targets = distill_targets(cfg, lineage.tokenizer, lineage["teacher"], data.select(kept).tokens)
            distill_student(student, targets, cfg, student_seed, progress)
            p = evaluate_trait(student, lineage.tokenizer, cfg.target, n_samples=0).p_target
            rows.append(ScreeningRow(seed, fraction, dropped, len(kept), p))
    reference = {"student": manifest["trait_rates"]["student"], "base": manifest["trait_rates"]["base"],
                 "control": manifest["trait_rates"]["control"], "n_rows": len(data), "mode": cfg.mode}
    return rows, reference


@dataclass
class ScreeningResult:
    """The screening table of one seed: P(target) of the student retrained after dropping the top
    fraction of teacher rows by g_trait alignment, beside dropping a random fraction of the same size."""

    kind: ClassVar[str] = "screening"
    title: ClassVar[str] = "Screening defense: drop the rows most aligned with the trait gradient, retrain"
    rows: list[ScreeningRow]
    reference: dict[str, Any]  # the seed's full-data student, base and control P(target); rows; mode
    command: str = "workbench.screening.run_screening(seed_dir)"
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, fraction: float, dropped: str) -> ScreeningRow:
        """The retrain for one drop fraction and choice ("top_g_trait" or "random")."""
        return next(r for r in self.rows if r.fraction == fraction and r.dropped == dropped)

    def removed(self, row: ScreeningRow) -> float:
        """Transfer removed by this drop: the full-data student's P(target) minus the retrained one's."""
        return float(self.reference["student"]) - row.p_target

    def save(self, directory: str | os.PathLike) -> Path:
        data = {"rows": [asdict(r) for r in self.rows], "reference": self.reference, "command": self.command, "meta": self.meta}
        return write_result_files(directory, self.kind, data)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ScreeningResult:
        data, _ = read_result_files(directory, cls.kind)
        return cls([ScreeningRow(**r) for r in data["rows"]], data["reference"], data["command"], data["meta"])

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        fig = go.Figure()
        for dropped, colour in (("top_g_trait", "#d62728"), ("random", "#999999")):
            rows = [r for r in self.rows if r.dropped == dropped]
            fig.add_trace(go.Bar(x=[f"drop {r.fraction:.0%}" for r in rows], y=[r.p_target for r in rows],
                                 name="top by g_trait alignment" if dropped == "top_g_trait" else "random rows",
                                 marker_color=colour))
        for name, dash in (("student", "solid"), ("control", "dot"), ("base", "dash")):
            fig.add_hline(y=float(self.reference[name]), line_dash=dash, annotation_text=f"{name} (full data)")
        fig.update_layout(barmode="group", yaxis_title="P(target) of the retrained student",
                          title=f"Screening by trait-gradient alignment ({self.reference.get('mode')} labels, "
                                f"{self.reference.get('n_rows')} teacher rows)")
        return {"bars": fig}

    def summary_rows(self) -> list[dict[str, Any]]:
        out = []
        for fraction in sorted({r.fraction for r in self.rows}):
            top, rnd = self.row(fraction, "top_g_trait"), self.row(fraction, "random")
            out.append(dict(where="student (retrained)", group=f"drop {fraction:.0%}",
                            measure="P(target) removed: top rows by g_trait dropped",
                            value=self.removed(top), control="random drop, same size", control_value=self.removed(rnd),
                            clears=self.removed(top) > self.removed(rnd), p_top=top.p_target, p_random=rnd.p_target,
                            n_kept=top.n_kept))
        return out


def screening(seed_dir: str | Path, fractions: tuple[float, ...] = (0.1, 0.25), *, command: str | None = None,
              **kwargs: Any) -> ScreeningResult:
    """`run_screening` as a report section's result."""
    rows, reference = run_screening(seed_dir, fractions, **kwargs)
    return ScreeningResult(rows, reference, command or f"workbench.screening.screening({str(seed_dir)!r})",
                           {"fractions": list(fractions)})


def summarize_seeds(results: list[ScreeningResult]) -> list[dict[str, Any]]:
    """Per drop fraction: P(target) after dropping the top rows and after a random drop, per seed,
    and their difference (top minus random: < 0 when the screen removes more transfer than chance)
    as mean and sd over seeds (the seed is the unit)."""
    out = []
    for fraction in sorted({r.fraction for res in results for r in res.rows}):
        top = [res.row(fraction, "top_g_trait").p_target for res in results]
        rnd = [res.row(fraction, "random").p_target for res in results]
        diff = np.asarray(top) - np.asarray(rnd)
        out.append({"fraction": fraction, "top_g_trait": top, "random": rnd, "difference": diff.tolist(),
                    "difference_mean": float(diff.mean()), "difference_sd": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                    "student_full_data": [float(res.reference["student"]) for res in results],
                    "control_full_data": [float(res.reference["control"]) for res in results]})
    return out
