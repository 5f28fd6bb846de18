"""`python -m workbench.alignment`: gradient alignment of an organism's teacher- vs base-written
data, per seed, with the AUROC table over seeds.

Writes OUT/seed{N}/ (each seed's AlignmentResult and figures) and OUT/summary.json with the
per-group figures over seeds.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.analyses.alignment import AlignmentConfig, group_figure_over_seeds, detection_over_seeds
from workbench.analyses.alignment_config import DEFAULT_MEMORY_BUDGET, parse_bytes
from workbench.cli import common
from workbench.cli.organism_runs import align_organism
from workbench.core.io import atomic_write_json
from workbench.results.figures import write_figures

def budget_argument(text: str) -> int | None:
    """`parse_bytes` as an argparse type: a bad size is a usage error (exit 2) naming it."""
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MEMORY_BUDGET_FLAG = common.ConfigFlag(
    "memory_budget_bytes", "most memory the per-example gradients of per-group alignment hold at once, e.g. 8GiB, "
    "512MiB, none (no limit)", flag="--memory-budget", type=budget_argument,
    default_text=f"{DEFAULT_MEMORY_BUDGET // 2**30}GiB")
"""Shared by `python -m workbench.alignment` and the main job."""

ALIGNMENT_FLAGS = common.ConfigFlags(AlignmentConfig, (
    common.ConfigFlag("loss", "distillation loss scored", choices=("hard", "soft")),
    common.ConfigFlag("max_rows_per_source", "rows sampled per source", flag="--max-rows", type=common.positive_int),
    common.ConfigFlag("n_random", "random directions", type=common.nonnegative_int),
    common.ConfigFlag("path_group_points", "K of the per-group path attribution; 0 skips", type=common.nonnegative_int),
    MEMORY_BUDGET_FLAG,
))


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.alignment", (
        "Gradient alignment of an organism's teacher- vs base-written data with the teacher delta, the trait "
        "gradient, the student delta and random directions, per seed."))
    common.add_organism_flag(p, common.DEFAULT_ORGANISM, help="organism directory holding seed*/")
    common.add_seeds_flag(p, [0], "seeds to analyse")
    ALIGNMENT_FLAGS.add_to(p)
    p.add_argument("--target", default="owl", help="the trait (default: owl)")
    common.add_out_flag(p, None, "output directory (default: artifacts/alignment/<organism name>-<loss>)")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_quiet_flag(p)
    return p


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'direction':<28} {'mean':>6} {'sd':>6}  per seed"]
    for r in rows:
        sd = f"{r['sd']:6.3f}" if len(r["per_seed"]) > 1 else "  (one seed: no sd)"  # not a spread of 0.000
        lines.append(f"{r['direction']:<28} {r['mean']:6.3f} {sd}  " + " ".join(f"{v:.3f}" for v in r["per_seed"]))
    return "\n".join(lines)


def align_seeds(args: argparse.Namespace) -> int:
    """Score every asked seed, then summarise the detection AUROCs over seeds."""
    seeds = common.organism_seeds(args.organism, args.seeds)  # a mistyped organism first, then --out
    out = common.writable_out(args.out or f"artifacts/alignment/{Path(args.organism).name}-{args.loss}")
    device = str(common.device_of(args))
    results = []
    for seed, seed_dir in seeds:
        config = AlignmentConfig(**ALIGNMENT_FLAGS.values(args), device=device, progress=common.show_progress(args))
        result = align_organism(seed_dir, config, target=args.target)
        common.save_with_figures(result, out / f"seed{seed}")
        results.append(result)
        print(f"seed {seed}: " + ", ".join(f"{r['direction']}={r['auroc']:.3f}" for r in result.detection
                                            if r["kind"] != "random"), flush=True)
    rows = detection_over_seeds(results)
    atomic_write_json(out / "summary.json", {"seeds": args.seeds, "loss": args.loss, "detection": rows})
    figs = {"groups_over_seeds_" + "".join(c if c.isalnum() else "_" for c in name): group_figure_over_seeds(results, name)
            for name in results[0].group_diff if not name.startswith("random")}
    write_figures(figs, out)
    print(format_summary(rows))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(align_seeds, parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
