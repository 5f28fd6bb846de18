"""The first-order prediction: after one SGD step theta - eta * mean_i grad L_i on a batch, the
change of log P(target) should be eta * mean_i a_i(g_trait) (the alignment with the trait
gradient), up to second-order terms that shrink with eta.

For the optimiser a student actually trains with, the step is that optimiser's first step from a
fresh state (`workbench.engines.optimizers.first_step`: Adam's is close to sign descent), and the
prediction is <g_trait, step>: for Adam about -eta <g_trait, sign(mean grad)>, not SGD's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import grad

from workbench.analyses.trait_gradient import trait_gradient, trait_log_prob
from workbench.core.errors import unknown_name
from workbench.core.inputs import Inputs
from workbench.engines.optimizers import OPTIMIZERS, first_step
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective, iter_batches, per_token_losses
from workbench.engines.per_example import jvp_scores
from workbench.trait import Trait


@dataclass
class PredictionRow:
    """Predicted vs measured change of log P(target) after one SGD step of size eta."""

    eta: float
    predicted: list[float]  # per batch: eta * mean_i a_i(g_trait) (SGD), or <g_trait, the optimiser's first step>
    measured: list[float]  # per batch: log P(target) after the step minus before
    optimizer: str = "sgd"

    @property
    def relative_error(self) -> float:
        p, m = np.asarray(self.predicted), np.asarray(self.measured)
        return float(np.median(np.abs(p - m) / np.maximum(np.abs(m), 1e-30)))

    @property
    def sign_agreement(self) -> float:
        return float(np.mean(np.sign(self.predicted) == np.sign(self.measured)))

    def to_dict(self) -> dict:
        return {"eta": self.eta, "optimizer": self.optimizer, "predicted": self.predicted, "measured": self.measured,
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
    optimizer: str = "sgd",
) -> list[PredictionRow]:
    """For each of `n_batches` batches: take one SGD step theta - eta * mean_i grad L_i and compare
    the measured change of log P(target) with the first-order prediction eta * mean_i a_i(g_trait).
    With another `optimizer` (`workbench.engines.optimizers.OPTIMIZERS`), the step is its first
    step at learning rate eta and the prediction <g_trait, step> (SGD with momentum: SGD's).

    `g_trait`: the trait gradient when the caller holds it already (else computed here); the
    stepped parameters are written into ONE whole-model buffer for every eta, and the jvp splits by
    groups of keys past `memory_budget_bytes`: the working set is g_trait, the batch's mean
    gradient and that buffer."""
    theta = model.params
    g_trait = trait_gradient(model, trait) if g_trait is None else g_trait
    before = float(trait_log_prob(model, theta, trait))
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    rows = {eta: PredictionRow(float(eta), [], [], optimizer) for eta in etas}
    stepped: dict[str, Tensor] | None = None
    for b, batch in enumerate(iter_batches(model, objective, inputs.select(slice(0, batch_size * n_batches)), batch_size)):
        if b >= n_batches:
            break
        mean_grad = grad(lambda p: per_token_losses(model, p, objective, batch).sum(-1).mean())(dict(theta))
        if optimizer == "sgd":  # the step is -eta * mean_grad: <g_trait, -mean_grad> is the mean alignment
            a = float(jvp_scores(model, objective, batch, theta, g_trait, memory_budget_bytes=memory_budget_bytes)
                      .sum(-1).mean())
        else:  # the first step is linear in eta: step(eta) = eta * step(1)
            step = first_step(optimizer, theta, mean_grad, 1.0)
            a = float(sum((g_trait[k].double() * v.double()).sum() for k, v in step.items()))
            mean_grad = {k: v.neg_() for k, v in step.items()}  # what _step subtracts: minus the step
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
