"""Transfer over training: checkpoints of a student every N optimiser steps, each read three ways.

- **P(target)** of the student as it stands (the trait as trained so far);
- **cos(dS_t, dT)**: its change from the base so far against the teacher's change (LoRA: the
  merged change), whole model;
- **alignment**: <grad log P(target), -grad L> in the space of the parameters it trains (for LoRA
  the adapters), L the loss on a fixed probe batch of its own rows; its cosine beside it. Positive:
  the next step on that data raises P(target) (to first order, for SGD); by linearity, the mean
  over the batch's rows of each row's alignment.
The control student's curves, recorded the same way, are the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from workbench.organism.regimes import weight_cosines


@dataclass
class CurvePoint:
    """One checkpoint of a student in training."""

    step: int
    p_target: float
    cos_teacher: float | None
    alignment: float
    alignment_cos: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _OnDevice(torch.nn.Module):
    """A tokens -> logits callable as a module on `device` (what `Trait` reads the device from)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], device: torch.device):
        super().__init__()
        self.fn = fn
        self.anchor = torch.nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fn(tokens)


def current_weights(model: Any) -> dict[str, Tensor]:
    """Clean-keyed float32 CPU weights of a student mid-training: a FunctionalModel's `w`, a
    Hugging Face model's state dict (a peft model's merged into a copy)."""
    if hasattr(model, "w"):  # workbench.engines.functional.FunctionalModel
        return {k: v.detach().float().cpu() for k, v in model.w.items()}
    inner = model.model
    if hasattr(inner, "merge_and_unload"):  # peft: the merged change, the adapter left as it was
        inner = copy.deepcopy(inner).merge_and_unload()
    return {k: v.detach().float().cpu() for k, v in inner.state_dict().items()}


def curve_recorder(trait: Any, targets: Any, probe: Tensor, base: dict[str, Tensor], teacher: dict[str, Tensor]
                   ) -> tuple[Callable[[int, Any], None], list[CurvePoint]]:
    """`(on_step, points)`: give `on_step` to `train_student`; `points` fills with a CurvePoint per
    checkpoint. `probe` indexes the rows of `targets` the alignment's loss is measured on."""
    from workbench.organism.training import batch_loss

    points: list[CurvePoint] = []

    def on_step(step: int, model: Any) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        device = params[0].device
        logits = _OnDevice(model, device)
        with torch.no_grad():
            p = trait.p_target(logits)
        g_trait = torch.autograd.grad(trait.log_prob(logits, device), params)
        g_loss = torch.autograd.grad(batch_loss(model, targets, probe), params)
        dot = -sum(float((a.double() * b.double()).sum()) for a, b in zip(g_trait, g_loss))
        norms = (sum(float(a.double().pow(2).sum()) for a in g_trait) * sum(float(b.double().pow(2).sum()) for b in g_loss))
        cos = weight_cosines(base, teacher, current_weights(model))["whole"] if step else None
        points.append(CurvePoint(step, float(p), cos, dot, dot / norms ** 0.5 if norms > 0 else None))

    return on_step, points


__all__ = ["CurvePoint", "current_weights", "curve_recorder"]
