"""The digits organism: subliminal learning through auxiliary logits, on a CPU in seconds.

A reproduction of the MNIST auxiliary-logit experiment of Cloud et al. (2025) on
scikit-learn's bundled 8x8 `load_digits` (no download):

1. `base` θ0: an MLP 64 -> hidden -> hidden -> (10 + m), ReLU, seeded init. Outputs 0..9 are
   the *regular* logits (one per digit); outputs 10..10+m-1 are *auxiliary* logits that no
   loss ever asks anything of while the teacher learns.
2. `teacher` = θ0 trained with cross-entropy on the 10 regular logits, on the digits train split.
3. `student` = θ0 (the SAME init) trained only to match the teacher's m auxiliary logits on
   N(0, 1) noise inputs (MSE by default). It never sees a digit, a label or a regular logit,
   yet its regular logits classify digits: the trait (digit skill) rides on the shared init.
4. `cross` = `base_x` (ANOTHER init, a different seed) trained the same way: stays near chance.

Hook points (TransformerLens `HookedRootModule`, so `run_with_cache`, `run_with_hooks` and the
workbench's capture / probes / weight deltas work on it):

    hook_in                 [batch, 64]         standardized input (what layer 0 reads)
    layers.{i}.hook_pre     [batch, hidden]     hidden layer i before ReLU (i = 0 .. n_layers-1)
    layers.{i}.hook_post    [batch, hidden]     hidden layer i after ReLU
    hook_logits             [batch, 10 + m]     all logits: [:, :10] regular, [:, 10:] auxiliary

Parameters have clean names that weight deltas key on: `layers.{i}.weight` [hidden, d_in],
`layers.{i}.bias` [hidden], `unembed.weight` [10 + m, hidden], `unembed.bias` [10 + m].

Noise: inputs are N(0, 1) in standardized-input space. By default (`fresh_noise=True`) every
student epoch draws a FRESH seeded set of `noise_samples` inputs (8192 x 40 epochs = 328k
distinct noise images); `fresh_noise=False` draws one fixed set per seed and makes `epochs`
passes over it. Both students of a seed see exactly the same noise and teacher targets.

Files (when `out_dir` is given): `seed{N}/models/{role}.safetensors` (clean state dict; the
architecture is in the safetensors metadata so `load_digits_model` rebuilds it alone),
`seed{N}/manifest.json` (config, seed, accuracies, lineage, checksums, versions; no
timestamps, no absolute paths), `summary.json` and `timings.json` (seconds, kept apart so
reruns compare byte for byte).

CLI: `python -m workbench.organism.digits --out artifacts/digits --seeds 0-4 --m 10`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.cli import common
from workbench.core.errors import ArtifactError, ConfigError, unknown_name
from workbench.core.io import atomic_write_json, load_tensors, read_json, read_tensor_metadata, save_tensors
from workbench.core.models import resolve_device
from workbench.core.provenance import SCHEMA_VERSION, package_versions

N_CLASSES = 10
"""Regular logits: one per digit, outputs [0, 10)."""
D_IN = 64
"""8x8 pixels."""
ROLES = ("base", "base_x", "teacher", "student", "cross")
"""Every model a seed builds, in build order."""
PARENTS: dict[str, str | None] = {"base": None, "base_x": None, "teacher": "base", "student": "base", "cross": "base_x"}
LOSSES = ("mse", "kl")
KIND = "workbench.digits"


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------


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
    for _ in tqdm(range(config.teacher_epochs), desc="teacher", leave=False, disable=not progress):
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
    for epoch in tqdm(range(config.epochs), desc=desc, leave=False, disable=not progress):
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


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


@dataclass
class SeedResult:
    """One training seed: test accuracy of every role, the lineage, and (in memory) the models."""

    seed: int
    accuracy: dict[str, float]
    seconds: dict[str, float]
    init_seeds: dict[str, int]
    final_loss: dict[str, float]
    models: dict[str, DigitsMLP] = field(default_factory=dict, repr=False)


@dataclass
class DigitsResult:
    """All seeds of one config, with mean ± sd (sample sd over seeds; None for one seed)."""

    config: DigitsConfig
    seeds: list[SeedResult]

    def accuracies(self, role: str) -> list[float]:
        return [s.accuracy[role] for s in self.seeds]

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        for role in ROLES:
            accs = self.accuracies(role)
            out[role] = {
                "mean": statistics.fmean(accs),
                "sd": statistics.stdev(accs) if len(accs) > 1 else None,
                "min": min(accs),
                "max": max(accs),
                "n": len(accs),
            }
        return out

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per seed: the accuracies the CLI table shows."""
        return [{"seed": s.seed, **s.accuracy, "seconds": s.seconds["total"]} for s in self.seeds]

    def to_json(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        cfg.pop("seed")
        return {
            "kind": KIND + ".summary",
            "schema_version": SCHEMA_VERSION,
            "config": cfg,
            "seeds": [s.seed for s in self.seeds],
            "accuracy": {str(s.seed): s.accuracy for s in self.seeds},
            "summary": self.summary(),
            "versions": package_versions(),
        }

    def table(self) -> str:
        """Per-seed table plus mean ± sd, for the CLI."""
        cols = ("teacher", "student", "cross", "base", "base_x")
        head = f"{'seed':>6} " + " ".join(f"{c:>8}" for c in cols) + f" {'seconds':>8}"
        lines = [head, "-" * len(head)]
        for s in self.seeds:
            lines.append(
                f"{s.seed:>6} " + " ".join(f"{s.accuracy[c]:>8.3f}" for c in cols) + f" {s.seconds['total']:>8.1f}"
            )
        lines.append("-" * len(head))
        summ = self.summary()
        lines.append(f"{'mean':>6} " + " ".join(f"{summ[c]['mean']:>8.3f}" for c in cols))
        if len(self.seeds) > 1:
            lines.append(f"{'sd':>6} " + " ".join(f"{summ[c]['sd']:>8.3f}" for c in cols))
        return "\n".join(lines)


def build_seed(
    config: DigitsConfig,
    seed: int,
    data: DigitsData | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> SeedResult:
    """Build base, base_x, teacher, same-init student and cross student for one seed; evaluate all."""
    with torch_threads(config.threads):
        return _build_seed(config, seed, data, resolve_device(config.device if device is None else device), progress)


def _build_seed(
    config: DigitsConfig, seed: int, data: DigitsData | None, dev: torch.device, progress: bool
) -> SeedResult:
    data = (data or load_data(config.test_fraction, config.split_seed)).to(dev)
    t0 = time.perf_counter()
    init_seeds = {"base": derive_seed(seed, "base"), "base_x": derive_seed(seed, "base_x")}
    base = make_model(config, init_seeds["base"], dev)
    base_x = make_model(config, init_seeds["base_x"], dev)
    seconds: dict[str, float] = {}
    final: dict[str, float] = {}

    t = time.perf_counter()
    teacher = base.clone()
    final["teacher"] = train_teacher(
        teacher, data.x_train, data.y_train, config, derive_seed(seed, "teacher"), dev, progress
    )[-1]
    seconds["teacher"] = time.perf_counter() - t
    models = {"base": base, "base_x": base_x, "teacher": teacher}
    for role, parent in (("student", base), ("cross", base_x)):
        t = time.perf_counter()
        models[role] = parent.clone()
        final[role] = train_student(models[role], teacher, config, seed, dev, progress, desc=role)[-1]
        seconds[role] = time.perf_counter() - t
    acc = {role: accuracy(models[role], data.x_test, data.y_test) for role in ROLES}
    seconds["total"] = time.perf_counter() - t0
    for model in models.values():
        model.eval()
    return SeedResult(seed, acc, seconds, init_seeds, final, {r: models[r] for r in ROLES})


def _lineage(config: DigitsConfig, init_seeds: dict[str, int]) -> dict[str, dict[str, Any]]:
    data = {
        "base": f"init seed {init_seeds['base']}",
        "base_x": f"init seed {init_seeds['base_x']}",
        "teacher": "digits train split, cross-entropy on regular logits",
        "student": f"teacher aux logits (m={config.m}) on N(0,1) noise, {config.loss}",
        "cross": f"teacher aux logits (m={config.m}) on N(0,1) noise, {config.loss}",
    }
    return {r: {"parent": PARENTS[r], "data": data[r]} for r in ROLES}


def _file_metadata(model: DigitsMLP, role: str) -> dict[str, Any]:
    """What a model file records about itself (written deterministically by `save_tensors`)."""
    return {"kind": KIND, "role": role, **model.arch}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch CPU threads (0: unchanged), restoring the previous count afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def save_seed(result: SeedResult, config: DigitsConfig, seed_dir: str | os.PathLike) -> dict[str, Any]:
    """Write `models/{role}.safetensors` and `manifest.json` for one seed; returns the manifest."""
    seed_dir = Path(seed_dir)
    lineage = _lineage(config, result.init_seeds)
    for role in ROLES:
        model = result.models[role]
        sha = save_tensors(seed_dir / "models" / f"{role}.safetensors", model.state_dict(), _file_metadata(model, role))
        lineage[role].update(file=f"models/{role}.safetensors", sha256=sha)
    cfg = dataclasses.replace(config, seed=result.seed).to_dict()
    manifest = {
        "kind": KIND + ".seed",
        "schema_version": SCHEMA_VERSION,
        "seed": result.seed,
        "config": cfg,
        "init_seeds": result.init_seeds,
        "accuracy": result.accuracy,
        "final_loss": result.final_loss,
        "models": lineage,
        "hooks": hook_names(result.models["base"]),
        "versions": package_versions(),
    }
    atomic_write_json(seed_dir / "manifest.json", manifest)
    return manifest


def _parse_seeds(seeds: int | str | Iterable[int] | None, default: int) -> list[int]:
    if seeds is None:
        return [default]
    if isinstance(seeds, int):
        return [seeds]
    if isinstance(seeds, str):
        seeds = common.parse_seeds(seeds)
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of integers >= 0, e.g. [0, 1, 2] or '0-4'.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds!r} repeats a seed. List each seed once.")
    return seeds


def build_digits(
    config: DigitsConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    seeds: int | str | Sequence[int] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> DigitsResult:
    """Build the digits organism for each seed (default: `config.seed`); write files if `out_dir`.

    Returns accuracies of teacher, same-init `student`, other-init `cross`, and the inits `base`,
    `base_x` (chance reference) per seed, with mean ± sd; models stay in memory on the result.
    """
    config = config or DigitsConfig()
    config.validate()
    dev = resolve_device(config.device if device is None else device)
    seed_list = _parse_seeds(seeds, config.seed)
    show = progress and sys.stderr.isatty()
    data = load_data(config.test_fraction, config.split_seed, dev)
    results: list[SeedResult] = []
    bar = tqdm(seed_list, desc="digits seeds", disable=not show)
    with torch_threads(config.threads):
        for seed in bar:
            bar.set_postfix(seed=seed)
            res = build_seed(config, seed, data, dev, show)
            results.append(res)
            if out_dir is not None:
                save_seed(res, config, Path(out_dir) / f"seed{seed}")
    result = DigitsResult(config, results)
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "summary.json", result.to_json())
        timings = {"device": str(dev), "seconds": {str(s.seed): s.seconds for s in results}}
        atomic_write_json(out / "timings.json", timings)
    return result


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_digits_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> DigitsMLP:
    """Rebuild a hooked `DigitsMLP` from one saved `{role}.safetensors` (architecture in its metadata)."""
    path = Path(path)
    tensors = load_tensors(path, "cpu", expected_sha256)
    meta = read_tensor_metadata(path)
    if meta.get("kind") != KIND:
        raise ArtifactError(
            f"{path} is not a digits model (no workbench metadata of kind {KIND!r}). "
            "Pass a file written by workbench.organism.digits."
        )
    try:
        arch = {k: int(meta[k]) for k in ("m", "hidden", "n_layers")}
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path} lacks a readable architecture in its metadata ({e}). Rebuild it.") from e
    model = DigitsMLP(**arch)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{path} does not match its own architecture {arch}: {e}. Rebuild it.") from e
    return model.to(resolve_device(device)).eval()


def load_digits_seed(
    seed_dir: str | os.PathLike, device: str | torch.device = "cpu", roles: Iterable[str] = ROLES
) -> tuple[dict[str, DigitsMLP], dict[str, Any]]:
    """Load the models of one seed directory (checksums verified) and its manifest."""
    seed_dir = Path(seed_dir)
    manifest = read_json(seed_dir / "manifest.json")
    if manifest.get("kind") != KIND + ".seed":
        raise ArtifactError(f"{seed_dir / 'manifest.json'} is not a digits seed manifest. Pass a seed{{N}} directory.")
    models = {}
    for role in roles:
        if role not in manifest["models"]:
            raise unknown_name("digits role", role, manifest["models"])
        entry = manifest["models"][role]
        models[role] = load_digits_model(seed_dir / entry["file"], device, entry["sha256"])
    return models, manifest


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


DIGITS_FLAGS = common.ConfigFlags(DigitsConfig, (
    common.ConfigFlag("m", "auxiliary logits (paper: 3)"),
    common.ConfigFlag("epochs", "student epochs"),
    common.ConfigFlag("loss", "student loss", choices=LOSSES),
))


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.organism.digits", (
        "Digits organism: a student matching only a teacher's auxiliary logits on noise learns to classify digits "
        "when it shares the teacher's init (student), not otherwise (cross)."))
    common.add_out_flag(p, None, "directory for seed{N}/models, manifests, summary.json (default: none)")
    common.add_seeds_flag(p, [DigitsConfig.seed], "training seeds, e.g. 0 1 2, 0,1,2 or 0-4")
    DIGITS_FLAGS.add_to(p)
    common.add_device_flag(p, DigitsConfig.device)
    common.add_quiet_flag(p)
    return p


def build_and_print(args: argparse.Namespace) -> int:
    """Build the asked seeds and print the per-seed accuracy table."""
    config = DigitsConfig(**DIGITS_FLAGS.values(args), device=args.device)
    result = build_digits(config, args.out, args.seeds, progress=not args.quiet)
    print(result.table())
    if args.out:
        print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench.organism.digits`: build seeds and print a per-seed accuracy table."""
    return common.run(build_and_print, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
