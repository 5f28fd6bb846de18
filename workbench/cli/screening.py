"""`python -m workbench.screening`: the screening defense over seeds: retrain each seed's student
after dropping the top fraction of teacher rows by trait-gradient alignment, beside a random drop
of the same size.

Writes OUT/seed{N}/ (each seed's ScreeningResult and figures) and OUT/summary.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.analyses.screening import screening_over_seeds
from workbench.cli import common, leaderboard
from workbench.cli.organism_runs import screening_defense
from workbench.core.io import atomic_write_json


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.screening", (
        "Screening defense over seeds: retrain each seed's student after dropping the top fraction of teacher rows "
        "by trait-gradient alignment, beside a random drop of the same size. With --leaderboard: every detector, by "
        "AUROC and by the transfer left after its drops."))
    common.add_organism_flag(p, common.default_organism_dir("hard"), help="organism directory holding seed*/ "
                             "(python -m workbench.organism --preset hard builds the default)")
    common.add_seeds_flag(p, [0, 1, 2], "seeds")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25], help="fractions dropped (default: 0.1 0.25)")
    p.add_argument("--student-epochs", type=int, default=None, help="override the recipe's student epochs (quicker, weaker retrains)")
    common.add_out_flag(p, None, "output directory (default: artifacts/screening/<organism name>, with --leaderboard "
                        "artifacts/leaderboard/<organism name>)")
    leaderboard.add_flags(p)
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_workers_flag(p)
    common.add_quiet_flag(p)
    return p


def format_summary(rows: list[dict[str, Any]]) -> str:
    def fmt(xs: list[float]) -> str:
        return " / ".join(f"{x:.3f}" for x in xs)

    lines = ["drop   top by g_trait        random                top - random (mean ± sd)"]
    for r in rows:
        lines.append(f"{r['fraction']:>4.0%}   {fmt(r['top_g_trait']):<20}  {fmt(r['random']):<20}  "
                     f"{r['difference_mean']:+.3f} " + (f"± {r['difference_sd']:.3f}" if len(r["top_g_trait"]) > 1
                                                         else "(one seed: no sd)"))
    return "\n".join(lines)


def screen_seeds(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Retrain every asked seed's students, then summarise top-vs-random over seeds."""
    seeds = common.organism_seeds(args.organism, args.seeds)  # a mistyped organism first, then --out
    out = common.writable_out(args.out or f"artifacts/screening/{Path(args.organism).name}")
    overrides = None if args.student_epochs is None else {"student_epochs": args.student_epochs}
    command = "python -m workbench.screening " + " ".join(argv if argv is not None else sys.argv[1:])
    device = str(common.device_of(args))
    results = []
    for seed, seed_dir in seeds:
        result = screening_defense(seed_dir, tuple(args.fractions), device=device, overrides=overrides, workers=args.workers,
                           progress=common.show_progress(args), command=command)
        common.save_with_figures(result, out / f"seed{seed}")
        results.append(result)
        print(f"seed {seed}: " + ", ".join(f"drop {r.fraction:.0%} {r.dropped} -> P={r.p_target:.3f}" for r in result.rows),
              flush=True)
    rows = screening_over_seeds(results)
    atomic_write_json(out / "summary.json", {"organism": str(args.organism), "seeds": args.seeds, "rows": rows})
    print(format_summary(rows))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.leaderboard and (args.detectors or args.no_retrain or args.max_rows):
        print("error: --detectors, --no-retrain and --max-rows go with --leaderboard.", file=sys.stderr)
        return 2
    return common.run(leaderboard.leaderboard_seeds if args.leaderboard else screen_seeds, args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
