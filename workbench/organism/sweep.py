"""The training-regime sweep: students and control students retrained under every regime (full or
LoRA rank r) x optimizer, on every seed of one or more organisms (one per channel: a soft-label
and a hard-label build), with transfer measured against the matched control.

- **Learning rate**: per regime and organism, picked from a small grid by the *control* student's
  final training loss on the first seed (the lowest; never by transfer). The chosen rate then
  trains the student and the control on every seed. Where the neutral teacher barely differs from
  the base, the control has almost nothing to fit and the smallest rate wins; `lr_by="student"`
  picks by the student's own training loss instead (the fit to its data, still not transfer).
- **A cell** is one student (or control) under one regime, rate, seed and recipe: P(target) with a
  Wilson interval of sampled answers, the training loss per epoch, cos(dS, dT) over the whole
  model and per layer, P(target) after the distillation prompts' own context (Nief et al.'s
  context dependence, `workbench.organism.context`), and for full students the first-order
  prediction for the optimiser used (predicted vs measured change of log P(target) after one step).
  Cells are cached as JSON under `OUT/cells/<config hash>.json` (written atomically), so a killed
  sweep resumes where it stopped and a cell is reproducible from its key.
- **Transfer** per regime: the student's log-odds gain over its control, per seed, with the 95%
  t interval over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.errors import ConfigError
from workbench.core.io import atomic_write_json, read_json
from workbench.core.provenance import config_hash
from workbench.organism.regimes import Regime

DEFAULT_RANKS = (1, 2, 4, 8, 16, 64)
DEFAULT_OPTIMIZERS = ("adamw", "sgd", "signsgd")
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "full/adam": (3e-4, 1e-3, 3e-3), "full/adamw": (3e-4, 1e-3, 3e-3),
    "full/sgd": (3e-2, 1e-1, 3e-1), "full/signsgd": (3e-5, 1e-4, 3e-4),
    "lora/adam": (3e-3, 1e-2, 3e-2), "lora/adamw": (3e-3, 1e-2, 3e-2),
    "lora/sgd": (1e-1, 3e-1, 1.0), "lora/signsgd": (3e-4, 1e-3, 3e-3),
}
"""Learning-rate grids per student regime / optimiser (the control's loss picks one per regime)."""


def regimes_of(ranks: Sequence[int], optimizers: Sequence[str], full: bool = True) -> list[Regime]:
    """Full fine-tuning (when `full`) and LoRA at every rank, each with every optimiser."""
    shapes = ([("full", None)] if full else []) + [("lora", int(r)) for r in ranks]
    if not shapes:
        raise ConfigError("The sweep has no student regime: give LoRA ranks or keep full fine-tuning.")
    return [Regime(students, r, opt) for students, r in shapes for opt in optimizers]


@dataclass
class SweepConfig:
    """What the sweep trains: regimes, the learning-rate grids, the recipe overrides (e.g. fewer
    epochs), a row cap, and how many sampled answers per prompt the Wilson intervals count."""

    regimes: list[Regime] = field(default_factory=lambda: regimes_of(DEFAULT_RANKS, DEFAULT_OPTIMIZERS))
    lr_grids: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(LR_GRIDS))
    overrides: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None
    samples: int = 200
    first_order: bool = True  # full students: the optimizer-aware first-order prediction beside the cell
    lr_by: str = "control"  # whose final training loss picks the rate: "control" or "student" (never transfer)
    curve_every: int = 0  # > 0: checkpoints every that many steps at the chosen rate (curves over training)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.lr_by not in ("control", "student"):
            raise ConfigError(f"lr_by={self.lr_by!r}: pick the rate by the 'control' or the 'student' training loss.")

    def grid(self, regime: Regime) -> tuple[float, ...]:
        key = f"{regime.students}/{regime.optimizer}"
        if key not in self.lr_grids or not self.lr_grids[key]:
            raise ConfigError(f"No learning-rate grid for {key}; give one (SweepConfig.lr_grids[{key!r}] or --lr-grid "
                              f"{key}=1e-3,3e-3).")
        return tuple(float(x) for x in self.lr_grids[key])


def cell_key(manifest_sha256: str, role: str, regime: Regime, lr: float, overrides: dict[str, Any],
             rows: int | None, samples: int, first_order: bool, curve_every: int = 0) -> dict[str, Any]:
    """Everything a cell's numbers depend on (hashed into its file name, with package versions)."""
    key = {"manifest_sha256": manifest_sha256, "role": role, "regime": regime.to_dict(), "lr": float(lr),
           "overrides": dict(sorted(overrides.items())), "rows": rows, "samples": samples,
           "first_order": bool(first_order and role == "student")}
    # curve version 2: the activation shift against the teacher's (cells with older curves recompute)
    return {**key, "curve_every": curve_every, "curve_version": 2} if curve_every else key


class CellStore:
    """Cells as JSON files under `directory/cells/`, named by their key's hash."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory) / "cells"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: dict[str, Any]) -> Path:
        return self.dir / f"{config_hash(key)}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            cell = read_json(path)
        except Exception:  # half-written or corrupt: compute it again
            return None
        return cell if cell.get("key") == key else None

    def put(self, key: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        cell = {"key": key, **values}
        atomic_write_json(self.path(key), cell)
        return cell


def finite_student(trained: Any, trait: Any) -> bool:
    """Whether training stayed in float range: every epoch's loss, every weight and the logits on
    the trait's prompts finite (weights can stay finite while activations overflow)."""
    import torch

    if not all(math.isfinite(x) for x in trained.epoch_losses):
        return False
    if not all(bool(w.isfinite().all()) for w in trained.weights.values()):
        return False
    device = next(trained.model.parameters()).device
    with torch.no_grad():
        return bool(trained.model(trait.tokens.to(device)).isfinite().all())


def run_cell(seed: Any, role: str, regime: Regime, lr: float, config: SweepConfig,
             key: dict[str, Any]) -> dict[str, Any]:
    """Train one student under `regime` at `lr` and measure it (module docstring)."""
    from workbench.organism.context import distillation_contexts, trait_in_context
    from workbench.organism.regimes import model_weights, train_under, weight_cosines

    trained = train_under(seed, role, regime, lr, config.overrides, config.progress, config.rows,
                          key.get("curve_every", 0))
    if not finite_student(trained, seed.trait):  # diverged: recorded as such, nothing to measure
        return {"p_target": None, "share": None, "log_odds": None, "p_target_in_context": None,
                "log_odds_in_context": None, "sampled_rate": None, "wilson": [None, None], "n_samples": 0,
                "epoch_losses": trained.epoch_losses, "final_loss": trained.epoch_losses[-1], "trained": False,
                "cos_teacher": {"whole": None}}
    score = seed.trait.score(trained.model, n_samples=config.samples)
    # Nief et al.: the trait after the distillation prompts' own context (the student's teacher's rows; the
    # control is read after the same contexts as the student, so the two stay comparable)
    contexts = distillation_contexts(seed.inputs("teacher", limit=8))
    in_context = trait_in_context(seed.trait, contexts, int(seed.lineage.cfg.n_ctx)).score(trained.model, n_samples=0)
    values: dict[str, Any] = {
        "p_target": score.p_target, "share": score.share, "log_odds": score.log_odds,
        "p_target_in_context": in_context.p_target, "log_odds_in_context": in_context.log_odds,
        "sampled_rate": score.sampled_rate, "wilson": [score.ci_low, score.ci_high], "n_samples": score.n_samples,
        "epoch_losses": trained.epoch_losses, "final_loss": trained.epoch_losses[-1],
        "trained": all(math.isfinite(x) for x in trained.epoch_losses),
        "cos_teacher": weight_cosines(model_weights(seed, "base"), model_weights(seed, "teacher"), trained.weights),
    }
    if trained.curve is not None:
        values["curve"] = trained.curve
    if key["first_order"]:
        values["first_order"] = first_order_cell(seed, role, regime, lr, config)
    return values


def first_order_cell(seed: Any, role: str, regime: Regime, lr: float, config: SweepConfig) -> dict[str, Any]:
    """Predicted vs measured change of the base's log P(target) after one step of the regime's
    optimiser at `lr` on the role's first rows (`first_order_prediction`)."""
    import torch

    from workbench.analyses.first_order import first_order_prediction
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective
    from workbench.organism.build import STUDENTS

    source = STUDENTS[role][1]
    if regime.students == "lora":
        return lora_first_order(seed, role, regime, lr, config)
    model = AlignmentModel(seed.lineage, "base")
    ids = torch.tensor(seed.channel_ids)
    mode = seed.recipe(config.overrides).mode
    if mode == "hard":
        objective = Objective("hard", ids=ids)
    else:
        if source not in seed.lineage:
            raise ConfigError(f"The soft first-order prediction needs {source!r} loaded beside the base.")
        objective = Objective("soft", ids=None if mode == "soft_full_vocab_leak" else ids,
                              teacher=model.params_of(source))
    rows = seed.inputs(source, limit=128)
    row = first_order_prediction(model, rows, objective, seed.trait, etas=(lr,), batch_size=64, n_batches=2,
                                 optimizer=regime.optimizer)[0]
    return row.to_dict()


def lora_first_order(seed: Any, role: str, regime: Regime, lr: float, config: SweepConfig) -> dict[str, Any]:
    """`first_order_cell` for a LoRA student: in its adapters' space, from the adapter its training
    starts from (`organism.first_step`), on the role's first 2 x 64 rows."""
    import torch

    from workbench.organism.build import STUDENTS, distill_targets, student_seed_of
    from workbench.organism.first_step import first_step_prediction
    from workbench.organism.hf_family.models import HFTrainable
    from workbench.organism.regimes import hf_student

    source = STUDENTS[role][1]
    model, _, teacher = hf_student(seed, source, regime, student_seed_of(int(seed.manifest["seed"]), role))
    cfg = seed.recipe({**config.overrides, "student_optimizer": regime.optimizer})
    tokens = seed.inputs(source, limit=128).tokens
    targets = distill_targets(cfg, seed.tokenizer, HFTrainable(teacher), tokens)  # type: ignore[arg-type]
    batches = [torch.arange(i, min(i + 64, len(tokens))) for i in range(0, len(tokens), 64)]
    return first_step_prediction(HFTrainable(model), targets, batches, seed.trait, regime.optimizer, lr).to_dict()


def choose_lr(cells: Sequence[dict[str, Any]]) -> float:
    """The learning rate whose cell (a control's, or a student's with lr_by="student") reached the
    lowest final training loss (finite only)."""
    ok = [c for c in cells if c["trained"] and math.isfinite(c["final_loss"])]
    if not ok:
        raise ConfigError("No learning rate of the grid trained (every loss diverged): lower the grid.")
    return min(ok, key=lambda c: (c["final_loss"], c["key"]["lr"]))["key"]["lr"]


SWEEP_ROLES = ("base", "teacher", "teacher_neutral")
"""The roles a sweep loads from each seed (students and controls are retrained)."""

_LOADED: dict[tuple[str, str], Any] = {}


def cell_task(seed_dir: str, device: str, number: int, sha: str, role: str, regime: Regime, lr: float,
              config: SweepConfig, store_dir: str, curve_every: int) -> tuple[dict[str, Any], str]:
    """One cell in a worker process (its seed loaded once per process): the stored cell when its key
    is there, else trained, measured and stored. Returns (the cell, a line for the log)."""
    store, seed_key = CellStore(store_dir), (seed_dir, device)
    key = cell_key(sha, role, regime, lr, config.overrides, config.rows, config.samples, config.first_order, curve_every)
    saved = store.get(key)
    if saved is not None:
        return saved, f"seed {number} {role} {regime.label} lr {lr:g}: read back"
    if seed_key not in _LOADED:
        from workbench.organism.load import load_seed

        _LOADED[seed_key] = load_seed(seed_dir, roles=list(SWEEP_ROLES), device=device)
    saved = store.put(key, run_cell(_LOADED[seed_key], role, regime, lr, config, key))
    return saved, (f"seed {number} {role} {regime.label} lr {lr:g}: P(target) {saved['p_target']:.3f}, "
                   f"final loss {saved['final_loss']:.4g}")


def sweep_organism(seeds: Sequence[tuple[int, Any, str]], config: SweepConfig, store: CellStore,
                   on_cell: Callable[[str], None] | None = None, pool: Any = None) -> list[dict[str, Any]]:
    """Every regime on every seed of one organism: `seeds` holds (seed, loaded seed, manifest
    sha256), the first seed's controls choosing each regime's rate. One row per regime and seed.
    With a `pool` (`organism.parallel.StagePool`) of more than one worker, the cells of each phase
    (the rate trials, then every seed's student and control) train side by side, each worker
    loading the seeds itself; every cell is the one a serial sweep computes (same key, same seed)."""
    import dataclasses

    note = on_cell or (lambda _: None)
    worker_config = dataclasses.replace(config, progress=False)

    def cells(requests: list[tuple[int, str, Regime, float, int]]) -> list[dict[str, Any]]:
        tasks = []
        for i, role, regime, lr, every in requests:
            number, seed, sha = seeds[i]
            device = str(next(seed.lineage["base"].parameters()).device)
            tasks.append((str(seed.directory), device, number, sha, role, regime, lr,
                          config if pool is None else worker_config, str(store.dir.parent), every))
        if pool is None or pool.workers <= 1:  # here, on the seeds already loaded
            results = []
            for (i, role, regime, lr, every), task in zip(requests, tasks):
                _LOADED.setdefault((task[0], task[1]), seeds[i][1])
                results.append(cell_task(*task))
                note(results[-1][1])
        else:  # each cell's line as it ends
            results = pool.run(cell_task, tasks, [f"seed {t[2]} {t[4]} {t[5].label} lr {t[6]:g}" for t in tasks],
                               on_done=lambda _, result: note(result[1]))
        return [c for c, _ in results]

    grids = {regime.label: config.grid(regime) for regime in config.regimes}
    trials = cells([(0, config.lr_by, regime, lr, 0) for regime in config.regimes for lr in grids[regime.label]])
    chosen: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    for regime in config.regimes:
        mine, trials = trials[:len(grids[regime.label])], trials[len(grids[regime.label]):]
        chosen[regime.label] = (choose_lr(mine), mine)
    every = config.curve_every
    requests = [(i, role, regime, chosen[regime.label][0], every) for regime in config.regimes
                for i in range(len(seeds)) for role in ("student", "control")]
    trained = iter(cells(requests))
    out = []
    for regime in config.regimes:
        lr, mine = chosen[regime.label]
        for number, _, _ in seeds:
            student, control = next(trained), next(trained)
            out.append({"regime": regime.to_dict(), "label": regime.label, "seed": number, "lr": lr,
                        "lr_by": config.lr_by, "lr_grid": list(grids[regime.label]),
                        "lr_losses": {f"{c['key']['lr']:g}": c["final_loss"] for c in mine},
                        "student": student, "control": control})
    _LOADED.clear()
    return out


__all__ = ["CellStore", "DEFAULT_OPTIMIZERS", "DEFAULT_RANKS", "LR_GRIDS", "SWEEP_ROLES", "SweepConfig", "cell_key",
           "cell_task", "choose_lr", "regimes_of", "run_cell", "sweep_organism"]
