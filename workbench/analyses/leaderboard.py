"""The screening leaderboard: every detector of teacher-written rows scored two ways on the same
rows, each beside the random baseline.

1. Detection: AUROC of the detector's row scores for the teacher's rows (the ones the student
   trained on) against as many rows the base wrote.
2. Defense: drop the top fraction of the teacher's rows by the detector's score, retrain the
   student on the rest (the source's recipe), and measure the transfer left (log-odds gain over
   the control student, as a fraction of the full student's), beside dropping as many rows at
   random (the "random" detector).

Random directions are scored for detection only: parameter directions of g_trait's norm, and
unit directions at the activation detectors' hook (`detectors.CONTROLS`). A detector "beats" its
rivals when its AUROC exceeds bag of tokens' and every random direction's. Each detector says
what a defender needs to run it (`detectors.NEEDS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from workbench.analyses.alignment import screen_rows
from workbench.analyses.channels import ChannelSource, Retraining, transfer_left
from workbench.analyses.activation_detectors import ACTIVATION_DETECTORS, choose_trait_hook
from workbench.analyses.detectors import NEEDS, DetectorInputs, is_direction_control, needs_of, run_detectors
from workbench.analyses.probes import auroc
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.trait import Trait, check_trait

DEFENDED = tuple(NEEDS)  # every detector is retrained against (random is the defense's baseline)


@dataclass
class LeaderboardConfig:
    """What `run_leaderboard` scores and retrains."""

    detectors: tuple[str, ...] = tuple(NEEDS)
    fractions: tuple[float, ...] = (0.1, 0.25)
    retrain: bool = True  # False: detection only (no students retrained)
    channel_ids: tuple[int, ...] | None = None
    movable_ids: tuple[int, ...] = ()
    n_random_directions: int = 3
    trait_hook: str | None = None  # where the activation detectors read (None: the hook where the base's trait
    # direction steers the base most, `choose_trait_hook`)
    trait_direction: str = "contrast"  # the activation detectors' trait direction: "contrast" (Chen et al.'s persona
    # vector) or "gradient" (the base's log P(target) gradient on a steering vector)
    folds: int = 5
    seed: int = 0
    batch_size: int = 256
    retrain_reference: bool = False  # also retrain the full student and the control on as many rows with this
    # recipe: what the drops are measured between (when the rows or recipe differ from the build's)


@dataclass
class DetectorRow:
    """One detector on one seed: its AUROC and, per drop fraction, the retrained student's P(target)."""

    seed: int
    detector: str
    needs: str
    auroc: float
    p_after_drop: dict[str, float] = field(default_factory=dict)  # "0.1" -> P(target) after dropping its top 10%


def run_leaderboard(lineage: Lineage, inputs: Inputs, base_rows: Inputs, trait: Trait, source: ChannelSource,
                    config: LeaderboardConfig | None = None, *, reference: Mapping[str, Any],
                    command: str | None = None, meta: Mapping[str, Any] | None = None) -> LeaderboardResult:
    """Score the teacher's rows `inputs` (those the student trained on) and the base's
    `base_rows` with every detector; AUROC each; with `retrain`, retrain the student on the
    teacher's rows minus each detector's top fraction. `reference` gives the full student's and
    the control student's P(target) ("student", "control"; transfer is measured between them)."""
    config = config or LeaderboardConfig()
    teacher_rows = inputs
    missing = [k for k in ("student", "control") if k not in reference]
    if missing:
        raise ConfigError(f"run_leaderboard's reference lacks {missing}: give the full student's and the control "
                          "student's P(target) (transfer left is measured between them).")
    check_trait(trait, lineage.d_vocab, "run_leaderboard's trait", single_token=False)
    for f in config.fractions:
        if not 0 < f < 1:
            raise ConfigError(f"LeaderboardConfig.fractions holds {f}; drop fractions in (0, 1).")
    if not config.movable_ids:
        raise ConfigError("LeaderboardConfig.movable_ids is empty: name the tokens rows are made of (e.g. the numbers).")
    if config.retrain and "random" not in config.detectors:
        raise ConfigError("The defense compares each drop with a random drop: keep 'random' among the detectors.")
    if len(teacher_rows) == 0 or len(base_rows) == 0:
        raise DataError(f"The leaderboard needs teacher and base rows; got {len(teacher_rows)} and {len(base_rows)}.")
    rows = _concat(teacher_rows, base_rows)
    n_t = len(teacher_rows)
    labels = torch.arange(len(rows)) < n_t
    data = DetectorInputs(rows, labels, source.supervised(rows.tokens.cpu()), config.channel_ids, tuple(config.movable_ids))
    hook = None
    if set(config.detectors) & set(ACTIVATION_DETECTORS):
        hook = choose_trait_hook(lineage, trait, hooks=None if config.trait_hook is None else [config.trait_hook],
                                 batch_size=config.batch_size, direction=config.trait_direction)
    scores = run_detectors(lineage, data, trait, config.detectors, n_random=config.n_random_directions,
                           folds=config.folds, seed=config.seed, batch_size=config.batch_size, trait_hook=hook)
    out = [DetectorRow(config.seed, name, needs_of(name), float(auroc(s, labels))) for name, s in scores.items()]
    if config.retrain:
        jobs, where = [], []
        for row in out:
            if row.detector not in DEFENDED:
                continue
            for f in config.fractions:
                kept, _ = screen_rows(scores[row.detector][:n_t], f, seed=config.seed)
                jobs.append(Retraining(f"{row.detector} drop {f:g}", teacher_rows.tokens.cpu()[kept]))
                where.append((row, f))
        if config.retrain_reference:  # the full student and the control, retrained on as many rows with this recipe
            jobs += [Retraining("unedited", teacher_rows.tokens.cpu()), source.control_job(n_t)]
        students = source.retrain(jobs)
        for (row, f), student in zip(where, students):
            row.p_after_drop[f"{f:g}"] = trait.p_target(student)
        if config.retrain_reference:
            reference = {**reference, "student": trait.p_target(students[-2]), "control": trait.p_target(students[-1]),
                         "student_retrained": True, "control_retrained": True}
    return LeaderboardResult(out, {"n_rows": n_t, "n_base_rows": len(base_rows), **dict(reference)},
                             {name: s.float().cpu() for name, s in scores.items()},
                             command or "workbench.run_leaderboard(lineage, inputs, base_rows, trait, source, config)",
                             {"seed": config.seed, "fractions": list(config.fractions),
                              **({"trait_hook": hook.to_dict()} if hook is not None else {}), **dict(meta or {})})


def _concat(a: Inputs, b: Inputs) -> Inputs:
    """Two sets of rows as one (right-padded to the longer), prompt ids and sources kept."""
    rows = a.to_rows() + b.to_rows()
    return Inputs.from_sequences([r["prompt"] for r in rows], [r["completion"] for r in rows],
                                 [str(r["source"]) for r in rows], [*a.prompt_ids, *b.prompt_ids], a.pad_id)


@dataclass
class LeaderboardResult(ResultBase):
    """One seed's leaderboard: every detector's AUROC and the transfer left after its drops."""

    kind: ClassVar[str] = "leaderboard"
    title: ClassVar[str] = "Screening leaderboard: which detector finds the teacher's rows, and does dropping them remove the trait"
    rows: list[DetectorRow]
    reference: dict[str, Any]  # the full student's, control's and base's P(target); mode; n_rows
    scores: dict[str, torch.Tensor]  # detector -> its score per row: the teacher's rows, then the base's
    command: str = "workbench.run_leaderboard(lineage, inputs, base_rows, trait, source, config)"
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, detector: str) -> DetectorRow | None:
        return next((r for r in self.rows if r.detector == detector), None)

    def left(self, p: float) -> float | None:
        return transfer_left(p, float(self.reference["student"]), float(self.reference["control"]))

    def rivals(self, detector: str) -> list[float]:
        """The AUROCs a detector must beat: bag of tokens' (unless it is bag of tokens) and every
        random direction's (of any detector)."""
        return [r.auroc for r in self.rows if r.detector != detector
                and (r.detector == "bag_of_tokens" or is_direction_control(r.detector))]

    def summary_rows(self) -> list[SummaryRow]:
        out = []
        for r in self.rows:
            if r.detector == "random" or is_direction_control(r.detector):
                continue
            rivals = [*self.rivals(r.detector), 0.5]
            out.append(SummaryRow(r.detector, "detection", "AUROC teacher vs base rows", r.auroc,
                                  control="best of bag of tokens, random directions, chance" if len(rivals) > 1
                                  else "chance", control_value=max(rivals), clears=r.auroc > max(rivals),
                                  details={"needs": r.needs}))
        rnd = self.row("random")
        for r in self.rows:
            if rnd is None or r.detector == "random":
                continue
            for f, p in r.p_after_drop.items():
                if f not in rnd.p_after_drop:
                    continue
                left, left_rnd = self.left(p), self.left(rnd.p_after_drop[f])
                removed = None if left is None else 1.0 - left
                removed_rnd = None if left_rnd is None else 1.0 - left_rnd
                out.append(SummaryRow(r.detector, f"drop {float(f):.0%}",
                                      "transfer removed by dropping its top rows (1 - transfer left)", removed,
                                      control="random drop, same size", control_value=removed_rnd,
                                      clears=None if removed is None or removed_rnd is None else removed > removed_rnd,
                                      details={"needs": r.needs, "p_after_drop": p}))
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, subplot_titles=("detection: AUROC teacher vs base rows",
                                                            "defense: transfer left after the drop"))
        names = [r.detector for r in self.rows]
        fig.add_trace(go.Bar(x=names, y=[r.auroc for r in self.rows], name="AUROC", marker_color="#1f77b4"), 1, 1)
        fig.add_hline(y=0.5, line_dash="dot", row=1, col=1)
        fractions = sorted({f for r in self.rows for f in r.p_after_drop}, key=float)
        for f, colour in zip(fractions, ("#d62728", "#ff9896", "#9467bd")):
            dropped = [r for r in self.rows if f in r.p_after_drop]
            fig.add_trace(go.Bar(x=[r.detector for r in dropped], y=[self.left(r.p_after_drop[f]) for r in dropped],
                                 name=f"drop {float(f):.0%}", marker_color=colour), 1, 2)
        fig.update_layout(barmode="group", title=f"Screening leaderboard ({self.reference.get('mode')} labels, "
                                                 f"{self.reference.get('n_rows')} teacher rows, seed {self.meta.get('seed', '?')})")
        return {"leaderboard": fig}


def leaderboard_over_seeds(results: Sequence[LeaderboardResult]) -> list[dict[str, Any]]:
    """Per detector: AUROC per seed, mean and sd; whether it beats bag of tokens and every random
    direction in every seed; per fraction the transfer left per seed and the paired t interval of
    (detector - random drop)."""
    from workbench.results.seeds import over_seeds, paired_interval

    names = list(dict.fromkeys(r.detector for res in results for r in res.rows))
    out = []
    for name in names:
        per = [res.row(name) for res in results]
        aurocs = [r.auroc if r else None for r in per]
        stats = over_seeds(aurocs)
        beats: list[bool | None] = []
        for res, r in zip(results, per):
            rivals = res.rivals(name)
            # undefined for the baselines themselves and where no rival was scored (not a vacuous "yes")
            baseline = name == "random" or is_direction_control(name)
            beats.append(None if r is None or baseline or not rivals else all(r.auroc > v for v in rivals))
        entry: dict[str, Any] = {"detector": name, "needs": per[0].needs if per[0] else None, "auroc": aurocs,
                                 "auroc_mean": stats.mean, "auroc_sd": stats.sd,
                                 "beats_bag_and_random_directions_every_seed":
                                     None if any(b is None for b in beats) else all(beats), "drops": {}}
        for f in sorted({f for r in per if r for f in r.p_after_drop}, key=float):
            left = [res.left(r.p_after_drop[f]) if r and f in r.p_after_drop else None for res, r in zip(results, per)]
            rnd = [res.left(res.row("random").p_after_drop[f]) if res.row("random") and f in res.row("random").p_after_drop
                   else None for res in results]
            s = over_seeds(left)
            entry["drops"][f] = {"left": left, "mean": s.mean, "sd": s.sd, "random_left": rnd,
                                 "minus_random_ci": paired_interval(left, rnd) if name != "random" else None}
        out.append(entry)
    return out


__all__ = ["DEFENDED", "DetectorRow", "LeaderboardConfig", "LeaderboardResult", "leaderboard_over_seeds", "run_leaderboard"]
