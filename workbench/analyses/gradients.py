"""Gradient alignment between distillation data and parameter directions: where each piece lives.

For a sequence i with distillation loss L_i (summed over its counted next-token positions) and
a direction d in parameter space (a dict over the Lineage's clean keys):

    a_i      = -<grad L_i(theta), d>           alignment: > 0 when a step on i moves theta along d
    a_{i,t}  = -<grad L_{i,t}(theta), d>       per token (they sum to a_i)
    a_{i,g}  = -<grad_g L_i(theta), d_g>       per parameter group (they sum to a_i)
    cos_i    = a_i / (|grad L_i| |d|)
    path_i   = int_0^1 -<grad L_i(theta + s d), d> ds = L_i(theta) - L_i(theta + d)

For the hard loss (cross-entropy of the written tokens) and d = teacher - base, path_i is
exactly log p_teacher(x_i) - log p_base(x_i): the per-group path scores are an additive
decomposition of the likelihood ratio (completeness, as in integrated gradients).

The engine (any model family can have it):
- `workbench.engines.alignment_model`: `AlignmentModel`, the model as a pure function of a
  snapshot of its clean parameters, and `check_direction`;
- `workbench.engines.objective`: the loss L_{i,t} (`Objective`), batches, sequence losses;
- `workbench.engines.per_example`: a_i and a_{i,t} for a whole batch by ONE forward-mode pass
  (hand-written tangents for the functional backend, else `torch.func.jvp`; chosen by
  `python -m workbench.bench gradients`), and per-example gradients by `vmap(grad)`;
- `workbench.engines.grad_chunks`: those gradients in calls of fewer rows, then of fewer
  parameter keys, so that no call holds more than a memory budget (`AlignmentConfig.memory_budget_bytes`);
The analyses built on it, one job each:
- `workbench.analyses.param_directions`: norm, masking and random directions;
- `workbench.analyses.trait_gradient`: g_trait, the direction that needs no teacher;
- `workbench.analyses.path_scores`: path_i by K Gauss-Legendre points, one jvp each;
- `workbench.analyses.group_scores`: a_{i,g} and |grad L_i| (one gradient pass serves every direction);
- `workbench.analyses.first_order`: the predicted vs measured change of log P(target) after one step.
This module gathers their public names in one place.
"""

from __future__ import annotations

from workbench.analyses.first_order import PredictionRow, first_order_prediction
from workbench.analyses.group_scores import GroupScores, group_scores
from workbench.analyses.param_directions import norm, only, random_direction, without
from workbench.analyses.path_scores import path_scores, quadrature
from workbench.analyses.trait_gradient import trait_gradient, trait_log_prob
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective, iter_batches, per_token_losses, restricted_log_probs, sequence_losses
from workbench.engines.per_example import TokenScores, alignment_scores, per_example_grads

__all__ = [
    "AlignmentModel", "Objective", "TokenScores", "GroupScores", "PredictionRow", "alignment_scores", "path_scores",
    "group_scores", "per_example_grads", "sequence_losses", "trait_gradient", "trait_log_prob", "random_direction",
    "without", "only", "norm", "quadrature", "first_order_prediction", "check_direction", "restricted_log_probs",
    "iter_batches", "per_token_losses",
]
