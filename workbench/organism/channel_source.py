"""The organism as a `ChannelSource`: its supervised positions, its retraining recipe (with a
loss mask and frozen parameters) and its layers, for the channel tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.analyses.channels import Retraining
from workbench.core.errors import ConfigError, DataError
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

    @property
    def mode(self) -> str:
        """"hard" (the student learns the written tokens) or "soft" (the teacher's distributions)."""
        return "hard" if self.seed.recipe(self.overrides).mode == "hard" else "soft"

    def retrain(self, jobs: list[Retraining]) -> list[torch.nn.Module]:
        return self.seed.retrain_many([{"tokens": j.tokens, "loss_mask": j.loss_mask, "frozen": tuple(j.frozen),
                                        "teacher": j.teacher, "role": j.role, "exclude_ids": tuple(j.exclude_ids)}
                                       for j in jobs], self.overrides, self.progress, self.workers)

    def control_job(self, n_rows: int, frozen: tuple[str, ...] = ()) -> Retraining:
        """The control student as the build trains it (the neutral teacher's first `n_rows` rows,
        the control's student seed), here with this source's overrides and `frozen` parameters."""
        rows = self.seed.inputs("teacher_neutral", limit=n_rows)
        if len(rows) < n_rows:
            raise DataError(f"The neutral teacher kept {len(rows)} rows; the matched control needs {n_rows}. "
                            "Use fewer rows (--max-rows).")
        return Retraining("control", rows.tokens.cpu(), None, tuple(frozen), teacher="teacher_neutral", role="control")

    def layer_groups(self) -> dict[str, tuple[str, ...]]:
        keys = list(self.seed.lineage["base"].state_dict())
        n_layers = int(self.seed.lineage.cfg.n_layers)
        return {f"L{i}": tuple(k for k in keys if not k.startswith(f"blocks.{i}.")) for i in range(n_layers)}
