"""Students trained under a training regime: full fine-tuning or a LoRA adapter of rank r, with one
of the student optimisers (`workbench.engines.optimizers`), at a given learning rate, on the rows
and with the student seed the build used for that role (so a regime is the only thing that
changes).

LoRA needs a Hugging Face family seed (`python -m workbench.organism --family qwen2`): the
adapter is peft's, with alpha = r (scale 1, as Cloud et al.'s r = alpha = 8), merged after
training. The native organism's students are full fine-tunes only.

`weight_cosines` says how far a student's change points along its teacher's: cos(dS, dT) over
the whole model and per layer (dS = student - base, dT = teacher - base).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from workbench.core.errors import ConfigError, unknown_name
from workbench.engines.optimizers import OPTIMIZERS

STUDENT_REGIMES = ("full", "lora")


@dataclass(frozen=True)
class Regime:
    """How a student trains: "full" or "lora" (rank `r`), with `optimizer`."""

    students: str = "full"
    r: int | None = None
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        if self.students not in STUDENT_REGIMES:
            raise unknown_name("student regime", self.students, STUDENT_REGIMES)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.students == "lora" and (self.r is None or self.r < 1):
            raise ConfigError(f"A LoRA regime needs a rank r >= 1; got r={self.r!r}.")
        if self.students == "full" and self.r is not None:
            raise ConfigError("A full fine-tune has no rank: leave r=None, or use students='lora'.")

    @property
    def label(self) -> str:
        return ("full" if self.students == "full" else f"LoRA r={self.r}") + f", {self.optimizer}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedStudent:
    """A student trained under a regime: tokens -> logits (LoRA merged), its clean-keyed weights,
    and the mean training loss of each epoch."""

    model: torch.nn.Module
    weights: dict[str, Tensor]
    epoch_losses: list[float]
    curve: list[dict[str, Any]] | None = None  # checkpoints over training (`workbench.organism.curves`)


def is_hf_seed(seed: Any) -> bool:
    return seed.manifest.get("format") == "hf"


def model_weights(seed: Any, role: str) -> dict[str, Tensor]:
    """Clean-keyed float32 CPU weights of a built role (native: the bridge's clean state dict; a
    Hugging Face seed: the saved full model's), read once per loaded seed and kept."""
    cache = seed.weights_cache
    if role not in cache:
        if is_hf_seed(seed):
            from workbench.organism.hf_family.build import HF_DIR
            from workbench.organism.hf_family.models import load_hf

            state = load_hf(seed.directory / HF_DIR / role).state_dict()
        else:
            from workbench.core.models import clean_state_dict

            state = clean_state_dict(seed.model(role))
        cache[role] = {k: v.detach().float().cpu() for k, v in state.items()}
    return cache[role]


def hf_student(seed: Any, source: str, regime: Regime, student_seed: int) -> tuple[torch.nn.Module, torch.nn.Module,
                                                                                  torch.nn.Module]:
    """(the untrained student, the base, `source`'s model) of a Hugging Face family seed: the
    student a LoRA adapter (alpha = r, seeded by `student_seed`) over the base, or a copy of it."""
    from workbench.organism.hf_family.build import HF_DIR
    from workbench.organism.hf_family.config import LoraSpec
    from workbench.organism.hf_family.models import load_hf, with_lora

    device = next(seed.lineage["base"].parameters()).device
    base, teacher = (load_hf(seed.directory / HF_DIR / r).to(device) for r in ("base", source))
    model = with_lora(base, LoraSpec(r=regime.r, alpha=float(regime.r)), seed=student_seed) \
        if regime.students == "lora" else copy.deepcopy(base)
    return model, base, teacher


def train_under(seed: Any, role: str, regime: Regime, lr: float, overrides: dict[str, Any] | None = None,
                progress: bool = False, rows: int | None = None, curve_every: int = 0) -> TrainedStudent:
    """Student `role` ("student": on the teacher's rows; "control": on the neutral teacher's) of
    the loaded `seed` (`load_seed`), trained under `regime` at `lr` on the rows the build gave it
    (the first `rows` of them when given), with the build's student seed for the role. With
    `curve_every` > 0, a checkpoint every that many steps (`curves.curve_recorder`: P(target),
    cos(dS_t, dT) against the trait teacher's change, and the alignment on its first 64 rows)."""
    from workbench.organism.build import STUDENTS, distill_targets, student_seed_of
    from workbench.organism.training import train_student

    if role not in STUDENTS:
        raise unknown_name("student role", role, STUDENTS)
    if not lr > 0:
        raise ConfigError(f"lr={lr!r}: give a positive learning rate.")
    cfg = seed.recipe({**(overrides or {}), "student_optimizer": regime.optimizer})
    source = STUDENTS[role][1]
    caps = [n for n in (seed.student_rows(role), rows) if n is not None]
    limit = min(caps) if caps else None
    tokens = seed.inputs(source, limit=limit).tokens
    student_seed = student_seed_of(int(seed.manifest["seed"]), role)

    def recorder(targets: Any, base_model: Callable[[], Any], teacher_model: Callable[[], Any]) -> tuple[Any, list[Any]]:
        """The curve recorder (none without `curve_every`); the base and trait teacher are built
        only then, as trainables with `.residual` for the activation shift."""
        if not curve_every:
            return None, []
        from workbench.organism.curves import curve_recorder

        probe = torch.arange(min(64, len(targets.tokens)))
        return curve_recorder(seed.trait, targets, probe, model_weights(seed, "base"), model_weights(seed, "teacher"),
                              base_model(), teacher_model())

    if is_hf_seed(seed):
        from workbench.organism.hf_family.build import HF_DIR
        from workbench.organism.hf_family.models import CausalLMLogits, HFTrainable, load_hf

        model, base, teacher = hf_student(seed, source, regime, student_seed)
        device = next(base.parameters()).device
        targets = distill_targets(cfg, seed.tokenizer, HFTrainable(teacher), tokens)  # type: ignore[arg-type]
        trait_teacher = lambda: HFTrainable(teacher if source == "teacher" else  # noqa: E731
                                            load_hf(seed.directory / HF_DIR / "teacher").to(device))
        on_step, points = recorder(targets, lambda: HFTrainable(base), trait_teacher)
        losses = train_student(HFTrainable(model.train()), targets, cfg, student_seed, progress, lr=lr, on_step=on_step,
                               every=curve_every)
        merged = (model.merge_and_unload() if regime.students == "lora" else model).eval()
        weights = {k: v.detach().float().cpu() for k, v in merged.state_dict().items()}
        return TrainedStudent(CausalLMLogits(merged), weights, losses,
                              [p.to_dict() for p in points] if curve_every else None)
    if regime.students == "lora":
        raise ConfigError("LoRA students need a Hugging Face family organism (python -m workbench.organism --family "
                          "qwen2); the native organism trains full students only.")
    from workbench.core.models import clean_state_dict, copy_model
    from workbench.engines.functional import FunctionalModel

    student = copy_model(seed.lineage["base"])
    targets = distill_targets(cfg, seed.tokenizer, seed.model(source), tokens)
    trainable = FunctionalModel.from_bridge(student, trainable=True)
    on_step, points = recorder(targets, lambda: FunctionalModel.from_bridge(seed.lineage["base"]),
                               lambda: FunctionalModel.from_bridge(seed.model("teacher")))
    losses = train_student(trainable, targets, cfg, student_seed, progress, lr=lr, on_step=on_step, every=curve_every)
    trainable.load_into(student)
    return TrainedStudent(student, {k: v.detach().float().cpu() for k, v in clean_state_dict(student).items()}, losses,
                          [p.to_dict() for p in points] if curve_every else None)


_LAYER = re.compile(r"(?:layers|blocks)\.(\d+)\.")


def layer_of(name: str) -> str:
    """The group a parameter belongs to: "layer i" for a block's parameters, else its first name part."""
    m = _LAYER.search(name)
    return f"layer {m.group(1)}" if m else name.split(".")[0]


def weight_cosines(base: dict[str, Tensor], teacher: dict[str, Tensor], student: dict[str, Tensor]) -> dict[str, Any]:
    """cos(dS, dT) over every parameter the three share, and per layer (`layer_of`); a group where
    either change is zero has no cosine (None)."""
    keys = sorted(set(base) & set(teacher) & set(student))
    if not keys:
        raise ConfigError("The base, teacher and student share no parameter name: were they built by the same family?")
    dots: dict[str, list[float]] = {}
    for k in keys:
        ds, dt = (student[k] - base[k]).double().flatten(), (teacher[k] - base[k]).double().flatten()
        for g in ("whole", layer_of(k)):
            acc = dots.setdefault(g, [0.0, 0.0, 0.0])
            acc[0] += float(ds @ dt)
            acc[1] += float(ds @ ds)
            acc[2] += float(dt @ dt)
    out = {g: (None if s * t == 0 else d / (s * t) ** 0.5) for g, (d, s, t) in dots.items()}
    return {"whole": out.pop("whole"), "layers": out}


__all__ = ["Regime", "STUDENT_REGIMES", "TrainedStudent", "is_hf_seed", "layer_of", "model_weights", "train_under",
           "weight_cosines"]
