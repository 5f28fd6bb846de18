"""`python -m workbench.compare`: capture the residual stream of an organism's seeds, compare each
model's activation shift with its parent's, and print cos(v_model, v_teacher) over seeds.

Writes OUT/DATA/seed{N}/ (the comparison, its activations and figures) and OUT/DATA/ (the
aggregate over seeds and its figures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.analyses.compare import CompareConfig, aggregate_seeds
from workbench.cli import common
from workbench.cli.organism_runs import compare_organism_seed
from workbench.results.figures import write_result_figures

COMPARE_FLAGS = common.ConfigFlags(CompareConfig, (
    common.ConfigFlag("n_bootstrap", "bootstrap replicates over inputs", flag="--bootstrap", type=common.nonnegative_int),
))


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.compare", (
        "Capture the residual stream of an organism's models and compare each model's activation shift "
        "against its parent: cos(v_student, v_teacher) beside the control, other-target and cross-init students."))
    common.add_organism_flag(p, common.DEFAULT_ORGANISM, help="organism directory holding seed*/")
    common.add_seeds_flag(p, [0], "seeds to compare")
    p.add_argument("--data", default="teacher", help="teacher (distillation data, default) | base | prompts")
    p.add_argument("--limit", type=common.positive_int, default=None, help="use only the first N rows of the data")
    COMPARE_FLAGS.add_to(p)
    common.add_out_flag(p, "artifacts/compare", "output directory")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_quiet_flag(p)
    return p


def compare_seeds(args: argparse.Namespace) -> int:
    """Compare every asked seed, then aggregate over seeds and print the table against the teacher."""
    device = common.device_of(args)
    seeds = common.organism_seeds(args.organism, args.seeds)  # a mistyped organism first, then --out
    out = common.writable_out(Path(args.out) / args.data)
    results = []
    for seed, seed_dir in seeds:
        cfg = CompareConfig(**COMPARE_FLAGS.values(args))
        result = compare_organism_seed(seed_dir, out / f"seed{seed}", data=args.data, limit=args.limit, config=cfg,
                                       device=device, progress=common.show_progress(args))  # saves the result
        write_result_figures(result, out / f"seed{seed}")
        results.append(result)
    aggregate = aggregate_seeds(results)
    common.save_with_figures(aggregate, out)
    print(aggregate.table([p for p in aggregate.values if p.endswith("~teacher")]))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(compare_seeds, parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
