"""Screening without retraining: rank the teacher's rows by alignment with the trait gradient
g_trait (taken at the base: no teacher weights needed) and write the rows a screen would keep
and drop, for a source that has no retraining recipe (e.g. Hugging Face directories; the
organism's `run_screening` retrains students on the kept rows).

Each row's score is a_i = <g_trait, -grad L_i>: to first order, how much one step on row i
raises log P(target) (with the hard loss, -grad L_i = grad log p(row i)). For each fraction f the
top f of the rows by score are dropped; the control drops a random set of the same size (the
seeded draw of `screen_rows`), and the summary puts the dropped rows' mean score beside the
random drop's, with the overlap of the two sets (expected f by chance).

Saved beside the result (`save(dir)`): `ranking.jsonl` (every row, best first, with its rank and
score) and per fraction `kept_<pct>.jsonl` / `dropped_<pct>.jsonl` (token-id rows as `Inputs.to_rows`
writes them, plus `row` = index among the ranked rows and `score`), readable back with
`Inputs.from_jsonl` to retrain on the kept rows with any recipe.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from workbench.analyses.alignment import screen_rows
from workbench.analyses.trait_gradient import trait_gradient
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs, write_jsonl
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.per_example import alignment_scores
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.trait import Trait, check_trait


@dataclass
class RankConfig:
    """What `rank_rows` scores and drops."""

    fractions: tuple[float, ...] = (0.1, 0.25)  # fractions of the rows dropped (top by g_trait, and random)
    source: str | None = "teacher"  # the rows ranked (their `source`); None: every row
    channel_ids: tuple[int, ...] | None = None  # token ids the hard loss renormalises over (None: full vocabulary)
    base: str = "base"  # the model g_trait and the scores are taken at
    seed: int = 0  # the random drop
    batch_size: int = 64  # rows per jvp batch
    progress: bool = False


def pct(fraction: float) -> str:
    """'10' for 0.1: the file-name suffix of a drop fraction."""
    return f"{fraction * 100:g}".replace(".", "p")


@dataclass
class ScreeningRanking(ResultBase):
    """The rows ranked by g_trait alignment and, per drop fraction, the dropped rows beside a random
    drop of the same size (`rank_rows`)."""

    kind: ClassVar[str] = "screening"
    title: ClassVar[str] = "Screening by trait-gradient alignment: rows ranked, kept and dropped (no retraining)"
    scores: list[float]  # a_i of each ranked row, in the rows' order
    rows: list[dict[str, Any]]  # the ranked rows as token-id JSONL rows (Inputs.to_rows), in the same order
    drops: list[dict[str, Any]]  # per fraction: dropped / random_dropped row indices, means, overlap
    command: str = "workbench.rank_rows(lineage, inputs, trait, config)"
    meta: dict[str, Any] = field(default_factory=dict)

    def order(self) -> list[int]:
        """Row indices, highest score first (ties in row order)."""
        return torch.argsort(torch.tensor(self.scores, dtype=torch.float64), descending=True, stable=True).tolist()

    def save(self, directory: str | os.PathLike) -> Path:
        """The result's JSON, then ranking.jsonl and kept_/dropped_<pct>.jsonl beside it."""
        path = super().save(directory)
        directory = Path(directory)
        ranked = [{**self.rows[i], "rank": r, "row": i, "score": self.scores[i]} for r, i in enumerate(self.order())]
        write_jsonl(directory / "ranking.jsonl", ranked)
        for drop in self.drops:
            dropped = set(drop["dropped"])
            for name, keep in (("kept", False), ("dropped", True)):
                rows = [{**self.rows[i], "row": i, "score": self.scores[i]} for i in range(len(self.rows))
                        if (i in dropped) == keep]
                write_jsonl(directory / f"{name}_{pct(drop['fraction'])}.jsonl", rows)
        return path

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        ranked = sorted(self.scores, reverse=True)
        fig = go.Figure(go.Scatter(x=list(range(1, len(ranked) + 1)), y=ranked, mode="lines", name="a_i, best first"))
        for drop in self.drops:
            fig.add_vline(x=drop["n_dropped"] + 0.5, line_dash="dot", annotation_text=f"drop {drop['fraction']:.0%}")
        fig.update_layout(xaxis_title="rank", yaxis_title="alignment with g_trait (a_i)",
                          title=f"{len(ranked)} {self.meta.get('source') or ''} rows ranked by g_trait alignment")
        return {"ranking": fig}

    def summary_rows(self) -> list[SummaryRow]:
        out = []
        for d in self.drops:
            out.append(SummaryRow(f"drop {d['fraction']:.0%}", "rows ranked by g_trait",
                                  "mean a_i of the dropped rows", d["mean_dropped"],
                                  control="random drop, same size", control_value=d["mean_random"],
                                  clears=d["mean_dropped"] - d["mean_random"] > d["band"],
                                  details={"n_dropped": d["n_dropped"], "n_kept": d["n_kept"],
                                           "overlap_with_random": d["overlap"], "overlap_by_chance": d["fraction"]}))
        return out


def rank_rows(lineage: Lineage, inputs: Inputs, trait: Trait, config: RankConfig | None = None,
              command: str | None = None) -> ScreeningRanking:
    """Score the `config.source` rows of `inputs` by alignment with g_trait at `config.base` (hard
    loss, renormalised over `channel_ids` when given) and, per fraction, the rows dropped by score
    and by a seeded random draw of the same size."""
    config = config or RankConfig()
    check_trait(trait, lineage.d_vocab, "rank_rows's trait", single_token=False)
    for f in config.fractions:
        if not 0 < f < 1:
            raise ConfigError(f"RankConfig.fractions holds {f}; drop fractions in (0, 1).")
    if config.source is not None:
        picked = [i for i, s in enumerate(inputs.sources) if s == config.source]
        if not picked:
            raise DataError(f"No rows with source {config.source!r} to rank (sources: {sorted(set(inputs.sources))}). "
                            "Pass the teacher's rows, or RankConfig(source=None) to rank every row.")
        inputs = inputs.select(picked)
    model = AlignmentModel(lineage, config.base)
    ids = torch.tensor(config.channel_ids) if config.channel_ids is not None else None
    g_trait = trait_gradient(model, trait)
    scores = alignment_scores(model, inputs, g_trait, Objective("hard", ids=ids), batch_size=config.batch_size,
                              progress=config.progress).total.double()
    n = len(scores)
    sd = float(scores.std()) if n > 1 else 0.0
    drops = []
    for fraction in config.fractions:
        kept_top, kept_random = screen_rows(scores, fraction, seed=config.seed)
        dropped = sorted(set(range(n)) - set(kept_top))
        random_dropped = sorted(set(range(n)) - set(kept_random))
        k = len(dropped)
        # the sd of a random k-subset's mean (finite population): the band the top drop must clear
        band = 2 * sd / math.sqrt(k) * math.sqrt(max(n - k, 0) / max(n - 1, 1)) if k else float("nan")
        drops.append({"fraction": fraction, "n_dropped": k, "n_kept": n - k, "dropped": dropped,
                      "random_dropped": random_dropped,
                      "mean_dropped": float(scores[dropped].mean()) if k else float("nan"),
                      "mean_random": float(scores[random_dropped].mean()) if k else float("nan"),
                      "mean_kept": float(scores[kept_top].mean()) if kept_top else float("nan"),
                      "overlap": len(set(dropped) & set(random_dropped)) / k if k else float("nan"), "band": band})
    meta = {"source": config.source, "n_rows": n, "loss": "hard", "base": config.base, "target": trait.target,
            "renormalised": config.channel_ids is not None, "seed": config.seed}
    return ScreeningRanking(scores.tolist(), inputs.to_rows(), drops,
                            command or "workbench.rank_rows(lineage, inputs, trait, config)", meta)


__all__ = ["RankConfig", "ScreeningRanking", "rank_rows"]
