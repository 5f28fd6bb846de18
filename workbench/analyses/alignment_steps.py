"""The steps of `run_alignment`, each a short function: sample and label rows, choose the loss,
build the directions, then the detection, path, per-group and first-order tables.
(The per-token view is `workbench.analyses.alignment_tokens`.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench.analyses.alignment_config import NO_UNEMBED, AlignmentConfig
from workbench.analyses.alignment_stats import auroc, bag_of_tokens_auroc, diff_of_means
from workbench.analyses.first_order import first_order_prediction
from workbench.analyses.group_scores import GroupScores, group_scores
from workbench.analyses.param_directions import norm, random_direction, without
from workbench.analyses.path_scores import path_scores, quadrature
from workbench.analyses.trait_gradient import trait_gradient
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel, Params
from workbench.engines.objective import Objective, sequence_losses
from workbench.engines.teacher import TeacherLogits
from workbench.trait import Trait

Directions = dict[str, Mapping[str, Tensor]]  # dicts, or LazyParams made key by key (deltas, random)


# --------------------------------------------------------------------------- rows, loss, directions


@dataclass
class LabelledRows:
    """The sampled rows: teacher-written ("positive", first) then base-written, labelled 1 and 0."""

    data: Inputs
    labels: Tensor
    n_positive: int
    n_negative: int

    def positives(self) -> Inputs:
        return self.data.select(list(range(self.n_positive)))


def _rows_of(inputs: Inputs, source: str, limit: int | None, seed: int) -> list[int]:
    rows = [i for i, s in enumerate(inputs.sources) if s == source]
    if not rows:
        raise DataError(f"No rows with source {source!r}; sources present: {sorted(set(inputs.sources))}.")
    if limit is not None and len(rows) > limit:
        rng = np.random.default_rng(seed)
        rows = sorted(rng.choice(rows, size=limit, replace=False).tolist())
    return rows


def sample_rows(inputs: Inputs, config: AlignmentConfig) -> LabelledRows:
    """Up to `max_rows_per_source` rows of each source (seeded), positives first."""
    pos = _rows_of(inputs, config.positive, config.max_rows_per_source, config.seed)
    neg = _rows_of(inputs, config.negative, config.max_rows_per_source, config.seed + 1)
    groups = {inputs.prompt_ids[i] for i in pos + neg}
    if len(groups) < 5:
        raise DataError(f"{len(pos)} {config.positive!r} and {len(neg)} {config.negative!r} rows on {len(groups)} prompts: "
                        "the bag-of-tokens control needs rows on at least 5 prompts (5 folds grouped by prompt). Give "
                        "more rows.")
    labels = torch.tensor([1] * len(pos) + [0] * len(neg))
    return LabelledRows(inputs.select(pos + neg), labels, len(pos), len(neg))


def build_objective(config: AlignmentConfig, teacher: TeacherLogits | None) -> Objective:
    """The loss the scores differentiate: soft (KL to the teacher's logits, over the channel unless
    `soft_full_vocab`), hard renormalised over the channel, or full-vocabulary hard."""
    if config.loss == "soft":
        if teacher is None:
            raise ConfigError(f"The soft loss needs the teacher {config.teacher!r} in the lineage.")
        ids = None
        if not config.soft_full_vocab and config.channel_ids is not None:
            ids = torch.tensor(config.channel_ids)
        return Objective("soft", ids=ids, teacher=teacher)
    if config.hard_renormalised:
        if config.channel_ids is None:
            raise ConfigError("hard_renormalised needs the number channel: pass AlignmentConfig(channel_ids=...).")
        return Objective("hard", ids=torch.tensor(config.channel_ids))
    return Objective("hard")


def build_directions(
    lineage: Lineage, model: AlignmentModel, config: AlignmentConfig, trait: Trait | None,
    extra: Mapping[str, Mapping[str, Tensor]] | None,
) -> tuple[Directions, dict[str, str]]:
    """name -> direction and name -> kind ("direction" or "random"); g_trait only with a trait."""
    dirs: Directions = {}
    if config.teacher in lineage:  # a prompted teacher has no weights, so no delta (`left_out`)
        dirs["delta_T"] = lineage.delta_view(config.teacher, config.base)  # made key by key when read
    if trait is not None:
        g = trait_gradient(model, trait)
        dirs["g_trait"] = g
        dirs["g_trait_no_unembed"] = without(g, NO_UNEMBED)
    if config.student and config.student in lineage:
        dirs["delta_S"] = lineage.delta_view(config.student, config.base)
    for name, d in (extra or {}).items():
        dirs[name] = dict(d)
    kinds = dict.fromkeys(dirs, "direction")
    ref = dirs.get("delta_T") or dirs.get("g_trait")
    if ref is None:
        teacher = ("its teacher is prompted (no weights, so no delta)" if lineage.is_prompted(config.teacher)
                   else "the lineage has no teacher")
        raise ConfigError(f"No direction to score: {teacher}, no trait was given, and no directions were given. "
                          "Pass a trait (g_trait needs no teacher) or directions=.")
    scale = norm(ref)  # once: the lazy reference is not re-read per control
    for r in range(config.n_random):  # the model's own keys give each control's layout without reading `ref`
        dirs[f"random_{r}"] = random_direction(model.params, seed=config.seed * 1000 + r, scale=scale)
        kinds[f"random_{r}"] = "random"
    return dirs, kinds


def per_group_scores(model: AlignmentModel, rows: LabelledRows, dirs: Directions, objective: Objective,
                     config: AlignmentConfig) -> GroupScores:
    """Per-example gradients once: per-group scores of every direction and |grad L_i| for cosines."""
    return group_scores(model, rows.data, dirs, objective, exclude_from_norm=NO_UNEMBED,
                        batch_size=config.grad_batch_size, progress=config.progress,
                        memory_budget_bytes=config.memory_budget_bytes)


# --------------------------------------------------------------------------- detection


def detection_rows(
    grads: GroupScores, dirs: Directions, kinds: Mapping[str, str], labels: Tensor
) -> tuple[list[dict[str, Any]], dict[str, Tensor]]:
    """Per direction: AUROC of a_i and of the cosine (with and without the unembedding); and the
    a_i scores ("a/<name>")."""
    rows, scores = [], {}
    for name, d in dirs.items():
        a = grads.total(name)
        scores[f"a/{name}"] = a
        row = {"direction": name, "kind": kinds[name], "auroc": auroc(a, labels), "norm": norm(d),
               "auroc_cosine": auroc(grads.cosine(name, d), labels)}
        if norm(d, NO_UNEMBED) > 0:
            row["auroc_cosine_no_unembed"] = auroc(grads.cosine(name, without(d, NO_UNEMBED), NO_UNEMBED), labels)
        rows.append(row)
    return rows, scores


def oracle_log_ratio(model: AlignmentModel, data: Inputs, teacher: TeacherLogits, batch_size: int) -> Tensor:
    """log p_T(x_i) - log p_base(x_i) of the whole text (full-vocabulary hard loss); the teacher's
    log-probs from its logits on the rows (its weights, or the base under its system prompt)."""
    hard = Objective("hard")
    return sequence_losses(model, data, hard, batch_size=batch_size) - sequence_losses(
        model, data, hard, teacher, batch_size=batch_size)


def reference_rows(oracle: Tensor | None, rows: LabelledRows, d_vocab: int, seed: int) -> list[dict[str, Any]]:
    """The exact log-likelihood-ratio oracle (with a teacher) and the bag-of-tokens baseline."""
    out = []
    if oracle is not None:
        out.append({"direction": "log p_T/p_base (oracle)", "kind": "oracle", "auroc": auroc(oracle, rows.labels)})
    out.append({"direction": "bag of tokens", "kind": "baseline",
                "auroc": bag_of_tokens_auroc(rows.data, rows.labels, d_vocab, seed=seed)})
    return out


# --------------------------------------------------------------------------- path


def path_table(
    model: AlignmentModel, rows: LabelledRows, d_T: Mapping[str, Tensor] | None, objective: Objective,
    teacher: Params | None,
    oracle: Tensor | None, config: AlignmentConfig,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """AUROC of the path-integrated teacher delta per K, the K at which it reaches the oracle's
    within 0.01, and (hard loss) its relative error against the exact value; and the path scores
    ("path/delta_T/K<k>"). Without teacher weights (none, or a prompted teacher): an empty table
    with the reason in "left_out"."""
    path: dict[str, Any] = {"K": [], "auroc": [], "oracle": None, "k_reaches_oracle": None,
                            "completeness_rel_error": [] if config.loss == "hard" else None}
    if d_T is None or teacher is None or oracle is None:
        if oracle is not None:
            path["oracle"] = auroc(oracle, rows.labels)
            path["left_out"] = "the path integral runs in weight space from the base to the teacher's weights; " \
                               "this teacher has none (prompted), so only its endpoint, the oracle, is given"
        return path, {}
    labels = rows.labels
    oracle_auroc = path["oracle"] = auroc(oracle, labels)
    # the hard path integral's exact value: L(base) - L(teacher) under the objective itself
    exact = oracle if objective.ids is None or config.loss != "hard" else (
        sequence_losses(model, rows.data, objective, batch_size=config.batch_size)
        - sequence_losses(model, rows.data, objective, teacher, batch_size=config.batch_size))
    scores = {}
    for k in sorted(config.path_points):
        p = path_scores(model, rows.data, d_T, objective, points=k, batch_size=config.batch_size, progress=config.progress,
                        memory_budget_bytes=config.memory_budget_bytes)
        scores[f"path/delta_T/K{k}"] = p.total
        path["K"].append(k)
        path["auroc"].append(auroc(p.total, labels))
        if path["k_reaches_oracle"] is None and abs(path["auroc"][-1] - oracle_auroc) <= 0.01:
            path["k_reaches_oracle"] = k
        if config.loss == "hard":  # the path integral should equal the exact log-likelihood ratio
            path["completeness_rel_error"].append(float((p.total - exact).abs().max() / exact.abs().max()))
    return path, scores


def path_group_scores(model: AlignmentModel, rows: LabelledRows, d_T: Mapping[str, Tensor] | None, objective: Objective,
                      config: AlignmentConfig) -> dict[str, Tensor]:
    """Path-integrated a_{i,g} of the teacher delta with `path_group_points` Gauss-Legendre points,
    under its table name (empty without a teacher delta or with `path_group_points=0`)."""
    if d_T is None or not config.path_group_points:
        return {}
    nodes, weights = quadrature(config.path_group_points)
    pg = group_scores(model, rows.data, {"delta_T": d_T}, objective, weights=list(zip(nodes.tolist(), weights.tolist())),
                      batch_size=config.grad_batch_size, progress=config.progress,
                      memory_budget_bytes=config.memory_budget_bytes)
    return {f"delta_T (path K={config.path_group_points})": pg.by_direction["delta_T"]}


# --------------------------------------------------------------------------- groups, prediction


@dataclass
class GroupTables:
    """Per group and direction: teacher-minus-base difference of mean a_{i,g}, its standard
    error, and the mean over teacher rows (`AlignmentResult.group_diff/group_se/group_mean`)."""

    diff: dict[str, list[float]]
    se: dict[str, list[float]]
    mean: dict[str, list[float]]


def group_tables(
    by_direction: Mapping[str, Tensor], random: Mapping[str, Tensor], labels: Tensor, path: Mapping[str, Tensor],
) -> GroupTables:
    """Differences of means for the path-integrated attributions (`path`, first) and each
    direction; the mean over positives for each direction; the random directions pooled as the
    mean |difference| (and its standard error over directions)."""
    tables = GroupTables({}, {}, {})
    for name, values in path.items():
        diff, se = diff_of_means(values, labels)
        tables.diff[name], tables.se[name] = diff.tolist(), se.tolist()
    for name, values in by_direction.items():
        diff, se = diff_of_means(values, labels)
        tables.diff[name], tables.se[name] = diff.tolist(), se.tolist()
        tables.mean[name] = values[labels.bool()].double().mean(0).tolist()
    if random:
        diffs = np.stack([diff_of_means(v, labels)[0] for v in random.values()])
        tables.diff["random (mean |diff|)"] = np.abs(diffs).mean(0).tolist()
        tables.se["random (mean |diff|)"] = (diffs.std(0, ddof=1) / np.sqrt(len(random)) if len(random) > 1
                                             else np.zeros(diffs.shape[1])).tolist()
    return tables


def prediction_rows(model: AlignmentModel, rows: LabelledRows, objective: Objective, trait: Trait | None,
                    config: AlignmentConfig, g_trait: Mapping[str, Tensor] | None = None) -> list[dict[str, Any]]:
    """The first-order prediction on teacher rows (empty without a trait, batches or step sizes);
    `g_trait` when already computed (the directions hold it), so it is not held twice."""
    if trait is None or config.prediction_batches <= 0 or not config.etas:
        return []
    table = first_order_prediction(model, rows.positives(), objective, trait, config.etas,
                                   batch_size=config.prediction_batch_size, n_batches=config.prediction_batches,
                                   g_trait=g_trait, memory_budget_bytes=config.memory_budget_bytes)
    return [r.to_dict() for r in table]


def alignment_meta(config: AlignmentConfig, trait: Trait | None, rows: LabelledRows, model: AlignmentModel,
                   jvp_gap: float, teacher: TeacherLogits | None = None) -> dict[str, Any]:
    """What was scored and how, and which channel the loss reads (so the reader knows what detection means);
    for a teacher with no weights (prompted), what it is and what was left out for want of its weights."""
    extra: dict[str, Any] = {}
    if teacher is not None and teacher.params is None:
        extra["teacher"] = {**teacher.meta, **teacher.row_kinds(rows.data.tokens)}
        extra["left_out"] = {"delta_T": "no teacher weights (prompted teacher): no ΔT direction, its random "
                                        "controls take g_trait's norm",
                             "path": "the weight-space path integral needs teacher weights; the oracle is its endpoint"}
    return {**extra,
        "loss": config.loss, "target": trait.target if trait is not None else None, "n_positive": rows.n_positive,
        "n_negative": rows.n_negative, "n_params": sum(p.numel() for p in model.params.values()),
        "backend": model.backend, "jvp_vs_group_sum_rel_gap": jvp_gap, "config": config.to_dict(),
        "channel_note": ("hard loss: the signal is in the text, so detection of teacher-written rows is meaningful"
                         if config.loss == "hard" else
                         "soft loss: the signal rides in the teacher's logits at every position whatever the text; "
                         "detection of teacher- vs base-written text is not expected (AUROC near 0.5)"),
    }
