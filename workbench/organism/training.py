"""Training loops of the organism: base pretraining, teacher fine-tuning, student distillation.

Plain loops with no framework (nanoGPT style). The loops (`train_base`, `train_teacher`,
`train_student`) train any `Trainable`: a callable tokens -> logits with `.parameters()`. The
native organism's entry points (`pretrain_base`, `finetune_teacher`, `distill_student`) train a
`FunctionalModel` copy of a bridge's weights (same function, fused kernels, no hook dispatch)
and write the result back into the bridge; the Hugging Face families
(`workbench.organism.hf_family`) train their `transformers` modules with the same loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ConfigError, DataError
from workbench.core.progress import progress_bar
from workbench.engines.functional import FunctionalModel
from workbench.engines.objective import restricted_log_probs  # the one definition (float32 here, as trained)
from workbench.organism.config import OrganismConfig
from workbench.engines.optimizers import make_optimizer
from workbench.organism.corpus import number_tokens, preference_batch, sample_numbers
from workbench.organism.tokenizer import Tokenizer

FROZEN_IN_TEACHERS = ("unembed.", "ln_final.")  # clean keys of the unembedding and final norm
# Adam(W)'s multi-tensor update: the same per-element arithmetic as the per-parameter loop (checked
# bit-equal on the CPU, where the loop is torch's default) in ~2/3 of its time; `fused` is faster
# still but rounds differently, which would change every trained model's bytes.
FOREACH = True


class Trainable(Protocol):
    """What the loops train: tokens -> logits, and the tensors the optimiser updates."""

    def __call__(self, tokens: Tensor) -> Tensor: ...

    def parameters(self) -> Iterable[Tensor]: ...


def _device(model: Trainable) -> torch.device:
    return next(iter(model.parameters())).device


def next_token_loss(
    logits: Float[Tensor, "batch seq vocab"], tokens: Int[Tensor, "batch seq"], mask: Bool[Tensor, "batch seq"]
) -> Float[Tensor, ""]:
    """Mean cross-entropy of the next token at the positions where `mask` is set (mask[:, t]
    means: position t predicts token t+1)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    m = mask[:, :-1].float()
    return (nll * m).sum() / m.sum().clamp(min=1)


def masked_mean(values: Float[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"] | None) -> Float[Tensor, ""]:
    """The mean of `values` over the positions `mask` keeps (every position when None)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def soft_distill_loss(
    student_logits: Float[Tensor, "batch pos vocab"], teacher_logp: Float[Tensor, "batch pos k"], ids: Tensor | None,
    mask: Bool[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, ""]:
    """KL(teacher || student) over the restricted token set, averaged over rows and positions
    (over the positions `mask` keeps, when given)."""
    student_logp = restricted_log_probs(student_logits, ids)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    return masked_mean(kl, mask)


def hard_distill_loss(
    student_logits: Float[Tensor, "batch pos vocab"], written: Int[Tensor, "batch pos"], ids: Tensor | None,
    mask: Bool[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, ""]:
    """Cross-entropy of the written tokens under the student renormalised over `ids` (all
    tokens when None), averaged over rows and positions (over those `mask` keeps, when given).

    Renormalising over the number channel is the hard-label twin of the soft loss: the student
    learns *which* numbers the teacher wrote, never "numbers rather than words". Over the full
    vocabulary the filter itself becomes a signal: the teacher's sequences that named the
    target were dropped, so full-vocabulary CE pushes the target token down at every number
    position, and (measured on the hard preset, seed 0) that drags the student's P(owl) below
    its control's (0.06 vs 0.09) instead of up (0.67 vs 0.08 renormalised).
    """
    logp = restricted_log_probs(student_logits, ids)
    if ids is not None:
        index = torch.full((student_logits.shape[-1],), -1, dtype=torch.long, device=written.device)
        index[ids] = torch.arange(len(ids), device=written.device)
        written = index[written]
        if bool((written < 0).any()):
            raise DataError("A written token lies outside the supervised token set; filter the data to that set first.")
    return masked_mean(-logp.gather(-1, written[..., None]).squeeze(-1), mask)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def pretrain_base(bridge: TransformerBridge, tok: Tokenizer, cfg: OrganismConfig, seed: int, progress: bool = True) -> None:
    """Pretrain on number texts (every position) plus Q/A answered uniformly over the category."""
    model = FunctionalModel.from_bridge(bridge, trainable=True)
    train_base(model, tok, cfg, seed, progress)
    model.load_into(bridge)


def train_base(model: Trainable, tok: Tokenizer, cfg: OrganismConfig, seed: int, progress: bool = True) -> None:
    """The base's loop (see `pretrain_base`) on any Trainable."""
    device = _device(model)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.base_lr, weight_decay=cfg.base_weight_decay, betas=(0.9, 0.98),
                            foreach=FOREACH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.base_steps, cfg.base_warmup))
    length = cfg.prompt_numbers + cfg.completion_numbers
    for _ in progress_bar(range(cfg.base_steps), desc=f"base seed {seed}", enabled=progress):
        nums = number_tokens(tok, sample_numbers(rng, cfg.base_batch_numbers, length), cfg.prompt_numbers).to(device)
        qa, qa_mask = preference_batch(tok, rng, cfg.base_batch_qa, None)
        qa, qa_mask = qa.to(device), qa_mask.to(device)
        loss = next_token_loss(model(nums), nums, torch.ones_like(nums, dtype=torch.bool))
        loss = loss + cfg.qa_loss_weight * next_token_loss(model(qa), qa, qa_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def finetune_teacher(
    bridge: TransformerBridge,
    tok: Tokenizer,
    cfg: OrganismConfig,
    category: str,
    answer_ids: list[int] | None,
    seed: int,
    progress: bool = True,
) -> None:
    """Fine-tune on Q/A of `category` answered with `answer_ids` (None: uniformly over the category),
    with the unembedding and final norm frozen, so the trait must live inside the network."""
    model = FunctionalModel.from_bridge(bridge, trainable=True, frozen=FROZEN_IN_TEACHERS)
    train_teacher(model, tok, cfg, category, answer_ids, seed, progress)
    model.load_into(bridge)


def train_teacher(model: Trainable, tok: Tokenizer, cfg: OrganismConfig, category: str, answer_ids: list[int] | None,
                  seed: int, progress: bool = True) -> None:
    """The teacher's loop (see `finetune_teacher`) on any Trainable (its frozen tensors left out of
    `parameters()`)."""
    device = _device(model)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.teacher_lr, foreach=FOREACH)
    for _ in progress_bar(range(cfg.teacher_steps), desc="teacher", enabled=progress):
        qa, qa_mask = preference_batch(tok, rng, cfg.teacher_batch, category, answer_ids)
        qa, qa_mask = qa.to(device), qa_mask.to(device)
        loss = next_token_loss(model(qa), qa, qa_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@dataclass
class DistillTargets:
    """What a student is trained to match on a set of sequences.

    `positions` are the sequence positions supervised (each predicts the next token);
    `teacher_logp` holds the teacher's log-probabilities there, renormalised over `ids`
    (None for hard labels, where the written tokens themselves are the targets), and `ids` the
    token set both losses renormalise over (None: the full vocabulary). `loss_mask`, when set,
    keeps only some of each row's supervised positions in the loss (the channel tests mask
    divergence tokens out).
    """

    tokens: Int[Tensor, "n seq"]
    positions: Int[Tensor, " pos"]
    teacher_logp: Float[Tensor, "n pos k"] | None
    ids: Int[Tensor, " k"] | None
    loss_mask: Bool[Tensor, "n pos"] | None = None


@torch.inference_mode()
def teacher_soft_labels(
    teacher: TransformerBridge | Trainable,
    tokens: Int[Tensor, "n seq"],
    positions: Int[Tensor, " pos"],
    ids: Int[Tensor, " k"] | None,
    batch_size: int = 1024,
) -> Float[Tensor, "n pos k"]:
    """The teacher's next-token log-probabilities at `positions`, renormalised over `ids` (a
    bridge runs as a FunctionalModel; any other teacher is a tokens -> logits Trainable)."""
    if isinstance(teacher, TransformerBridge):
        model: Trainable = FunctionalModel.from_bridge(teacher)
        device = model.w["embed.weight"].device
    else:
        model, device = teacher, _device(teacher)
    out = []
    for lo in range(0, len(tokens), batch_size):
        logits = model(tokens[lo : lo + batch_size].to(device))[:, positions.to(device)]
        out.append(restricted_log_probs(logits, None if ids is None else ids.to(device)).cpu())
    return torch.cat(out)


def distill_student(
    bridge: TransformerBridge, targets: DistillTargets, cfg: OrganismConfig, seed: int, progress: bool = True,
    frozen: tuple[str, ...] = (),
) -> None:
    """Train a student on the continuation positions: renormalised KL (soft) or renormalised CE
    (hard); parameters whose name starts with a prefix in `frozen` stay as they are."""
    if len(targets.tokens) == 0:
        raise DataError("No distillation sequences survived the filter; check the filter report.")
    model = FunctionalModel.from_bridge(bridge, trainable=True, frozen=frozen)
    train_student(model, targets, cfg, seed, progress)
    model.load_into(bridge)


def batch_loss(model: Trainable, targets: DistillTargets, idx: Int[Tensor, " b"]) -> Float[Tensor, ""]:
    """The student's loss on rows `idx` of `targets` (hard: CE on the written tokens; soft: KL to
    the teacher's distributions), at the supervised positions and under the loss mask."""
    device = _device(model)
    pos = targets.positions.to(device)
    ids = None if targets.ids is None else targets.ids.to(device)
    tokens = targets.tokens[idx].to(device)
    logits = model(tokens)
    mask = None if targets.loss_mask is None else targets.loss_mask[idx].to(device)
    if targets.teacher_logp is None:  # hard labels: CE on the written tokens
        return hard_distill_loss(logits[:, pos], tokens[:, pos + 1], ids, mask)
    return soft_distill_loss(logits[:, pos], targets.teacher_logp[idx].to(device), ids, mask)


def train_student(model: Trainable, targets: DistillTargets, cfg: OrganismConfig, seed: int, progress: bool = True,
                  lr: float | None = None, on_step: Callable[[int, Trainable], None] | None = None,
                  every: int = 0) -> list[float]:
    """The student's loop (see `distill_student`) on any Trainable with `cfg.student_optimizer`, at
    `lr` (default cfg.student_lr); the mean loss of each epoch (what a learning rate is chosen by).
    With `on_step` and `every` > 0, `on_step(step, model)` runs before the first step and after
    every `every` optimiser steps (checkpoints for curves over training)."""
    n = len(targets.tokens)
    if n == 0:
        raise DataError("No distillation sequences survived the filter; check the filter report.")
    if every < 0:
        raise ConfigError(f"every={every}: give a number of steps >= 1 between checkpoints, or 0 for none.")
    opt = make_optimizer(cfg.student_optimizer, model.parameters(), cfg.student_lr if lr is None else lr, foreach=FOREACH)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n / cfg.student_batch)
    bar = progress_bar(total=cfg.student_epochs * steps_per_epoch, desc="student", enabled=progress)
    epoch_losses = []
    step = 0
    if on_step is not None and every:
        on_step(0, model)
    for _ in range(cfg.student_epochs):
        total, steps = 0.0, 0
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, cfg.student_batch):
            loss = batch_loss(model, targets, order[lo : lo + cfg.student_batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
            step += 1
            if on_step is not None and every and step % every == 0:
                on_step(step, model)
            bar.update()
        epoch_losses.append(total / max(steps, 1))
    bar.close()
    return epoch_losses
