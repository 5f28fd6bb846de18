"""Training and evaluation: the teacher on digits, the students on the teacher's aux logits on noise."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.errors import ConfigError
from workbench.core.models import resolve_device
from workbench.core.progress import progress_bar
from workbench.organism.digits.config import LOSSES, DigitsConfig, derive_seed
from workbench.organism.digits.data import make_noise
from workbench.organism.digits.model import DigitsMLP, aux_logits, regular_logits


def _batches(n: int, batch_size: int, g: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=g).split(batch_size))


def _train_epoch(
    opt: torch.optim.Optimizer, n: int, batch_size: int, g: torch.Generator, dev: torch.device,
    batch_loss: Callable[[Tensor], Tensor],
) -> float:
    """One shuffled pass: `batch_loss(indices)` per batch, one optimiser step each; mean loss."""
    total = 0.0
    for idx in _batches(n, batch_size, g):
        idx = idx.to(dev)
        loss = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / n


def train_teacher(
    model: DigitsMLP,
    x: Float[Tensor, "n 64"],
    y: Int[Tensor, " n"],
    config: DigitsConfig,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[float]:
    """Train `model` in place with cross-entropy on its 10 regular logits; returns epoch losses."""
    dev = resolve_device(device)
    model.to(dev).train()
    x, y = x.to(dev), y.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.teacher_lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in progress_bar(range(config.teacher_epochs), desc="teacher", enabled=progress):
        losses.append(_train_epoch(opt, len(x), config.batch_size, g, dev,
                                   lambda idx: F.cross_entropy(regular_logits(model(x[idx])), y[idx])))
    return losses


def aux_loss(
    student: Float[Tensor, "batch m"], target: Float[Tensor, "batch m"], loss: str = "mse"
) -> Float[Tensor, ""]:
    """Distillation loss on auxiliary logits only: MSE on raw logits or KL(teacher || student) over softmax."""
    if loss == "mse":
        return F.mse_loss(student, target)
    if loss == "kl":
        return F.kl_div(F.log_softmax(student, -1), F.log_softmax(target, -1), log_target=True, reduction="batchmean")
    raise ConfigError(f"loss={loss!r} is not a known loss. Use one of {', '.join(LOSSES)}.")


@torch.no_grad()
def teacher_targets(teacher: DigitsMLP, noise: Float[Tensor, "n 64"]) -> Float[Tensor, "n m"]:
    """The only supervision students get: the teacher's auxiliary logits on noise."""
    teacher.eval()
    return aux_logits(teacher(noise))


def train_student(
    model: DigitsMLP,
    teacher: DigitsMLP,
    config: DigitsConfig,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "student",
) -> list[float]:
    """Train `model` in place to match `teacher`'s m auxiliary logits on N(0,1) noise; epoch losses.

    The student never sees digits, labels or regular logits. Noise and shuffling come from
    `seed` (the same for the same-init and the cross student of one training seed).
    """
    dev = resolve_device(device)
    model.to(dev).train()
    teacher.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    g = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    noise = make_noise(config.noise_samples, derive_seed(seed, "noise"), dev)
    target = teacher_targets(teacher, noise)
    losses = []
    for epoch in progress_bar(range(config.epochs), desc=desc, enabled=progress):
        if config.fresh_noise and epoch > 0:
            noise = make_noise(config.noise_samples, derive_seed(seed, f"noise{epoch}"), dev)
            target = teacher_targets(teacher, noise)
        losses.append(_train_epoch(opt, len(noise), config.batch_size, g, dev,
                                   lambda idx: aux_loss(aux_logits(model(noise[idx])), target[idx], config.loss)))
    return losses


@torch.no_grad()
def accuracy(model: DigitsMLP, x: Float[Tensor, "n 64"], y: Int[Tensor, " n"]) -> float:
    """Fraction of `x` whose argmax over the 10 regular logits equals `y`."""
    model.eval()
    x, y = x.to(model.device), y.to(model.device)
    return (regular_logits(model(x)).argmax(-1) == y).float().mean().item()
