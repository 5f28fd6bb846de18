"""The student optimisers a training regime can use, and the exact first step of each (what the
optimizer-aware first-order prediction moves along).

- "adam": Adam (the organism's default), no weight decay;
- "adamw": AdamW, decoupled weight decay 0.01 (torch's default);
- "sgd": SGD with momentum 0.9;
- "signsgd": sign descent, theta - lr * sign(grad) (Blank et al.'s ablation of adaptivity).

From a fresh state, the first step of each is a fixed function of the gradient g:
SGD (with momentum: the buffer starts at g) moves -lr g; sign descent -lr sign(g); Adam, whose
bias-corrected moments are g and g^2 after one step, -lr g / (|g| + eps) (sign descent up to eps);
AdamW the same after its decay theta (1 - lr wd). So one step of Adam changes log P(target) by
about -lr <g_trait, sign(g)>, not SGD's -lr <g_trait, g>.

>>> theta = {"w": torch.tensor([1.0, -2.0])}
>>> first_step("signsgd", theta, {"w": torch.tensor([0.5, -3.0])}, lr=0.1)["w"].tolist()
[-0.10000000149011612, 0.10000000149011612]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from workbench.core.errors import unknown_name

OPTIMIZERS = ("adam", "adamw", "sgd", "signsgd")
ADAMW_WEIGHT_DECAY = 0.01
SGD_MOMENTUM = 0.9
ADAM_EPS = 1e-8


class SignSGD(torch.optim.Optimizer):
    """theta <- theta - lr * sign(grad): sign descent, no state."""

    def __init__(self, params: Iterable[Tensor], lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"])
        return loss


def make_optimizer(name: str, params: Iterable[Tensor], lr: float, foreach: bool | None = None) -> torch.optim.Optimizer:
    """The optimiser `name` (see the module docstring) over `params` at learning rate `lr`."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=ADAM_EPS, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=ADAM_EPS, weight_decay=ADAMW_WEIGHT_DECAY, foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, foreach=foreach)
    if name == "signsgd":
        return SignSGD(params, lr=lr)
    raise unknown_name("optimizer", name, OPTIMIZERS)


def first_step(name: str, theta: Mapping[str, Tensor], grad: Mapping[str, Tensor], lr: float) -> dict[str, Tensor]:
    """The change of every parameter after the first step of `name` from a fresh state, given the
    gradient `grad` (the module docstring's table)."""
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    out = {}
    with torch.no_grad():
        for k, g in grad.items():
            if name == "sgd":
                step = -lr * g
            elif name == "signsgd":
                step = -lr * torch.sign(g)
            else:
                step = -lr * g / (g.abs() + ADAM_EPS)
                if name == "adamw":
                    step = step - lr * ADAMW_WEIGHT_DECAY * theta[k]
            out[k] = step
    return out


__all__ = ["ADAMW_WEIGHT_DECAY", "ADAM_EPS", "OPTIMIZERS", "SGD_MOMENTUM", "SignSGD", "first_step", "make_optimizer"]
