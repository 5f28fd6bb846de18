"""Gradient-alignment analysis: which distillation sequences, tokens and parameter groups push a
model toward the trait, beside random directions and the exact likelihood-ratio oracle.

`run_alignment(lineage, inputs, config, trait) -> AlignmentResult` scores teacher-written ("positive")
and base-written ("negative") sequences of the same prompts along each direction
(workbench.analyses.gradients) and reports:
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

The steps live in `alignment_steps` (and `alignment_tokens`), the configuration in
`alignment_config`, the result and its figures in `alignment_result`, the view over seeds in
`alignment_seeds`; this module runs them in order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from workbench.analyses.alignment_config import NO_UNEMBED, AlignmentConfig
from workbench.analyses.alignment_result import AlignmentResult
from workbench.analyses.alignment_seeds import group_figure_over_seeds, detection_over_seeds
from workbench.analyses.alignment_steps import (
    alignment_meta,
    build_directions,
    build_objective,
    detection_rows,
    group_tables,
    oracle_log_ratio,
    path_group_scores,
    path_table,
    per_group_scores,
    prediction_rows,
    reference_rows,
    sample_rows,
)
from workbench.analyses.alignment_tokens import token_view
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import resolve_device
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.teacher import teacher_logits
from workbench.trait import Trait, check_trait


def run_alignment(
    lineage: Lineage,
    inputs: Inputs,
    config: AlignmentConfig | None = None,
    trait: Trait | None = None,
    directions: Mapping[str, Mapping[str, Tensor]] | None = None,
    command: str = "workbench.run_alignment(lineage, inputs, config, trait)",
) -> AlignmentResult:
    """Score teacher- vs base-written rows of `inputs` along every direction (see module doc).
    `trait` gives g_trait and the first-order prediction (None: both are left out)."""
    config = (config or AlignmentConfig()).validate()
    if trait is not None:
        check_trait(trait, lineage.d_vocab, "run_alignment's trait", single_token=False)
    if lineage.device != resolve_device(config.device):
        raise ConfigError(f"The lineage is on {lineage.device} but config.device={config.device!r}; load it with device=.")
    rows = sample_rows(inputs, config)
    model = AlignmentModel(lineage, config.base, backend=config.backend)  # type: ignore[arg-type]
    teacher = teacher_logits(model, config.teacher)  # its weights, or the base under its system prompt
    objective = build_objective(config, teacher)
    dirs, kinds = build_directions(lineage, model, config, trait, directions)
    named = {n: d for n, d in dirs.items() if kinds[n] == "direction"}  # the directions proper, not the random controls

    grads = per_group_scores(model, rows, dirs, objective, config)
    detection, a_scores = detection_rows(grads, dirs, kinds, rows.labels)
    oracle = None if teacher is None else oracle_log_ratio(model, rows.data, teacher, config.batch_size)
    detection += reference_rows(oracle, rows, lineage.d_vocab, config.seed)
    tokens = token_view(model, rows.data, rows.labels, named, objective, {n: grads.total(n) for n in named}, teacher,
                        lineage.tokenizer, batch_size=config.batch_size, progress=config.progress,
                        memory_budget_bytes=config.memory_budget_bytes)
    path, path_scores = path_table(model, rows, dirs.get("delta_T"), objective, teacher and teacher.params, oracle,
                                   config)
    path_groups = path_group_scores(model, rows, dirs.get("delta_T"), objective, config)
    random = {n: grads.by_direction[n] for n, k in kinds.items() if k == "random"}
    groups = group_tables({n: grads.by_direction[n] for n in named}, random, rows.labels, path_groups)
    prediction = prediction_rows(model, rows, objective, trait, config, dirs.get("g_trait"))

    scores = {"labels": rows.labels, **a_scores, **({"oracle_log_ratio": oracle} if oracle is not None else {}),
              **path_scores, **{"path_groups/delta_T": v for v in path_groups.values()},
              **{f"groups/{n}": grads.by_direction[n] for n in named}}
    return AlignmentResult(
        command=command, meta=alignment_meta(config, trait, rows, model, tokens.jvp_gap, teacher), detection=detection,
        path=path, groups=grads.groups, group_diff=groups.diff, group_se=groups.se, positions=tokens.positions,
        token_diff=tokens.token_diff, token_reference=tokens.token_reference, prediction=prediction,
        group_mean=groups.mean, token_table=tokens.token_table, token_correlation=tokens.token_correlation, scores=scores,
    )


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



__all__ = [
    "AlignmentConfig", "AlignmentResult", "NO_UNEMBED", "group_figure_over_seeds", "run_alignment", "screen_rows",
    "detection_over_seeds",
]
