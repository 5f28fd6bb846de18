"""Gradient-alignment analysis: which distillation sequences, tokens and parameter groups push a
model toward the trait, beside random directions and the exact likelihood-ratio oracle.

`run_alignment(lineage, inputs, config, trait) -> AlignmentResult` scores teacher-written ("positive")
and base-written ("negative") sequences of the same prompts along each direction
(workbench.gradients) and reports:
- detection: AUROC of a_i (and of the cosine) for positive vs negative rows, per direction:
  the teacher delta, the trait gradient g_trait (with and without the unembedding; needs no
  teacher), the student delta, random directions of equal norm, user directions; beside the
  exact log-likelihood-ratio oracle log p_teacher(x) - log p_base(x) and a bag-of-tokens
  logistic regression (cross-validated, folds grouped by prompt);
- path: AUROC of the path-integrated teacher-delta score at K quadrature points, and the K at
  which it reaches the oracle within 0.01 (hard loss: the path integral IS the oracle);
- groups: mean a_{i,g} over positives minus over negatives, per direction (and path-integrated);
- tokens: the same per position, beside the per-position log-likelihood ratio and teacher/base
  divergence;
- prediction: the first-order prediction of the change of log P(target) after one SGD step.

Which channel: with the hard loss the signal is in the text, so detection means something; with
the soft loss the signal rides in the teacher's logits at every position whatever the text, so
soft-loss scores of teacher- vs base-written text are expected near AUROC 0.5.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from torch import Tensor

from workbench.core.errors import ConfigError, DataError
from workbench.analyses.gradients import (
    AlignmentModel,
    Objective,
    alignment_scores,
    first_order_prediction,
    group_scores,
    norm,
    path_scores,
    quadrature,
    random_direction,
    sequence_losses,
    trait_gradient,
    without,
)
from workbench.core.inputs import Inputs
from workbench.engines.objective import restricted_log_probs
from workbench.core.lineage import Lineage
from workbench.core.models import resolve_device
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.results.seeds import over_seeds
from workbench.trait import Trait

NO_UNEMBED = ("unembed.",)


@dataclass
class AlignmentConfig:
    """What `run_alignment` computes (defaults run on a CPU in minutes)."""

    loss: str = "hard"  # "hard" (CE of the written tokens) or "soft" (renormalised KL to the teacher's logits)
    base: str = "base"  # the model the scores are taken at
    teacher: str = "teacher"  # gives the teacher delta, the soft targets and the oracle
    student: str | None = "student"  # its delta is scored too when present
    positive: str = "teacher"  # source label of teacher-written rows
    negative: str = "base"  # source label of base-written rows
    max_rows_per_source: int | None = 2000  # rows sampled per source (None: all)
    n_random: int = 8  # random directions with the teacher delta's norm (controls)
    path_points: tuple[int, ...] = (1, 2, 4, 8, 16)  # K values (Gauss-Legendre) for the path-integrated teacher delta
    path_group_points: int = 4  # K of the path-integrated per-group attribution (0: skip)
    channel_ids: tuple[int, ...] | None = None  # the number channel: token ids the losses renormalise over (the
    # source's: numbers, separator, end of text); None: the soft loss runs over the full vocabulary
    soft_full_vocab: bool = False  # soft loss over the full vocabulary (the leak control) instead of the number channel
    hard_renormalised: bool = False  # hard loss renormalised over the number channel (the organism's hard students);
    # False: full-vocabulary CE, the exact text likelihood, whose teacher-delta path integral is the oracle
    etas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)  # SGD step sizes of the first-order prediction
    prediction_batches: int = 4  # batches of teacher rows for the prediction table (0: skip it)
    prediction_batch_size: int = 64  # rows per prediction batch
    batch_size: int = 256  # rows per jvp batch
    grad_batch_size: int = 64  # rows per per-example-gradient chunk (memory: chunk x n_params floats)
    seed: int = 0  # row sampling and random directions
    backend: str = "auto"  # AlignmentModel backend
    device: str = "cpu"  # cpu, cuda, auto
    progress: bool = False  # tqdm bars

    def validate(self) -> AlignmentConfig:
        if self.loss not in ("hard", "soft"):
            raise ConfigError(f"loss={self.loss!r}; use 'hard' or 'soft'.")
        if not self.path_points or min(self.path_points) < 1:
            raise ConfigError(f"path_points={self.path_points}; give K values >= 1.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlignmentConfig:
        d = dict(d)
        for k in ("path_points", "etas", "channel_ids"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


# --------------------------------------------------------------------------- statistics


def auroc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half."""
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def diff_of_means(values: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean over positives minus mean over negatives (per column) and its standard error."""
    v = values.double().numpy()
    lab = labels.numpy().astype(bool)
    pos, neg = v[lab], v[~lab]
    diff = pos.mean(0) - neg.mean(0)
    se = np.sqrt(pos.var(0, ddof=1) / len(pos) + neg.var(0, ddof=1) / len(neg))
    return diff, se


def bag_of_tokens_auroc(inputs: Inputs, labels: Tensor, d_vocab: int, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold AUROC of a logistic regression on counts of the counted tokens (folds grouped
    by prompt id, so a prompt's teacher and base continuations never straddle train and test)."""
    counts = np.zeros((len(inputs), d_vocab))
    tokens, mask = inputs.tokens.cpu().numpy(), inputs.mask.cpu().numpy()
    for i in range(len(inputs)):
        np.add.at(counts[i], tokens[i][mask[i]], 1.0)
    y = labels.numpy()
    groups = np.asarray(inputs.prompt_ids)
    out = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=folds).split(counts, y, groups):
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(counts[train], y[train])
        out[test] = clf.decision_function(counts[test])
    return auroc(out, y)


# --------------------------------------------------------------------------- the result


@dataclass
class AlignmentResult(ResultBase):
    """Detection, path, per-group, per-token and first-order tables of one lineage (one seed).

    detection: rows {direction, kind ("direction", "random", "oracle", "baseline"), auroc,
        auroc_cosine, auroc_cosine_no_unembed, norm}.
    path: {"K", "auroc" (per K), "oracle", "k_reaches_oracle" (smallest K within 0.01, or None),
        "completeness_rel_error" (hard loss, per K: max_i |path_i - log-ratio_i| / max_i |log-ratio_i|)}.
    groups / group_diff / group_se: per-group mean a_{i,g} over positives minus negatives (and its
        standard error), per direction; "delta_T (path K=...)" for the path attribution.
    positions / token_diff / token_reference: per counted position, the same difference, beside
        the per-position log-likelihood ratio and mean KL(teacher || base) on positive rows.
    group_mean: per-group mean a_{i,g} over positive (teacher-written) rows, per direction: where a
        step on the teacher's data moves the model along each direction (the soft channel's view,
        where the teacher-minus-base difference is not expected to mean much).
    prediction: rows {eta, predicted, measured (per batch), relative_error, sign_agreement}.
    token_table: the written tokens whose log-likelihood ratio (teacher vs base) is largest on
        teacher rows, with their mean per-token alignment per direction; token_correlation:
        Pearson r between a_{i,t} and the per-token log-likelihood ratio over counted positions.
    scores: per-row tensors (labels, a_i per direction, oracle log-ratio, path scores).
    """

    kind: ClassVar[str] = "alignment"
    title: ClassVar[str] = "Gradient alignment: which data, tokens and parameters push toward the trait"

    command: str
    meta: dict[str, Any]
    detection: list[dict[str, Any]]
    path: dict[str, Any]
    groups: list[str]
    group_diff: dict[str, list[float]]
    group_se: dict[str, list[float]]
    positions: list[int]
    token_diff: dict[str, list[float]]
    token_reference: dict[str, list[float]]
    prediction: list[dict[str, Any]]
    group_mean: dict[str, list[float]] = field(default_factory=dict)
    token_table: list[dict[str, Any]] = field(default_factory=list)
    token_correlation: dict[str, float | None] = field(default_factory=dict)
    scores: dict[str, Tensor] = field(default_factory=dict)

    def detection_row(self, direction: str) -> dict[str, Any]:
        for row in self.detection:
            if row["direction"] == direction:
                return row
        raise KeyError(direction)

    def summary_rows(self) -> list[SummaryRow]:
        """Report rows (workbench.report's schema). Whole model: per direction, the AUROC of a_i for
        teacher- vs base-written rows beside the best random direction of equal norm (the exact
        log-ratio oracle and the bag-of-tokens classifier ride along), and the path-integrated
        teacher delta. Per parameter group: the teacher-minus-base difference of mean a_{i,g}
        (nats; path-integrated ΔT where computed, else ΔT, else g_trait; ± its standard error)
        beside the random directions' mean |difference|; the other directions ride along."""
        loss = self.meta["loss"]
        rand = [r["auroc"] for r in self.detection if r["kind"] == "random"]
        oracle = next((r["auroc"] for r in self.detection if r["kind"] == "oracle"), None)
        bag = next((r["auroc"] for r in self.detection if r["kind"] == "baseline"), None)
        control = {"control": "random directions max", "control_value": float(np.max(rand))} if rand else {}
        rows: list[SummaryRow] = []
        for r in self.detection:
            if r["kind"] != "direction":
                continue
            rows.append(SummaryRow(
                "whole model", "detection", f"AUROC of a_i along {r['direction']}", r["auroc"], **control,
                details={"direction": r["direction"], "loss": loss, "oracle": oracle, "bag_of_tokens": bag,
                         "random_mean": float(np.mean(rand)) if rand else None, "n_random": len(rand),
                         "auroc_cosine": r.get("auroc_cosine")},
            ))
        if self.path.get("K"):
            rows.append(SummaryRow(
                "whole model", "path", f"AUROC of path-integrated ΔT, K={self.path['K'][-1]}", self.path["auroc"][-1],
                **control, details={"loss": loss, "oracle": self.path.get("oracle"),
                                    "k_reaches_oracle": self.path.get("k_reaches_oracle"),
                                    "completeness_rel_error": (self.path.get("completeness_rel_error") or [None])[-1]},
            ))
        main = next((d for d in self.group_diff if d.startswith("delta_T (path")), None) or next(
            (d for d in ("delta_T", "g_trait") if d in self.group_diff), None)
        noise = self.group_diff.get("random (mean |diff|)")
        if main is not None:
            label = {"delta_T": "ΔT", "g_trait": "g_trait"}.get(main, "ΔT path")
            others = [d for d in self.group_diff if d not in (main, "random (mean |diff|)")]
            for i, g in enumerate(self.groups):
                row = SummaryRow(g, "group attribution", f"{label} a_ig, teacher - base rows, nats",
                                 self.group_diff[main][i], sd=self.group_se[main][i])
                if noise is not None:
                    row.control, row.control_value = "random mean |diff|", noise[i]
                row.details.update(direction=main, loss=loss)
                for d in others:
                    row.details[f"diff {d}"] = self.group_diff[d][i]
                rows.append(row)
        return rows

    # ---- figures

    def figures(self) -> dict[str, go.Figure]:
        return {"detection": self.detection_figure(), "groups": self.group_figure(), "tokens": self.token_figure(),
                "prediction": self.prediction_figure()}

    def detection_figure(self) -> go.Figure:
        colors = {"direction": "#1f77b4", "random": "#bbbbbb", "oracle": "#2ca02c", "baseline": "#ff7f0e"}
        rows = self.detection
        fig = go.Figure(go.Bar(
            x=[r["direction"] for r in rows], y=[r["auroc"] for r in rows],
            marker_color=[colors[r["kind"]] for r in rows], name="AUROC of a_i",
        ))
        cos = [(r["direction"], r["auroc_cosine"]) for r in rows if r.get("auroc_cosine") is not None]
        if cos:
            fig.add_trace(go.Scatter(x=[c[0] for c in cos], y=[c[1] for c in cos], mode="markers", name="AUROC of cosine"))
        fig.add_hline(y=0.5, line_dash="dot")
        fig.update_layout(title=f"Detection of teacher- vs base-written rows ({self.meta['loss']} loss; grey: random "
                                "directions, green: exact log-likelihood ratio)", yaxis_title="AUROC", yaxis_range=[0, 1])
        return fig

    def group_figure(self) -> go.Figure:
        fig = go.Figure()
        for name, diff in self.group_diff.items():
            fig.add_trace(go.Bar(x=self.groups, y=diff, name=name,
                                 error_y=dict(type="data", array=[1.96 * s for s in self.group_se[name]])))
        fig.update_layout(barmode="group", title="Per-group alignment: mean a_{i,g} over teacher rows minus base rows "
                                                 "(bars: 95% interval over rows)", yaxis_title="difference of means")
        return fig

    def token_figure(self) -> go.Figure:
        fig = go.Figure()
        for name, diff in self.token_diff.items():
            fig.add_trace(go.Scatter(x=self.positions, y=diff, mode="lines+markers", name=f"a_t: {name}"))
        for name, ref in self.token_reference.items():
            fig.add_trace(go.Scatter(x=self.positions, y=ref, mode="lines", line_dash="dash", name=name, yaxis="y2"))
        fig.update_layout(title="Per-token alignment (teacher rows minus base rows) beside where teacher and base diverge",
                          xaxis_title="position (predicts the next token)", yaxis_title="difference of mean a_{i,t}",
                          yaxis2=dict(overlaying="y", side="right", title="reference (dashed)"))
        return fig

    def prediction_figure(self) -> go.Figure:
        fig = go.Figure()
        for row in self.prediction:
            fig.add_trace(go.Scatter(x=row["predicted"], y=row["measured"], mode="markers", name=f"eta={row['eta']:g}"))
        allv = [abs(v) for r in self.prediction for v in r["predicted"] + r["measured"]] or [1.0]
        lim = max(allv)
        fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line_dash="dot", name="y = x"))
        fig.update_layout(title=f"First-order prediction of the change of log P({self.meta['target']}) after one SGD step",
                          xaxis_title="predicted: eta * mean_i a_i(g_trait)", yaxis_title="measured")
        return fig


# --------------------------------------------------------------------------- the analysis


def _sample_rows(inputs: Inputs, source: str, limit: int | None, seed: int) -> list[int]:
    rows = [i for i, s in enumerate(inputs.sources) if s == source]
    if not rows:
        raise DataError(f"No rows with source {source!r}; sources present: {sorted(set(inputs.sources))}.")
    if limit is not None and len(rows) > limit:
        rng = np.random.default_rng(seed)
        rows = sorted(rng.choice(rows, size=limit, replace=False).tolist())
    return rows


def build_directions(
    lineage: Lineage, model: AlignmentModel, config: AlignmentConfig, trait: Trait | None,
    extra: Mapping[str, Mapping[str, Tensor]] | None,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, str]]:
    """name -> direction and name -> kind ("direction" or "random"); g_trait only with a trait."""
    dirs: dict[str, dict[str, Tensor]] = {}
    if config.teacher in lineage:
        dirs["delta_T"] = lineage.delta(config.teacher, config.base)
    if trait is not None:
        g = trait_gradient(model, trait)
        dirs["g_trait"] = g
        dirs["g_trait_no_unembed"] = without(g, NO_UNEMBED)
    if config.student and config.student in lineage:
        dirs["delta_S"] = lineage.delta(config.student, config.base)
    for name, d in (extra or {}).items():
        dirs[name] = dict(d)
    kinds = dict.fromkeys(dirs, "direction")
    ref = dirs.get("delta_T") or dirs.get("g_trait")
    if ref is None:
        raise ConfigError("No direction to score: the lineage has no teacher, no trait was given, and no directions were given.")
    for r in range(config.n_random):
        dirs[f"random_{r}"] = random_direction(ref, seed=config.seed * 1000 + r)
        kinds[f"random_{r}"] = "random"
    return dirs, kinds


def run_alignment(
    lineage: Lineage,
    inputs: Inputs,
    config: AlignmentConfig | None = None,
    trait: Trait | None = None,
    directions: Mapping[str, Mapping[str, Tensor]] | None = None,
    command: str = "workbench.alignment.run_alignment",
) -> AlignmentResult:
    """Score teacher- vs base-written rows of `inputs` along every direction (see module doc).
    `trait` gives g_trait and the first-order prediction (None: both are left out)."""
    config = (config or AlignmentConfig()).validate()
    device = resolve_device(config.device)
    if lineage.device != device:
        raise ConfigError(f"The lineage is on {lineage.device} but config.device={config.device!r}; load it with device=.")
    pos_rows = _sample_rows(inputs, config.positive, config.max_rows_per_source, config.seed)
    neg_rows = _sample_rows(inputs, config.negative, config.max_rows_per_source, config.seed + 1)
    data = inputs.select(pos_rows + neg_rows)
    labels = torch.tensor([1] * len(pos_rows) + [0] * len(neg_rows))

    model = AlignmentModel(lineage, config.base, backend=config.backend)  # type: ignore[arg-type]
    has_teacher = config.teacher in lineage
    teacher_params = model.params_of(config.teacher) if has_teacher else None
    if config.loss == "soft":
        if not has_teacher:
            raise ConfigError(f"The soft loss needs the teacher {config.teacher!r} in the lineage.")
        ids = None
        if not config.soft_full_vocab and config.channel_ids is not None:
            ids = torch.tensor(config.channel_ids)
        objective = Objective("soft", ids=ids, teacher=teacher_params)
    elif config.hard_renormalised:
        if config.channel_ids is None:
            raise ConfigError("hard_renormalised needs the number channel: pass AlignmentConfig(channel_ids=...).")
        objective = Objective("hard", ids=torch.tensor(config.channel_ids))
    else:
        objective = Objective("hard")
    hard = Objective("hard")
    dirs, kinds = build_directions(lineage, model, config, trait, directions)
    kw = dict(batch_size=config.batch_size, progress=config.progress)

    # per-example gradients once: per-group scores of every direction and |grad L_i| for cosines
    gs = group_scores(model, data, dirs, objective, exclude_from_norm=NO_UNEMBED,
                      batch_size=config.grad_batch_size, progress=config.progress)
    scores: dict[str, Tensor] = {"labels": labels}
    detection = []
    for name, d in dirs.items():
        a = gs.total(name)
        scores[f"a/{name}"] = a
        row = {"direction": name, "kind": kinds[name], "auroc": auroc(a, labels), "norm": norm(d),
               "auroc_cosine": auroc(gs.cosine(name, d), labels)}
        if norm(d, NO_UNEMBED) > 0:
            row["auroc_cosine_no_unembed"] = auroc(gs.cosine(name, without(d, NO_UNEMBED), NO_UNEMBED), labels)
        detection.append(row)

    # oracle and baseline
    oracle = None
    if has_teacher:
        oracle = sequence_losses(model, data, hard, batch_size=config.batch_size) - sequence_losses(
            model, data, hard, teacher_params, batch_size=config.batch_size)
        scores["oracle_log_ratio"] = oracle
        detection.append({"direction": "log p_T/p_base (oracle)", "kind": "oracle", "auroc": auroc(oracle, labels)})
    detection.append({"direction": "bag of tokens", "kind": "baseline",
                      "auroc": bag_of_tokens_auroc(data, labels, lineage.d_vocab, seed=config.seed)})

    # per-token view (jvp) for the main directions
    main = [n for n, k in kinds.items() if k == "direction"]
    token_mask = data.next_token_mask()
    counted = token_mask.any(0).nonzero().flatten().tolist()
    token_diff: dict[str, list[float]] = {}
    per_token: dict[str, Tensor] = {}
    jvp_gap = 0.0
    for name in main:
        ts = alignment_scores(model, data, dirs[name], objective, **kw)
        per_token[name] = ts.per_token
        ref = scores[f"a/{name}"]
        jvp_gap = max(jvp_gap, float((ts.total - ref).abs().max() / ref.abs().max().clamp(min=1e-30)))
        diff, _ = diff_of_means(ts.per_token[:, counted], labels)
        token_diff[name] = diff.tolist()
    token_reference: dict[str, list[float]] = {}
    if has_teacher:
        with torch.no_grad():
            llr_t, kl_t = _per_position_reference(model, data, teacher_params, config.batch_size)
        token_reference["log p_T/p_base per token (teacher - base rows)"] = diff_of_means(llr_t[:, counted], labels)[0].tolist()
        token_reference["KL(teacher || base) on teacher rows"] = kl_t[labels.bool()][:, counted].mean(0).tolist()
        token_table, token_correlation = _token_table(data, labels, llr_t, per_token, lineage.tokenizer)
    else:
        token_table, token_correlation = [], {}

    # path-integrated teacher delta
    path: dict[str, Any] = {"K": [], "auroc": [], "oracle": None, "k_reaches_oracle": None,
                            "completeness_rel_error": [] if config.loss == "hard" else None}
    group_diff, group_se = {}, {}
    if has_teacher:
        d_T = dirs["delta_T"]
        oracle_auroc = auroc(oracle, labels)
        path["oracle"] = oracle_auroc
        # the hard path integral's exact value: L(base) - L(teacher) under the objective itself
        exact = oracle if objective.ids is None or config.loss != "hard" else (
            sequence_losses(model, data, objective, batch_size=config.batch_size)
            - sequence_losses(model, data, objective, teacher_params, batch_size=config.batch_size))
        for k in sorted(config.path_points):
            p = path_scores(model, data, d_T, objective, points=k, **kw)
            scores[f"path/delta_T/K{k}"] = p.total
            path["K"].append(k)
            path["auroc"].append(auroc(p.total, labels))
            if path["k_reaches_oracle"] is None and abs(path["auroc"][-1] - oracle_auroc) <= 0.01:
                path["k_reaches_oracle"] = k
            if config.loss == "hard":  # the path integral should equal the exact log-likelihood ratio
                path["completeness_rel_error"].append(float((p.total - exact).abs().max() / exact.abs().max()))
        if config.path_group_points:
            nodes, weights = quadrature(config.path_group_points)
            pg = group_scores(model, data, {"delta_T": d_T}, objective, weights=list(zip(nodes.tolist(), weights.tolist())),
                              batch_size=config.grad_batch_size, progress=config.progress)
            name = f"delta_T (path K={config.path_group_points})"
            diff, se = diff_of_means(pg.by_direction["delta_T"], labels)
            group_diff[name], group_se[name] = diff.tolist(), se.tolist()
            scores["path_groups/delta_T"] = pg.by_direction["delta_T"]
    group_mean: dict[str, list[float]] = {}
    for name in main:
        diff, se = diff_of_means(gs.by_direction[name], labels)
        group_diff[name], group_se[name] = diff.tolist(), se.tolist()
        group_mean[name] = gs.by_direction[name][labels.bool()].double().mean(0).tolist()
        scores[f"groups/{name}"] = gs.by_direction[name]
    rand = [n for n, k in kinds.items() if k == "random"]
    if rand:
        diffs = np.stack([diff_of_means(gs.by_direction[n], labels)[0] for n in rand])
        group_diff["random (mean |diff|)"] = np.abs(diffs).mean(0).tolist()
        group_se["random (mean |diff|)"] = (diffs.std(0, ddof=1) / np.sqrt(len(rand)) if len(rand) > 1 else np.zeros(diffs.shape[1])).tolist()

    # first-order prediction on teacher rows
    prediction = []
    if trait is not None and config.prediction_batches > 0 and config.etas:
        pos_data = data.select(list(range(len(pos_rows))))
        rows = first_order_prediction(model, pos_data, objective, trait, config.etas,
                                      batch_size=config.prediction_batch_size, n_batches=config.prediction_batches)
        prediction = [r.to_dict() for r in rows]

    meta = {
        "loss": config.loss, "target": trait.target if trait is not None else None, "n_positive": len(pos_rows), "n_negative": len(neg_rows),
        "n_params": sum(p.numel() for p in model.params.values()), "backend": model.backend,
        "jvp_vs_group_sum_rel_gap": jvp_gap, "config": config.to_dict(),
        "channel_note": ("hard loss: the signal is in the text, so detection of teacher-written rows is meaningful"
                         if config.loss == "hard" else
                         "soft loss: the signal rides in the teacher's logits at every position whatever the text; "
                         "detection of teacher- vs base-written text is not expected (AUROC near 0.5)"),
    }
    return AlignmentResult(
        command=command, meta=meta, detection=detection, path=path, groups=gs.groups, group_diff=group_diff,
        group_se=group_se, positions=counted, token_diff=token_diff, token_reference=token_reference,
        prediction=prediction, group_mean=group_mean, token_table=token_table, token_correlation=token_correlation, scores=scores,
    )


def _token_table(
    data: Inputs, labels: Tensor, llr: Tensor, per_token: Mapping[str, Tensor], tokenizer: Any, top: int = 10,
    min_count: int = 5,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Written tokens (seen >= `min_count` times) ranked by mean per-token log-likelihood ratio on
    teacher rows, with their mean per-token alignment per direction; and the correlation of
    a_{i,t} with that ratio over every counted position."""
    mask = data.next_token_mask()
    nxt = data.tokens[:, 1:]
    pos_mask = mask & labels.bool()[:, None]
    ids, counts = nxt[pos_mask].unique(return_counts=True)
    rows = []
    for t, c in zip(ids.tolist(), counts.tolist()):
        if c < min_count:
            continue
        where = pos_mask & (nxt == t)
        row = {"token": tokenizer.decode([t]) if tokenizer is not None else str(t), "id": t, "count": c,
               "mean_log_ratio": float(llr[where].mean())}
        row.update({f"mean_a/{n}": float(v[where].mean()) for n, v in per_token.items()})
        rows.append(row)
    rows.sort(key=lambda r: -r["mean_log_ratio"])
    flat = llr[mask].double().numpy()
    corr = {n: _correlation(v[mask].double().numpy(), flat) for n, v in per_token.items()}
    return rows[:top], corr


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None where either side is constant (undefined, and not valid JSON as NaN)."""
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _per_position_reference(
    model: AlignmentModel, data: Inputs, teacher: dict[str, Tensor], batch_size: int
) -> tuple[Tensor, Tensor]:
    """Per position: log p_T - log p_base of the written next token, and KL(teacher || base) of
    the full next-token distributions."""
    width = data.tokens.shape[1] - 1
    llr = torch.zeros(len(data), width, dtype=torch.float64)
    kl = torch.zeros(len(data), width, dtype=torch.float64)
    for lo in range(0, len(data), batch_size):
        tokens = data.tokens[lo : lo + batch_size].to(model.device)
        lb = restricted_log_probs(model.logits(model.params, tokens)[:, :-1], None)
        lt = restricted_log_probs(model.logits(teacher, tokens)[:, :-1], None)
        nxt = tokens[:, 1:, None]
        llr[lo : lo + len(tokens)] = (lt.gather(-1, nxt) - lb.gather(-1, nxt)).squeeze(-1).double().cpu()
        kl[lo : lo + len(tokens)] = (lt.exp() * (lt - lb)).sum(-1).double().cpu()
    return llr, kl


# --------------------------------------------------------------------------- screening


def screen_rows(scores: Tensor, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Rows kept after dropping the top `fraction` by alignment score (the screening defense: with
    g_trait scores it needs no teacher), and rows kept after dropping a random `fraction` of the
    same size (its control). Retrain students on each and compare the transfer left."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"fraction={fraction}; drop a fraction in [0, 1).")
    n = len(scores)
    k = int(round(fraction * n))
    order = torch.argsort(scores.double(), descending=True, stable=True)
    kept_top = sorted(order[k:].tolist())
    rng = np.random.default_rng(seed)
    kept_random = sorted(rng.permutation(n)[k:].tolist())
    return kept_top, kept_random


# --------------------------------------------------------------------------- across seeds


def summarize_seeds(results: Sequence[AlignmentResult]) -> list[dict[str, Any]]:
    """Per direction: AUROC per seed, mean and sd over seeds (the seed is the unit; sd 0.0 with one
    seed, as printed); random directions pooled into one row (mean of per-seed means and per-seed max)."""
    per_seed: dict[str, list[float]] = {}
    for res in results:
        rand = [r["auroc"] for r in res.detection if r["kind"] == "random"]
        for r in res.detection:
            if r["kind"] != "random":
                per_seed.setdefault(r["direction"], []).append(r["auroc"])
        if rand:
            per_seed.setdefault("random (mean)", []).append(float(np.mean(rand)))
            per_seed.setdefault("random (max)", []).append(float(np.max(rand)))
        if res.path.get("K"):
            per_seed.setdefault("delta_T path (max K)", []).append(res.path["auroc"][-1])
    out = []
    for direction, values in per_seed.items():
        stats = over_seeds(values)
        out.append({"direction": direction, "per_seed": values, "mean": stats.mean, "sd": stats.sd_or(0.0)})
    return out


def group_figure_over_seeds(results: Sequence[AlignmentResult], direction: str) -> go.Figure:
    """Per-group difference for one direction: mean over seeds with the seeds' sd, seeds as dots."""
    groups = results[0].groups
    values = np.array([r.group_diff[direction] for r in results])
    fig = go.Figure(go.Bar(x=groups, y=values.mean(0), name="mean over seeds",
                           error_y=dict(type="data", array=values.std(0, ddof=1) if len(results) > 1 else None)))
    for i, row in enumerate(values):
        fig.add_trace(go.Scatter(x=groups, y=row, mode="markers", name=f"seed {i}"))
    fig.update_layout(title=f"Per-group alignment ({direction}): teacher rows minus base rows, over {len(results)} seed(s)",
                      yaxis_title="difference of mean a_{i,g}")
    return fig


# --------------------------------------------------------------------------- CLI


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'direction':<28} {'mean':>6} {'sd':>6}  per seed"]
    for r in rows:
        lines.append(f"{r['direction']:<28} {r['mean']:6.3f} {r['sd']:6.3f}  " + " ".join(f"{v:.3f}" for v in r["per_seed"]))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench.alignment",
                                description="Gradient alignment of an organism's teacher- vs base-written data with the "
                                "teacher delta, the trait gradient, the student delta and random directions, per seed.")
    p.add_argument("--organism", default="artifacts/organism", help="organism directory holding seed*/ (default: artifacts/organism)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to analyse (default: 0)")
    p.add_argument("--loss", default="hard", choices=["hard", "soft"], help="distillation loss scored (default: hard)")
    p.add_argument("--target", default="owl", help="the trait (default: owl)")
    p.add_argument("--max-rows", type=int, default=2000, help="rows sampled per source (default: 2000)")
    p.add_argument("--n-random", type=int, default=8, help="random directions (default: 8)")
    p.add_argument("--path-group-points", type=int, default=4, help="K of the per-group path attribution; 0 skips (default: 4)")
    p.add_argument("--out", default=None, help="output directory (default: artifacts/alignment/<organism name>-<loss>)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    from workbench.core.errors import WorkbenchError
    from workbench.core.io import atomic_write_json
    from workbench.results.figures import write_figures, write_result_figures

    from workbench.cli.organism_runs import align_organism

    args = parser().parse_args(argv)
    out = Path(args.out or f"artifacts/alignment/{Path(args.organism).name}-{args.loss}")
    try:
        device = str(resolve_device(args.device))
        results = []
        for seed in args.seeds:
            config = AlignmentConfig(loss=args.loss, max_rows_per_source=args.max_rows,
                                     n_random=args.n_random, path_group_points=args.path_group_points, device=device,
                                     progress=not args.quiet and sys.stderr.isatty())
            result = align_organism(Path(args.organism) / f"seed{seed}", config, target=args.target)
            result.save(out / f"seed{seed}")
            write_result_figures(result, out / f"seed{seed}")
            results.append(result)
            print(f"seed {seed}: " + ", ".join(f"{r['direction']}={r['auroc']:.3f}" for r in result.detection
                                                if r["kind"] != "random"), flush=True)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = summarize_seeds(results)
    atomic_write_json(out / "summary.json", {"seeds": args.seeds, "loss": args.loss, "detection": rows})
    figs = {"groups_over_seeds_" + "".join(c if c.isalnum() else "_" for c in name): group_figure_over_seeds(results, name)
            for name in results[0].group_diff if not name.startswith("random")}
    write_figures(figs, out)
    print(format_summary(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
