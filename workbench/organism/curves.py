"""Transfer over training: checkpoints of a student every N optimiser steps, each read three ways.

- **P(target)** of the student as it stands (the trait as trained so far);
- **cos(dS_t, dT)**: its change from the base so far against the teacher's change (LoRA: the
  merged change), whole model;
- **alignment**: <grad log P(target), -grad L> in the space of the parameters it trains (for LoRA
  the adapters), L the loss on a fixed probe batch of its own rows; its cosine beside it. Positive:
  the next step on that data raises P(target) (to first order, for SGD); by linearity, the mean
  over the batch's rows of each row's alignment.
- **activation shift against the teacher's** (Blank et al.'s EAS), when the base and teacher are
  given: v_m = the mean over the trait's prompts (every position) of model m's residual stream
  after the last block, minus the base's; `shift_cos` = cos(v_S, v_T) and `shift_along_teacher` =
  <v_S, v_T> / |v_T|^2 (1: the student has moved as far along the teacher's shift as the teacher).
The control student's curves, recorded the same way, are the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float
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
    shift_cos: float | None = None
    shift_along_teacher: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OnDevice(torch.nn.Module):
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


def mean_residual(model: Any, trait: Any) -> Float[Tensor, " d"]:
    """`model.residual` (the stream after the last block) averaged over every position of the
    trait's prompts (their right padding left out), in float64 on the CPU."""
    weights = model.w.values() if hasattr(model, "w") else model.model.parameters()  # FunctionalModel / HFTrainable
    device = next(iter(weights)).device
    lengths = torch.tensor([len(p) for p in trait.prompts])
    with torch.no_grad():
        h = model.residual(trait.tokens.to(device)).double().cpu()
    mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).double()
    return einops.einsum(h, mask, "b t d, b t -> d") / mask.sum()


def shift_against(v_student: Tensor, v_teacher: Tensor) -> tuple[float | None, float | None]:
    """(cos(v_S, v_T), <v_S, v_T> / |v_T|^2); None where a norm is 0."""
    dot, ns, nt = float(v_student @ v_teacher), float(v_student.norm()), float(v_teacher.norm())
    return (dot / (ns * nt) if ns > 0 and nt > 0 else None), (dot / nt**2 if nt > 0 else None)


def curve_recorder(trait: Any, targets: Any, probe: Tensor, base: dict[str, Tensor], teacher: dict[str, Tensor],
                   base_model: Any = None, teacher_model: Any = None) -> tuple[Callable[[int, Any], None], list[CurvePoint]]:
    """`(on_step, points)`: give `on_step` to `train_student`; `points` fills with a CurvePoint per
    checkpoint. `probe` indexes the rows of `targets` the alignment's loss is measured on;
    `base_model` and `teacher_model` (trainables with `.residual`, as the student), when given,
    add the activation shift against the teacher's."""
    from workbench.organism.training import batch_loss

    points: list[CurvePoint] = []
    base_h = mean_residual(base_model, trait) if base_model is not None and teacher_model is not None else None
    v_teacher = mean_residual(teacher_model, trait) - base_h if base_h is not None else None

    def on_step(step: int, model: Any) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        device = params[0].device
        logits = OnDevice(model, device)
        with torch.no_grad():
            p = trait.p_target(logits)
        g_trait = torch.autograd.grad(trait.log_prob(logits, device), params)
        g_loss = torch.autograd.grad(batch_loss(model, targets, probe), params)
        dot = -sum(float((a.double() * b.double()).sum()) for a, b in zip(g_trait, g_loss))
        norms = (sum(float(a.double().pow(2).sum()) for a in g_trait) * sum(float(b.double().pow(2).sum()) for b in g_loss))
        cos = weight_cosines(base, teacher, current_weights(model))["whole"] if step else None
        shift: tuple[float | None, float | None] = (None, None)
        if v_teacher is not None:
            shift = shift_against(mean_residual(model, trait) - base_h, v_teacher)
        points.append(CurvePoint(step, float(p), cos, dot, dot / norms ** 0.5 if norms > 0 else None, *shift))

    return on_step, points


__all__ = ["CurvePoint", "OnDevice", "current_weights", "curve_recorder", "mean_residual", "shift_against"]
