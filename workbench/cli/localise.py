"""Weight deltas and causal localisation on built organism seeds: one table per seed, mean ± sd.

    python -m workbench.localise artifacts/organism [--out artifacts/localise/soft]

Writes each seed's results (weights, delta_patching, activation_patching; JSON + HTML figures)
under OUT/seed{n}/ and prints the per-seed numbers the issue asks for. Every seed needs a base,
a teacher and a student; the control student's columns are left out where there is none.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from workbench.analyses.patching import (
    ActivationPatchingResult,
    DeltaPatchingResult,
    PatchConfig,
    activation_patching,
    delta_patching,
)
from workbench.analyses.weights import WeightConfig, WeightDeltaResult, weight_deltas
from workbench.cli import common
from workbench.core.errors import ArtifactError
from workbench.organism.load import load_seed
from workbench.results.seeds import over_seeds

REQUIRED_ROLES = ("base", "teacher", "student")


def fmt(x: float | None, spec: str = "+.3f") -> str:
    return "undefined" if x is None else format(x, spec)


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.localise", __doc__.split("\n\n")[0])
    p.add_argument("organism_dir", nargs="?", metavar="ORGANISM", help="organism directory holding seed*/ (or --organism)")
    p.add_argument("--organism", metavar="DIR", help="the same, as a flag (the other commands' grammar)")
    common.add_seeds_flag(p, None, "seeds to localise (default: every built seed)")
    common.add_out_flag(p, None, "where to write results (default: no files)")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse, taking the organism from the positional argument or --organism (one of them)."""
    p = parser()
    args = p.parse_args(argv)
    if args.organism_dir and args.organism and Path(args.organism_dir) != Path(args.organism):
        p.error(f"two organisms given ({args.organism_dir} and --organism {args.organism}); give one")
    args.organism = args.organism or args.organism_dir
    if args.organism is None:
        p.error("the organism directory is required: python -m workbench.localise DIR (or --organism DIR)")
    return args


def localise_seed(
    seed_dir: Path, device: torch.device
) -> tuple[WeightDeltaResult, DeltaPatchingResult, ActivationPatchingResult]:
    """Weight deltas, delta patching and activation patching of one seed (the control student
    beside the student where the seed has one)."""
    seed = load_seed(seed_dir, device=device)
    lin = seed.lineage
    missing = [role for role in REQUIRED_ROLES if role not in lin]
    if missing:
        raise ArtifactError(f"{seed_dir} has no {', '.join(missing)} model (it has {', '.join(lin.names)}); localise "
                            f"needs {', '.join(REQUIRED_ROLES)}. Rebuild the seed with python -m workbench.organism.")
    control = "control" if "control" in lin else None
    models = tuple(m for m in ("student", "control", "other") if m in lin)
    w = weight_deltas(lin, WeightConfig(models=models, baseline=control or models[-1]))
    d = delta_patching(lin, seed.trait, PatchConfig(control=control))
    a = activation_patching(lin, seed.trait, PatchConfig(control=control))
    return w, d, a


def print_seed(seed_dir: Path, w: WeightDeltaResult, d: DeltaPatchingResult, a: ActivationPatchingResult) -> None:
    """The per-seed table: whole-model cosines, log-odds, groups, layers, leave-one-out, greedy set, hooks."""
    lo = d.log_odds
    has_control = "control" in lo
    print(f"== {seed_dir}  engine={d.engine}")
    print("  whole-model cos(ΔM, ΔT): " + ", ".join(f"{m} {w.value(m):+.3f}" for m in w.config.models))
    print(f"  log-odds: base {lo['base']:+.3f} student {lo['student']:+.3f}"
          + (f" control {lo['control']:+.3f}" if has_control else "")
          + f"; gain student {lo['student'] - lo['base']:+.3f}"
          + (f" control {lo['control'] - lo['base']:+.3f}" if has_control else "")
          + f"; recovered defined: {d.defined}")
    for r in d.top_groups(4):
        print(f"  group {r['name']:<18} gain {r['gain']:+.3f} recovered {fmt(r['recovered'])} "
              f"control {fmt(r['control_gain'])} random {fmt(r['random_gain'])}")
    for r in d.table("layer"):
        print(f"  set   {r['name']:<18} gain {r['gain']:+.3f} recovered {fmt(r['recovered'])} "
              f"control {fmt(r['control_gain'])}")
    loo = sorted(d.table("leave_one_out"), key=lambda r: r["gain"])[:3]
    print("  leave-one-out (largest drops): " + "; ".join(
        f"{r['name']} remaining {fmt(r['recovered'])} (gain {r['gain']:+.3f})" for r in loo))
    print(f"  greedy set (>= {d.config.recover:.0%}): " + (
        " + ".join(d.greedy_set) + f" -> {d.greedy[len(d.greedy_set) - 1]['recovered']:.3f}"
        if d.greedy_set is not None else "undefined"))
    for h in a.hooks:
        control_gain = a.value("control->base", h, metric="gain") if has_control else None
        print(f"  act {h:<26} student->base {fmt(a.value('student->base', h))} "
              f"base->student {fmt(a.value('base->student', h))} "
              f"gain {a.value('student->base', h, metric='gain'):+.3f} "
              f"control gain {fmt(control_gain)}")


def localise_seeds(args: argparse.Namespace) -> int:
    """Localise every seed, print each seed's table, then mean ± sd over seeds."""
    seeds = common.organism_seeds(args.organism, args.seeds)  # a mistyped organism first, then --out
    if args.out:
        common.writable_out(args.out)
    device = common.device_of(args)
    cos: dict[str, list[float]] = {}
    recovered: dict[str, list[float | None]] = {}
    greedy_sizes: list[int | None] = []
    for _, seed_dir in seeds:
        w, d, a = localise_seed(seed_dir, device)
        if args.out:
            for result in (w, d, a):
                common.save_with_figures(result, Path(args.out) / seed_dir.name)
        print_seed(seed_dir, w, d, a)
        for m in w.config.models:
            cos.setdefault(m, []).append(w.value(m))
        for r in d.table("group") + d.table("layer"):
            recovered.setdefault(r["name"], []).append(r["recovered"])
        greedy_sizes.append(len(d.greedy_set) if d.greedy_set is not None else None)
    if len(seeds) > 1:
        cos_stats = {m: over_seeds(v) for m, v in cos.items()}
        print("== across seeds: whole-model cos " + ", ".join(
            f"{m} {s.mean:+.3f} ± {s.sd:.3f}" for m, s in cos_stats.items()))
        print(f"   (mean ± sd over {len(seeds)} seeds; recovered only where defined on every seed)")
        stats = {k: over_seeds(v) for k, v in recovered.items()}
        rows = [(s.mean, s.sd, k) for k, s in stats.items() if s.n == len(s.per_seed)]
        for mean, sd, name in sorted(rows, reverse=True)[:6]:
            print(f"   recovered {name:<18} {mean:+.3f} ± {sd:.3f}")
        print(f"   greedy set sizes: {greedy_sizes}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(localise_seeds, parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
