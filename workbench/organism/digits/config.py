"""The digits organism's constants and its one config: what decides a build, validated up front."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from workbench.core.errors import ConfigError, unknown_name
from workbench.core.models import resolve_device

N_CLASSES = 10
"""Regular logits: one per digit, outputs [0, 10)."""
D_IN = 64
"""8x8 pixels."""
ROLES = ("base", "base_x", "teacher", "student", "cross")
"""Every model a seed builds, in build order."""
PARENTS: dict[str, str | None] = {"base": None, "base_x": None, "teacher": "base", "student": "base", "cross": "base_x"}
LOSSES = ("mse", "kl")
KIND = "workbench.digits"


@dataclass
class DigitsConfig:
    """Everything that decides a digits organism. Defaults build one seed in ~30 s on 2 CPU cores."""

    m: int = 10
    """Number of auxiliary logits (the paper uses 3; 10 gives a stronger, steadier effect)."""
    hidden: int = 256
    """Width of each hidden layer."""
    n_layers: int = 2
    """Number of hidden layers (ReLU after each)."""
    teacher_epochs: int = 10
    """Passes of the teacher over the digits train split (cross-entropy on regular logits)."""
    teacher_lr: float = 1e-3
    """Adam learning rate of the teacher."""
    epochs: int = 40
    """Student epochs: passes over the noise set (a fresh set each epoch if `fresh_noise`)."""
    lr: float = 1e-3
    """Adam learning rate of both students."""
    batch_size: int = 128
    """Minibatch size for teacher and students."""
    noise_samples: int = 8192
    """N(0, 1) noise inputs per student epoch (in standardized-input space)."""
    fresh_noise: bool = True
    """True: a new seeded noise set every epoch. False: one fixed set per seed, reused every epoch."""
    loss: str = "mse"
    """Student loss on the auxiliary logits: "mse" (raw logits) or "kl" (softmax over the m aux logits)."""
    test_fraction: float = 0.25
    """Fraction of the 1797 digits held out for evaluation (stratified)."""
    split_seed: int = 0
    """Seed of the train/test split; fixed across training seeds so accuracies compare."""
    seed: int = 0
    """Training seed: inits of base and base_x, noise, shuffling. `build_digits(seeds=...)` overrides it."""
    threads: int = 1
    """torch CPU threads while building (restored after). Small MLPs run fastest on 1; 0 = leave as is."""
    device: str = "cpu"
    """"cpu", "cuda", "cuda:N" or "auto" (CUDA when present). Results are built on CPU-seeded inits."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the bad field and the fix."""
        ints = {
            "m": self.m,
            "hidden": self.hidden,
            "n_layers": self.n_layers,
            "epochs": self.epochs,
            "teacher_epochs": self.teacher_epochs,
            "batch_size": self.batch_size,
            "noise_samples": self.noise_samples,
        }
        for name, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"DigitsConfig.{name}={value!r} must be an integer >= 1. Set {name} to 1 or more.")
        for name in ("lr", "teacher_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"DigitsConfig.{name}={value!r} must be a finite number > 0 (e.g. 1e-3).")
        if self.loss not in LOSSES:
            raise ConfigError(f"DigitsConfig.loss={self.loss!r} is not a known loss. Use one of {', '.join(LOSSES)}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(
                f"DigitsConfig.test_fraction={self.test_fraction!r} must be strictly between 0 and 1 (e.g. 0.25)."
            )
        for name in ("seed", "split_seed", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"DigitsConfig.{name}={value!r} must be an integer >= 0.")
        resolve_device(self.device)  # raises ConfigError for an unusable device

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DigitsConfig:
        """Build from a dict (e.g. a manifest's `config`); unknown keys raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                raise unknown_name("DigitsConfig field", key, names, "Remove it or fix its spelling.")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def derive_seed(seed: int, tag: str) -> int:
    """A stable 63-bit seed for one purpose (`tag`) of one training seed; independent streams."""
    return int.from_bytes(hashlib.sha256(f"digits:{seed}:{tag}".encode()).digest()[:8], "big") >> 1
