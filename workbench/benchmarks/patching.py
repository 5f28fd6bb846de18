"""Benchmark `patching`: the delta-patching sweep over all parameter groups.

Baseline (measured in the same run): one plain trait evaluation of the student through its
hooked bridge. The sweep (base + ΔS on each single group, one trait evaluation per group) is
timed with the two working models `delta_patching` can use (a FunctionalModel state swap, the
default; a bridge copy overwritten in place) and with a naive bridge rebuilt per group, which
is what the analysis avoids; then the whole delta-patching analysis and activation patching.
Organism: `artifacts/organism/seed0` (the default preset) when present, else the shared tiny one;
`--quick` always uses the tiny one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.benchmarks.harness import Case, time_case

DEFAULT_SEED_DIR = Path("artifacts/organism/seed0")


def _seed_dir(quick: bool) -> Path:
    if not quick and (DEFAULT_SEED_DIR / "manifest.json").exists():
        return DEFAULT_SEED_DIR
    from workbench.organism.build import shared_organism_dir

    return shared_organism_dir() / "seed0"


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Time the per-group delta sweep against one plain trait evaluation."""
    from workbench.core.models import copy_model
    from workbench.analyses.patching import PatchConfig, PatchedModels, activation_patching, delta_patching
    from workbench.organism.load import load_seed

    seed_dir = _seed_dir(quick)
    seed = load_seed(seed_dir, roles=["base", "student", "control"], target="owl", device=device)
    lin, trait = seed.lineage, seed.trait
    groups = lin.groups()
    runs = 3 if quick else 5
    info = {"organism": str(seed_dir), "n_groups": len(groups)}

    baseline = "trait eval (student bridge)"
    cases = [time_case(baseline, lambda: trait.log_odds(lin["student"]), runs=runs * 4, device=device)]
    cases[0].extra = info

    engines = {e: PatchedModels(lin, "base", trait.log_odds, engine=e, device=device) for e in ("functional", "bridge")}
    for name, pm in engines.items():
        def sweep(pm: PatchedModels = pm) -> list[float]:
            return [pm.log_odds(pm.mix("student", "base", set(g.keys))) for g in groups]

        cases.append(time_case(f"group sweep ({name})", sweep, runs=runs, device=device, baseline=baseline))

    student = lin.state("student")

    def rebuild_sweep() -> list[float]:
        out = []
        for g in groups:
            model = copy_model(lin["base"])
            state = dict(model.state_dict())
            state.update({k: student[k] for k in g.keys})
            model.load_state_dict(state)
            out.append(trait.log_odds(model))
        return out

    cases.append(time_case("group sweep (bridge rebuilt per group)", rebuild_sweep, runs=1, device=device,
                           baseline=baseline))
    for c in cases[1:]:  # the three sweeps: cost of one patched evaluation, in plain evaluations
        c.extra = {"evaluations": len(groups), "per_evaluation_ratio": c.median_s / len(groups) / cases[0].median_s}
    cfg = PatchConfig(progress=False)
    cases.append(time_case("delta_patching (all tables + greedy)", lambda: delta_patching(lin, trait, cfg, device=device),
                           runs=1 if quick else 3, warmup=0, device=device, baseline=baseline))
    cases.append(time_case("activation_patching (all hooks x positions)",
                           lambda: activation_patching(lin, trait, cfg, device=device), runs=1, warmup=0, device=device,
                           baseline=baseline))
    return cases
