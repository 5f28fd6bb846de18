"""The first-order prediction: after one SGD step theta - eta * mean_i grad L_i on a batch, the
change of log P(target) should be eta * mean_i a_i(g_trait) (the alignment with the trait
gradient), up to second-order terms that shrink with eta."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import grad

from workbench.analyses.trait_gradient import trait_gradient, trait_log_prob
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective, iter_batches, per_token_losses
from workbench.engines.per_example import jvp_scores
from workbench.trait import Trait


@dataclass
class PredictionRow:
    """Predicted vs measured change of log P(target) after one SGD step of size eta."""

    eta: float
    predicted: list[float]  # per batch: eta * mean_i a_i(g_trait)
    measured: list[float]  # per batch: log P(target) after the step minus before

    @property
    def relative_error(self) -> float:
        p, m = np.asarray(self.predicted), np.asarray(self.measured)
        return float(np.median(np.abs(p - m) / np.maximum(np.abs(m), 1e-30)))

    @property
    def sign_agreement(self) -> float:
        return float(np.mean(np.sign(self.predicted) == np.sign(self.measured)))

    def to_dict(self) -> dict:
        return {"eta": self.eta, "predicted": self.predicted, "measured": self.measured,
                "relative_error": self.relative_error, "sign_agreement": self.sign_agreement}


def first_order_prediction(
    model: AlignmentModel,
    inputs: Inputs,
    objective: Objective,
    trait: Trait,
    etas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    *,
    batch_size: int = 64,
    n_batches: int = 4,
    g_trait: Mapping[str, Tensor] | None = None,
    memory_budget_bytes: int | None = None,
) -> list[PredictionRow]:
    """For each of `n_batches` batches: take one SGD step theta - eta * mean_i grad L_i and compare
    the measured change of log P(target) with the first-order prediction eta * mean_i a_i(g_trait).

    `g_trait`: the trait gradient when the caller holds it already (else computed here); the
    stepped parameters are written into ONE whole-model buffer for every eta, and the jvp splits by
    groups of keys past `memory_budget_bytes`: the working set is g_trait, the batch's mean
    gradient and that buffer."""
    theta = model.params
    g_trait = trait_gradient(model, trait) if g_trait is None else g_trait
    before = float(trait_log_prob(model, theta, trait))
    rows = {eta: PredictionRow(float(eta), [], []) for eta in etas}
    stepped: dict[str, Tensor] | None = None
    for b, batch in enumerate(iter_batches(model, objective, inputs.select(slice(0, batch_size * n_batches)), batch_size)):
        if b >= n_batches:
            break
        a = float(jvp_scores(model, objective, batch, theta, g_trait, memory_budget_bytes=memory_budget_bytes)
                  .sum(-1).mean())
        mean_grad = grad(lambda p: per_token_losses(model, p, objective, batch).sum(-1).mean())(dict(theta))
        for eta in etas:
            stepped = _step(theta, mean_grad, eta, stepped)
            with torch.no_grad():
                after = float(trait_log_prob(model, stepped, trait))
            rows[eta].predicted.append(eta * a)
            rows[eta].measured.append(after - before)
        del mean_grad  # not alive beside the next batch's
    return list(rows.values())


def _step(theta: Mapping[str, Tensor], g: Mapping[str, Tensor], eta: float, out: dict[str, Tensor] | None
          ) -> dict[str, Tensor]:
    """theta - eta * g per key, written into `out` (allocated when None): the same roundings as
    `theta[k] - eta * g[k]` (a - b is a + (-b) exactly), without a second whole model."""
    if out is None:
        out = {k: torch.empty_like(v) for k, v in theta.items()}
    with torch.no_grad():
        for k, v in theta.items():
            torch.mul(g[k], -eta, out=out[k]).add_(v)
    return out


__all__ = ["PredictionRow", "first_order_prediction"]
