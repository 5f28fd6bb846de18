"""The digits' inputs: scikit-learn's bundled 8x8 digits (no download) and seeded N(0, 1) noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.models import resolve_device
from workbench.organism.digits.config import D_IN


@dataclass
class DigitsData:
    """Standardized digits (scaler fit on the train split only)."""

    x_train: Float[Tensor, "n_train 64"]
    y_train: Int[Tensor, " n_train"]
    x_test: Float[Tensor, "n_test 64"]
    y_test: Int[Tensor, " n_test"]

    def to(self, device: str | torch.device) -> DigitsData:
        return DigitsData(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))


def load_data(
    test_fraction: float = 0.25, split_seed: int = 0, device: str | torch.device = "cpu"
) -> DigitsData:
    """scikit-learn's bundled digits, stratified split, standardized with train statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)  # constant pixels get scale 1, so they stay 0
    data = DigitsData(
        torch.tensor(scaler.transform(x_tr), dtype=torch.float32),
        torch.tensor(y_tr, dtype=torch.long),
        torch.tensor(scaler.transform(x_te), dtype=torch.float32),
        torch.tensor(y_te, dtype=torch.long),
    )
    return data.to(resolve_device(device))


def make_noise(n: int, seed: int, device: str | torch.device = "cpu") -> Float[Tensor, "n 64"]:
    """N(0, 1) inputs in standardized space, drawn on CPU so they are the same on every device."""
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)).to(resolve_device(device))
