"""`python -m workbench.steering`: one steering vector per layer on an organism's seeds.

For each seed: v_student, v_teacher and v_control (each model's mean residual activation minus
the base's) per hook; sufficiency (the base plus alpha v: the fraction of the student's log-odds
gain recovered) and necessity (v's direction ablated in the student: the share lost), beside
random directions of v_student's norm. Writes OUT/seed{N}/ (each seed's result and figures),
OUT/over_seeds.json (the rows over seeds) and prints the table over seeds (mean ± sd).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.analyses.steering import VECTORS_FROM, SteeringConfig
from workbench.analyses.steering_result import format_table
from workbench.cli import common
from workbench.cli.organism_runs import steer_organism_seed
from workbench.core.io import atomic_write_text
from workbench.results.seed_rows import SeedsResult

STEERING_FLAGS = common.ConfigFlags(SteeringConfig, (
    common.ConfigFlag("vectors_from", "where v is measured: prompts (the preference prompts, every position), answer "
                      "(their answer position) or rows (the distillation rows of --data, their completion positions)",
                      flag="--vectors-from", choices=VECTORS_FROM),
    common.ConfigFlag("alphas", "scales v is added with", flag="--alphas", type=float, nargs="+"),
    common.ConfigFlag("n_random", "random directions of v_student's norm per hook", flag="--random",
                      type=common.positive_int),
))


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.steering", (
        "One steering vector per layer: add each model's mean activation shift to the base (sufficiency) and ablate "
        "its direction in the student (necessity), beside the control student's shift and random directions."))
    common.add_organism_flag(p, common.DEFAULT_ORGANISM, help="organism directory holding seed*/")
    common.add_seeds_flag(p, [0], "seeds")
    p.add_argument("--data", default="teacher", help="rows for --vectors-from rows: teacher (default), base, ...")
    p.add_argument("--limit", type=common.positive_int, default=None, help="use only the first N rows of --data")
    STEERING_FLAGS.add_to(p)
    common.add_out_flag(p, "artifacts/steering", "output directory")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_quiet_flag(p)
    return p


def steer_seeds(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Every asked seed's steering result, then the rows and the table over seeds."""
    device = common.device_of(args)
    seeds = common.organism_seeds(args.organism, args.seeds)
    out = common.writable_out(args.out)
    cfg = SteeringConfig(**STEERING_FLAGS.values(args), progress=common.show_progress(args))
    command = "python -m workbench.steering " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    for seed, seed_dir in seeds:
        result = steer_organism_seed(seed_dir, cfg, data=args.data, limit=args.limit, device=device, command=command)
        common.save_with_figures(result, out / f"seed{seed}")
        results.append(result)
    SeedsResult.combine(results, [s for s, _ in seeds], [out / f"seed{s}" for s, _ in seeds], command).save(out)
    table = "\n\n".join(format_table(results, a) for a in cfg.alphas)
    atomic_write_text(out / "steering_table.txt", table + "\n")
    print(table)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return common.run(steer_seeds, args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
