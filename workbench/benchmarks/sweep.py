"""Benchmark `sweep`: what one cell of the training-regime sweep (`python -m workbench.sweep`) pays
beyond training its student, on a shortened tiny Qwen2 organism built here (notebook 06's recipe).

Cases, each group timed in interleaved rounds with its plain training as the baseline:
- LoRA r=4, Adam: `sweep/lora/train` the student retrained (`train_under`, the baseline);
  `sweep/lora/train_curves` the same with 8 checkpoints over training (P(target), cos(dS_t, dT),
  the next step's alignment, the activation shift: `--curves`); `sweep/lora/first_order` the
  first-step prediction in adapter space beside its measured step (`lora_first_order`);
  `sweep/lora/cell` a whole cell as the sweep computes it (training, the trait with Wilson
  intervals, the trait after the rows' own context, weight cosines, the first-order row).
- full fine-tuning, Adam: the same four (`first_order_prediction` on the full model).
`extra` gives the optimiser steps per training, the checkpoints a curve recorded and the trained
parameter count (the adapters' for LoRA); the cell's, its first-order row (predicted vs measured
change of log P(target) after one step). Quick: 1 round, 1 epoch.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from workbench.benchmarks.harness import Case, scratch, time_interleaved

CHECKPOINTS = 8  # curves: checkpoints over one training, as the measured sweeps (every 211 of 1,688 steps)


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Cell cost against plain training, LoRA and full (see module doc)."""
    from workbench.organism import Regime, SweepConfig, build_hf_seed, hf_preset, load_seed
    from workbench.organism.sweep import SWEEP_ROLES, cell_key, first_order_cell, run_cell
    from workbench.organism.regimes import train_under

    runs, warmup = (1, 0) if quick else (3, 1)
    with scratch(device, "bench-sweep-") as root:
        cfg = hf_preset("tiny", students="lora", base_steps=150, base_warmup=10, base_lr=1e-2, n_prompts=400,
                        teacher_steps=20, student_epochs=1 if quick else 3, eval_samples=20)
        build = build_hf_seed(cfg, 0, root, device=device, progress=False)
        seed = load_seed(build.directory, roles=list(SWEEP_ROLES), device=device)
        sha = hashlib.sha256((build.directory / "manifest.json").read_bytes()).hexdigest()
        rows = seed.student_rows("student") or len(seed.inputs("teacher").tokens)
        steps = cfg.recipe.student_epochs * -(-rows // cfg.recipe.student_batch)
        every = max(1, steps // CHECKPOINTS)
        config = SweepConfig(samples=20)
        cases: list[Case] = []
        for regime, lr in ((Regime("lora", 4, "adam"), 1e-2), (Regime("full", None, "adam"), 1e-3)):
            name = f"sweep/{regime.students}"
            key = cell_key(sha, "student", regime, lr, {}, None, config.samples, True)
            last: dict[str, Any] = {}  # the timed calls' last results, read for `extra`
            fns: dict[str, Any] = {
                f"{name}/train": lambda r=regime, lr=lr: train_under(seed, "student", r, lr),
                f"{name}/train_curves": lambda r=regime, lr=lr, last=last: last.update(
                    curves=train_under(seed, "student", r, lr, curve_every=every)),
                f"{name}/first_order": lambda r=regime, lr=lr: first_order_cell(seed, "student", r, lr, config),
                f"{name}/cell": lambda r=regime, lr=lr, key=key, last=last: last.update(
                    cell=run_cell(seed, "student", r, lr, config, key)),
            }
            group = time_interleaved(fns, baseline=f"{name}/train", runs=runs, warmup=warmup, device=device)
            trained = last["curves"]
            n_params = (sum(w.numel() for w in trained.weights.values()) if regime.students == "full"
                        else sum(p.numel() for _, p in lora_parameters(seed, regime)))
            for case in group:
                case.extra = {**(case.extra or {}), "steps": steps, "checkpoints": len(trained.curve or []),
                              "trained_params": n_params}
                if case.label == f"{name}/cell":
                    case.extra["first_order"] = last["cell"].get("first_order")
            cases += group
    return cases


def lora_parameters(seed: Any, regime: Any) -> list[tuple[str, torch.Tensor]]:
    """The adapter parameters a LoRA student of `regime` trains (their count is the extra's)."""
    from workbench.organism.build import student_seed_of
    from workbench.organism.regimes import hf_student

    model, _, _ = hf_student(seed, "teacher", regime, student_seed_of(int(seed.manifest["seed"]), "student"))
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
