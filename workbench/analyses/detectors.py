"""Row detectors of teacher-written data for the screening leaderboard: each scores every row
(higher: more teacher-like), and says what it needs.

Needs (what a defender must hold):
- "base + trait": g_trait alignment (Zur/this workbench: <g_trait, -grad L_i> at the base), the
  unembedding similarity of the row's numbers with the target (Zur et al.'s teacher-free
  entangled-token score), random parameter directions of g_trait's norm (its controls), and the
  activation detectors along the base's trait direction (`activation_detectors`: Chen et al.'s
  persona projection difference, Blank et al.'s activation-gradient cosine), each with random
  unit directions at the same hook as its controls;
- "teacher": the divergence-token fraction (Schrodi et al.), the first update's projection on the
  teacher's displacement <dT, -grad L_i> / |dT| at the base (Madl's first-update coverage, not
  divided by the row's gradient norm), and the likelihood-ratio oracle log p_T(x) - log p_0(x)
  over the supervised tokens;
- "labelled rows": the entangled-token frequency score (teacher vs base frequency ratio) and a
  bag-of-tokens logistic regression, both cross-fitted over folds grouped by prompt (a row is
  never scored by a fit that saw it);
- "nothing": random scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.analyses import channel_edits as edits
from workbench.analyses.activation_detectors import ACTIVATION_DETECTORS, CONTROL_PREFIX, TraitHook, activation_scores
from workbench.analyses.param_directions import norm, random_direction
from workbench.analyses.probes import grouped_folds
from workbench.analyses.trait_gradient import trait_gradient
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective, restricted_log_probs
from workbench.engines.per_example import alignment_scores
from workbench.trait import Trait

NEEDS = {
    "g_trait": "base + trait",
    "unembed_similarity": "base + trait",
    "persona_projection": "base + trait",
    "activation_gradient": "base + trait",
    "divergence_fraction": "teacher",
    "first_update": "teacher",
    "oracle": "teacher",
    "entangled_frequency": "labelled rows",
    "bag_of_tokens": "labelled rows",
    "random": "nothing",
}
"""Every detector, with what it needs; its random-direction controls ("base + trait") are named by `CONTROLS`."""

CONTROLS = {"g_trait": "random_direction_", **CONTROL_PREFIX}
"""Detector -> the name prefix of its random-direction controls (`<prefix><k>`)."""


def is_direction_control(name: str) -> bool:
    """Whether `name` is a random-direction control of some detector (a baseline, not a detector)."""
    return name.startswith(tuple(CONTROLS.values()))


@dataclass
class DetectorInputs:
    """What the detectors read: the pooled rows (teacher's then base's), their labels (True: the
    teacher wrote it), the positions the student's loss supervises, and the token sets."""

    rows: Inputs
    labels: Bool[Tensor, " n"]
    supervised: Bool[Tensor, "n seq"]
    channel_ids: tuple[int, ...] | None
    movable_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.rows) or tuple(self.supervised.shape) != tuple(self.rows.tokens.shape):
            raise DataError(f"DetectorInputs: {len(self.rows)} rows, {len(self.labels)} labels and a supervised mask "
                            f"{tuple(self.supervised.shape)} do not line up; give one label and one mask row per row.")
        if bool(self.labels.all()) or not bool(self.labels.any()):
            raise DataError("The detectors need both teacher-written (True) and base-written (False) rows.")

    @property
    def trained(self) -> Bool[Tensor, "n seq"]:
        """The movable tokens the source wrote (the rows' completions: a prompt's numbers are not
        the writer's, even where a soft-label student is supervised on them)."""
        tokens = self.rows.tokens.cpu()
        return self.rows.mask.cpu() & torch.isin(tokens, torch.as_tensor(list(self.movable_ids), dtype=tokens.dtype))


def _mean_over(values: Float[Tensor, "n seq"], where: Bool[Tensor, "n seq"]) -> Float[Tensor, " n"]:
    w = where.double()
    return (values.double() * w).sum(1) / w.sum(1).clamp(min=1)


def g_trait_scores(lineage: Lineage, data: DetectorInputs, trait: Trait, base: str = "base", n_random: int = 3,
                   seed: int = 0, batch_size: int = 256) -> dict[str, Tensor]:
    """a_i = <g_trait, -grad L_i> (hard loss over the channel) at the base, and the same along
    `n_random` random directions of g_trait's norm."""
    model = AlignmentModel(lineage, base)
    ids = torch.tensor(data.channel_ids) if data.channel_ids is not None else None
    objective = Objective("hard", ids=ids)
    g = trait_gradient(model, trait)
    out = {"g_trait": alignment_scores(model, data.rows, g, objective, batch_size=batch_size).total.double().cpu()}
    scale = norm(g)
    for r in range(n_random):
        direction = random_direction(model.params, seed=seed * 1000 + r, scale=scale)
        out[f"random_direction_{r}"] = alignment_scores(model, data.rows, direction, objective,
                                                        batch_size=batch_size).total.double().cpu()
    return out


def first_update_scores(lineage: Lineage, data: DetectorInputs, base: str = "base", teacher: str = "teacher",
                        batch_size: int = 256) -> Tensor:
    """<dT, -grad L_i> / |dT| at the base (hard loss over the channel): how far one step on row i
    moves the student along the teacher's displacement dT = theta_T - theta_0."""
    model = AlignmentModel(lineage, base)
    ids = torch.tensor(data.channel_ids) if data.channel_ids is not None else None
    delta = lineage.delta_view(teacher, base)
    scale = norm(delta)
    if scale == 0:
        raise DataError(f"The teacher {teacher!r} equals the base: no displacement to project the first update on.")
    return alignment_scores(model, data.rows, delta, Objective("hard", ids=ids), batch_size=batch_size).total.double().cpu() / scale


def unembed_similarity_scores(unembed: Float[Tensor, "d_model vocab"], data: DetectorInputs, target_id: int) -> Tensor:
    """Mean over a row's trained numbers of the cosine between the number's unembedding column
    and the target's (numbers the target 'pulls up' score high; base weights only)."""
    w = unembed.detach().double().cpu()
    w = w / w.norm(dim=0, keepdim=True).clamp(min=1e-12)
    sim = w.T @ w[:, target_id]
    return _mean_over(sim[data.rows.tokens.cpu()], data.trained)


@torch.inference_mode()
def teacher_scores(base: Callable, teacher: Callable, data: DetectorInputs,
                   batch_size: int = 256) -> dict[str, Tensor]:
    """The divergence fraction (of a row's supervised positions where the teacher's argmax over
    the channel differs from the base's) and the oracle: sum over supervised positions of
    log p_T(next) - log p_0(next), both renormalised over the channel."""
    tokens = data.rows.tokens.cpu()
    ids = None if data.channel_ids is None else torch.tensor(data.channel_ids)
    index = None
    if ids is not None:
        index = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        index[ids] = torch.arange(len(ids))
    div, ratio = [], []
    device = edits.model_device(base)
    for lo in range(0, len(tokens), batch_size):
        t = tokens[lo: lo + batch_size].to(device)
        sup = data.supervised[lo: lo + batch_size, :-1]
        nxt = t[:, 1:].cpu()
        lp = {}
        for name, model in (("base", base), ("teacher", teacher)):
            logits = model(t)[:, :-1].float().cpu()
            lp[name] = restricted_log_probs(logits, ids)
        arg_b, arg_t = lp["base"].argmax(-1), lp["teacher"].argmax(-1)
        div.append(_mean_over((arg_b != arg_t).double(), sup))
        col = nxt if index is None else torch.where(nxt < len(index), index[nxt.clamp(max=len(index) - 1)], -1)
        ok = sup & (col >= 0) if index is not None else sup
        gathered = [lp[n].gather(-1, col.clamp(min=0)[..., None]).squeeze(-1) for n in ("teacher", "base")]
        ratio.append(((gathered[0] - gathered[1]).double() * ok.double()).sum(1))
    return {"divergence_fraction": torch.cat(div), "oracle": torch.cat(ratio)}


def entangled_frequency_scores(data: DetectorInputs, folds: Int[Tensor, " n"]) -> Tensor:
    """Cross-fitted: per fold, the log frequency ratio of each number (teacher vs base rows of
    the other folds), and each held-out row's mean ratio over its trained numbers."""
    tokens, trained, labels = data.rows.tokens.cpu(), data.trained, data.labels.cpu()
    ids = list(data.movable_ids)
    lookup = torch.zeros(int(max(ids)) + 1, dtype=torch.float64)
    out = torch.zeros(len(tokens), dtype=torch.float64)
    for k in folds.unique().tolist():
        train, test = folds != k, folds == k
        t_rows, b_rows = train & labels, train & ~labels
        if not t_rows.any() or not b_rows.any():
            raise DataError(f"Fold {k}: the other folds hold no {'teacher' if not t_rows.any() else 'base'} rows to fit on.")
        lookup.zero_()
        lookup[ids] = edits.entangled_tokens(tokens[t_rows], trained[t_rows], tokens[b_rows], trained[b_rows], ids)
        vals = lookup[tokens[test].clamp(max=len(lookup) - 1)]
        out[test] = _mean_over(vals, trained[test])
    return out


def bag_of_tokens_scores(data: DetectorInputs, folds: Int[Tensor, " n"], d_vocab: int, seed: int = 0) -> Tensor:
    """Cross-fitted logistic regression on each row's counts of its trained tokens (out-of-fold
    decision values)."""
    from sklearn.linear_model import LogisticRegression

    tokens, trained = data.rows.tokens.cpu().numpy(), data.trained.numpy()
    counts = np.zeros((len(tokens), d_vocab))
    for i in range(len(tokens)):
        np.add.at(counts[i], tokens[i][trained[i]], 1.0)
    y = data.labels.cpu().numpy().astype(np.int64)
    out = np.zeros(len(y))
    f = folds.numpy()
    for k in np.unique(f):
        train, test = f != k, f == k
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(counts[train], y[train])
        out[test] = clf.decision_function(counts[test])
    return torch.from_numpy(out)


def random_scores(n: int, seed: int) -> Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run_detectors(lineage: Lineage, data: DetectorInputs, trait: Trait, detectors: Sequence[str],
                  *, base: str = "base", teacher: str = "teacher", n_random: int = 3, folds: int = 5, seed: int = 0,
                  batch_size: int = 256, trait_hook: TraitHook | None = None) -> dict[str, Tensor]:
    """Each asked detector's score per row (float64, in the rows' order); g_trait and the
    activation detectors bring their random-direction controls along (`trait_hook`: where the
    activation detectors read, None: `choose_trait_hook`)."""
    unknown = sorted(set(detectors) - set(NEEDS))
    if unknown:
        raise ConfigError(f"Unknown detectors {unknown}; choose from {list(NEEDS)}.")
    out: dict[str, Tensor] = {}
    if "g_trait" in detectors:
        out.update(g_trait_scores(lineage, data, trait, base, n_random, seed, batch_size))
    if "unembed_similarity" in detectors:
        out["unembed_similarity"] = unembed_similarity_scores(lineage[base].W_U, data, trait.target_id)
    asked = [d for d in detectors if d in ACTIVATION_DETECTORS]
    if asked:
        out.update(activation_scores(lineage, data.rows, data.trained, trait, asked, data.channel_ids, data.movable_ids,
                                     base=base, hook=trait_hook, n_random=n_random, seed=seed, batch_size=batch_size))
    if {"divergence_fraction", "oracle", "first_update"} & set(detectors):
        if teacher not in lineage:
            raise ConfigError(f"The divergence and oracle detectors need the teacher {teacher!r} in the lineage "
                              f"(roles: {list(lineage.names)}).")
        if {"divergence_fraction", "oracle"} & set(detectors):
            scores = teacher_scores(lineage[base], lineage[teacher], data, batch_size)
            out.update({k: v for k, v in scores.items() if k in detectors})
        if "first_update" in detectors:
            out["first_update"] = first_update_scores(lineage, data, base, teacher, batch_size)
    if {"entangled_frequency", "bag_of_tokens"} & set(detectors):
        fold = grouped_folds(list(data.rows.prompt_ids), folds, seed)  # a prompt's rows share a fold
        if "entangled_frequency" in detectors:
            out["entangled_frequency"] = entangled_frequency_scores(data, fold)
        if "bag_of_tokens" in detectors:
            out["bag_of_tokens"] = bag_of_tokens_scores(data, fold, lineage.d_vocab, seed)
    if "random" in detectors:
        out["random"] = random_scores(len(data.rows), seed)
    return {name: out[name] for name in [*detectors, *sorted(k for k in out if is_direction_control(k))] if name in out}


def needs_of(name: str) -> str:
    return "base + trait" if is_direction_control(name) else NEEDS[name]


__all__ = ["CONTROLS", "NEEDS", "DetectorInputs", "is_direction_control", "needs_of", "run_detectors"]
