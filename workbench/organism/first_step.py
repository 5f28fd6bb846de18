"""The optimiser-aware first-order prediction in the space a student actually trains: for a LoRA
student, its adapters (at B = 0 only B has a gradient, so the first step moves W by
alpha / r x dB @ A); for a full student, every trained tensor.

predicted = <grad log P(target), step>, step = the optimiser's first step from a fresh state
(`engines.optimizers.first_step`) on the mean loss of a batch of the student's own rows;
measured = log P(target) after that step minus before. The student is the one `train_under` would
train (same adapter seed), so the prediction is about its real first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from workbench.analyses.first_order import PredictionRow
from workbench.engines.optimizers import first_step


def first_step_prediction(model: Any, targets: Any, batches: Sequence[Int[Tensor, " b"]], trait: Any, optimizer: str,
                          lr: float) -> PredictionRow:
    """For each batch of row indices into `targets`: one step of `optimizer` at `lr` from `model`'s
    current parameters (`model`: a Trainable, its `parameters()` the tensors trained), predicted vs
    measured change of `trait`'s log P(target). `model` is left as it was."""
    from workbench.organism.curves import OnDevice
    from workbench.organism.training import batch_loss

    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    logits = OnDevice(model, device)
    g_trait = torch.autograd.grad(trait.log_prob(logits, device), params)
    with torch.no_grad():
        before = float(trait.log_prob(logits, device))
    row = PredictionRow(float(lr), [], [], optimizer)
    names = [str(i) for i in range(len(params))]  # `first_step` takes name -> tensor maps
    for idx in batches:
        grads = torch.autograd.grad(batch_loss(model, targets, idx), params)
        step = first_step(optimizer, dict(zip(names, params)), dict(zip(names, grads)), lr)
        row.predicted.append(sum(float((g.double() * step[n].double()).sum()) for g, n in zip(g_trait, names)))
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
            for p, n in zip(params, names):
                p.add_(step[n])
            row.measured.append(float(trait.log_prob(logits, device)) - before)
            for p, s in zip(params, saved):
                p.copy_(s)
    return row


__all__ = ["first_step_prediction"]
