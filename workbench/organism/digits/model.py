"""The digits MLP: 64 -> hidden x n_layers -> (10 + m) logits, with TransformerLens hook points.

Hook names and parameter names are listed in the package docstring (`workbench.organism.digits`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.core.models import resolve_device
from workbench.organism.digits.config import D_IN, N_CLASSES, DigitsConfig


class HookedLinear(nn.Linear):
    """A hidden layer: Linear with `hook_pre` (before ReLU) and `hook_post` (after ReLU)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        return self.hook_post(F.relu(self.hook_pre(super().forward(x))))


class DigitsMLP(HookedRootModule):
    """MLP 64 -> hidden x n_layers -> (10 + m) with hook points; see the module docstring for names."""

    def __init__(self, m: int = 10, hidden: int = 256, n_layers: int = 2) -> None:
        super().__init__()
        self.m, self.hidden, self.n_layers = m, hidden, n_layers
        dims = [D_IN] + [hidden] * n_layers
        self.hook_in = HookPoint()
        self.layers = nn.ModuleList(HookedLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.unembed = nn.Linear(hidden, N_CLASSES + m)
        self.hook_logits = HookPoint()
        self.setup()

    @property
    def arch(self) -> dict[str, int]:
        """What it takes to rebuild this module (stored in saved files)."""
        return {"m": self.m, "hidden": self.hidden, "n_layers": self.n_layers}

    @property
    def device(self) -> torch.device:
        return self.unembed.weight.device

    def forward(self, x: Float[Tensor, "batch 64"]) -> Float[Tensor, "batch n_logits"]:
        h = self.hook_in(x)
        for layer in self.layers:
            h = layer(h)
        return self.hook_logits(self.unembed(h))

    def init_weights(self, seed: int) -> DigitsMLP:
        """Seeded PyTorch-default init (Kaiming-uniform weights, uniform biases), drawn on CPU."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for lin in [*self.layers, self.unembed]:
                w = torch.empty(lin.weight.shape)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                bound = 1.0 / math.sqrt(lin.in_features)
                b = torch.empty(lin.bias.shape).uniform_(-bound, bound, generator=g)
                lin.weight.copy_(w)
                lin.bias.copy_(b)
        return self

    def clone(self) -> DigitsMLP:
        """A fresh module with the same weights (no shared hooks or tensors)."""
        other = DigitsMLP(**self.arch).to(self.device)
        other.load_state_dict(self.state_dict())
        return other


def regular_logits(logits: Float[Tensor, "batch n_logits"]) -> Float[Tensor, "batch 10"]:
    return logits[..., :N_CLASSES]


def aux_logits(logits: Float[Tensor, "batch n_logits"]) -> Float[Tensor, "batch m"]:
    return logits[..., N_CLASSES:]


def hook_names(model: DigitsMLP) -> list[str]:
    """All hook names of a model, in forward order."""
    names = ["hook_in"]
    for i in range(model.n_layers):
        names += [f"layers.{i}.hook_pre", f"layers.{i}.hook_post"]
    return names + ["hook_logits"]


def make_model(config: DigitsConfig, init_seed: int, device: str | torch.device = "cpu") -> DigitsMLP:
    """An initialised model for `config`, seeded on CPU so it is the same on every device."""
    model = DigitsMLP(config.m, config.hidden, config.n_layers).init_weights(init_seed)
    return model.to(resolve_device(device))
