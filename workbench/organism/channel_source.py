"""The organism as a `ChannelSource`: its supervised positions, its retraining recipe (with a
loss mask and frozen parameters) and its layers, for the channel tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.analyses.channels import Retraining
from workbench.core.errors import ConfigError
from workbench.organism.load import OrganismSeed


@dataclass
class OrganismChannelSource:
    """Retrains a seed's student as its build did (recipe, student seed), `workers` at a time."""

    seed: OrganismSeed
    overrides: dict[str, Any] | None = None
    progress: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        if self.seed.manifest.get("format") == "hf":
            raise ConfigError("The channel tests retrain native organism seeds; this seed is a Hugging Face family build. "
                              "Build a native organism (python -m workbench.organism) for them.")

    def supervised(self, tokens: Int[Tensor, "n seq"]) -> Bool[Tensor, "n seq"]:
        from workbench.organism.build import supervised_positions

        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        mask[:, supervised_positions(self.seed.recipe(self.overrides), tokens.shape[1])] = True
        return mask

    def retrain(self, jobs: list[Retraining]) -> list[torch.nn.Module]:
        return self.seed.retrain_many([(j.tokens, j.loss_mask, tuple(j.frozen)) for j in jobs], self.overrides,
                                      self.progress, self.workers)

    def layer_groups(self) -> dict[str, tuple[str, ...]]:
        keys = list(self.seed.lineage["base"].state_dict())
        n_layers = int(self.seed.lineage.cfg.n_layers)
        return {f"L{i}": tuple(k for k in keys if not k.startswith(f"blocks.{i}.")) for i in range(n_layers)}
