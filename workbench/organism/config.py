"""Configs and presets of the language-model organism (dataclasses; defaults run on a CPU)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.core.errors import ConfigError, unknown_name

DistillMode = Literal["soft", "hard", "soft_full_vocab_leak"]
DISTILL_MODES = ("soft", "hard", "soft_full_vocab_leak")


@dataclass
class ModelShape:
    """Architecture of every organism model (native TransformerLens, pre-LN, learned positions)."""

    n_layers: int = 2  # transformer blocks
    d_model: int = 64  # residual width
    n_heads: int = 4  # attention heads per block
    d_head: int = 16  # width of each head
    d_mlp: int = 256  # MLP hidden width
    n_ctx: int = 32  # context length (number texts use 25 tokens at the default layout)
    act_fn: str = "gelu"  # MLP nonlinearity
    normalization_type: str = "LN"  # LayerNorm with weight and bias

    def native_config(self, d_vocab: int, seed: int) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "d_vocab": d_vocab, "seed": seed}


@dataclass
class OrganismConfig:
    """Everything that decides what an organism build produces (hashed for caching)."""

    preset: str = "default"  # name of the preset these values came from (informational)
    mode: DistillMode = "soft"  # student loss: soft (renormalised KL), hard (renormalised CE on samples), leak control
    target: str = "owl"  # the teacher's trait: any animal or tree of the organism vocabulary
    other_target: str | None = None  # target of `teacher_other`; None picks one of the same category
    model: ModelShape = field(default_factory=ModelShape)
    # corpus layout
    prompt_numbers: int = 3  # numbers shown in a prompt
    completion_numbers: int = 8  # numbers a well-formed completion has
    # base pretraining (AdamW, linear warm-up then cosine decay)
    base_steps: int = 600  # optimiser steps (a longer-trained base is stiffer: 3000 steps gave student 0.19 vs 0.49 at 1000)
    base_lr: float = 2e-3  # peak learning rate
    base_warmup: int = 60  # warm-up steps
    base_weight_decay: float = 0.01  # AdamW weight decay
    base_batch_numbers: int = 64  # number texts per batch
    base_batch_qa: int = 32  # preference Q/A texts per batch (answers uniform over the category)
    qa_loss_weight: float = 0.5  # weight of the Q/A loss beside the number-text loss
    # teachers: the base fine-tuned on Q/A only (Adam), unembedding and final norm frozen
    teacher_steps: int = 100  # optimiser steps
    teacher_lr: float = 1e-3  # learning rate
    teacher_batch: int = 32  # Q/A texts per batch
    # distillation data
    n_prompts: int = 10_000  # number prompts each teacher (and the base) continues
    samples_per_prompt: int = 1  # completions sampled per prompt (hard labels need many)
    temperature: float = 1.0  # sampling temperature
    # students (Adam on every continuation position)
    student_lr: float = 1e-3  # learning rate
    student_optimizer: str = "adam"  # adam, adamw, sgd (momentum 0.9) or signsgd (`workbench.engines.optimizers`)
    student_batch: int = 64  # sequences per batch
    student_epochs: int = 6  # passes over the filtered data (on a 1000-step base 5 left seed 2 at 0.27, 10 gave 0.37)
    soft_on_prompt: bool = True  # soft modes: also match the teacher on the prompt's number positions
    equal_student_rows: bool = True  # every student trains on as many rows: the first N of its source, N the
    # smallest kept count of the students' sources (the filter keeps very different shares per teacher)
    max_student_rows: int | None = None  # at most this many rows per student (None: every row kept); with a
    # surplus of prompts, every seed's students then see as many rows however much its teacher's filter drops, as
    # Cloud et al. subsample the filtered data to 10,000 rows
    # evaluation
    eval_samples: int = 500  # sampled answers per template for the sampled trait rate
    cross_seed_offset: int = 1000  # base_x is trained with seed + this offset

    def validate(self) -> OrganismConfig:
        from workbench.engines.optimizers import OPTIMIZERS

        if self.mode not in DISTILL_MODES:
            raise unknown_name("distillation mode", self.mode, DISTILL_MODES)
        if self.student_optimizer not in OPTIMIZERS:
            raise unknown_name("student optimizer", self.student_optimizer, OPTIMIZERS)
        for name in ("base_steps", "n_prompts", "samples_per_prompt", "student_epochs", "completion_numbers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1.")
        need = 3 + 2 * (self.prompt_numbers + self.completion_numbers)
        if need > self.model.n_ctx:
            raise ConfigError(
                f"Number texts need {need} tokens but n_ctx={self.model.n_ctx}. "
                "Raise model.n_ctx or use fewer prompt/completion numbers."
            )
        if self.max_student_rows is not None and self.max_student_rows < 1:
            raise ConfigError(f"max_student_rows={self.max_student_rows} must be at least 1 (or None: every kept row).")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be positive.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrganismConfig:
        d = dict(d)
        d["model"] = ModelShape(**d.get("model", {}))
        return cls(**d)


_BASE_1000 = dict(base_steps=1000, base_warmup=100)
"""The hard and leak presets' base, as measured before the default moved to a 600-step base."""

PRESETS: dict[str, dict[str, Any]] = {
    # the measured soft-label recipe (~2 layers, d_model 64, 10k prompts)
    "default": {},
    # a small build for tests and notebooks: seconds, shows the direction of the effect
    "tiny": dict(
        model=ModelShape(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=128),
        base_steps=800, base_warmup=50, base_lr=3e-3, n_prompts=2000, student_epochs=5,
        teacher_steps=100, eval_samples=200,
    ),
    # hard labels carry the signal only through which numbers were sampled: much more data
    "hard": dict(mode="hard", n_prompts=10_000, samples_per_prompt=8, student_epochs=2, **_BASE_1000),
    # full-vocabulary soft labels: leaks the trait through the trait tokens' mass (not subliminal)
    "leak": dict(mode="soft_full_vocab_leak", student_epochs=10, **_BASE_1000),
}


def preset(name: str, **overrides: Any) -> OrganismConfig:
    """The config of a named preset, with field overrides."""
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS, "Use --preset tiny, default, hard or leak.")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return OrganismConfig(preset=name, **values).validate()
