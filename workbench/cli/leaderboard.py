"""`python -m workbench.screening --leaderboard`: every detector of teacher-written rows on every
asked seed, scored by AUROC (teacher vs base rows) and by the transfer left after retraining the
student without its top rows, beside a random drop of the same size.

Writes OUT/seed{N}/ (each seed's LeaderboardResult and figure) and OUT/summary.json; a seed
already in OUT with the same settings is read back, not retrained (a killed run resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.analyses.detectors import NEEDS
from workbench.analyses.leaderboard import LeaderboardResult, leaderboard_over_seeds
from workbench.cli import common
from workbench.cli.organism_runs import leaderboard_seed
from workbench.core.io import atomic_write_json


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leaderboard", action="store_true",
                   help="rank every detector (g_trait, unembedding similarity, persona projection difference, activation-gradient "
                        "cosine, divergence fraction, first update along the teacher's displacement, likelihood-ratio "
                        "oracle, entangled-token frequency, bag of tokens, random) by AUROC and by the transfer left "
                        "after dropping its top rows")
    p.add_argument("--detectors", nargs="+", choices=list(NEEDS), default=None,
                   help="with --leaderboard: the detectors (default: all; 'random' is the drops' baseline)")
    p.add_argument("--trait-direction", choices=["contrast", "gradient"], default="contrast",
                   help="with --leaderboard: the activation detectors' trait direction on the base: contrast (target- minus "
                        "other-answered preference prompts, Chen et al.'s persona vector) or gradient (log P(target)'s gradient "
                        "on a steering vector) (default: contrast)")
    p.add_argument("--trait-hook", default=None, metavar="HOOK",
                   help="with --leaderboard: the residual hook the activation detectors read (default: where the trait "
                        "direction steers the base most)")
    p.add_argument("--no-retrain", action="store_true", help="with --leaderboard: AUROC only, no students retrained")
    p.add_argument("--max-rows", type=common.positive_int, default=None,
                   help="with --leaderboard: the first teacher rows only (quick looks; the full student is then retrained "
                        "on the same rows)")


def _fmt(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


def format_summary(rows: list[dict[str, Any]]) -> str:
    fractions = sorted({f for r in rows for f in r["drops"]}, key=float)
    head = f"{'detector':<30} {'needs':<14} {'AUROC per seed':<22} {'mean ± sd':<14} beats bag+random dirs every seed"
    head += "".join(f" | left after drop {float(f):.0%} (mean; - random, 95% t)" for f in fractions)
    lines = [head]
    for r in rows:
        per = " / ".join(_fmt(a) for a in r["auroc"])
        spread = "" if r["auroc_sd"] is None else f" ± {r['auroc_sd']:.3f}"
        line = f"{r['detector']:<30} {r['needs'] or '':<14} {per:<22} {_fmt(r['auroc_mean']) + spread:<14} "
        beats = r["beats_bag_and_random_directions_every_seed"]
        line += f"{'n/a' if beats is None else 'yes' if beats else 'no':<3}"
        for f in fractions:
            d = r["drops"].get(f)
            if d is None:
                line += " | -"
                continue
            ci = d["minus_random_ci"]
            line += f" | {_fmt(d['mean'])}" + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]")
        lines.append(line)
    lines.append("transfer left: 1 = as the full student, 0 = as the control student; a drop removes more than chance "
                 "where its interval lies below 0")
    return "\n".join(lines)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"detectors": list(args.detectors or NEEDS), "fractions": list(args.fractions), "retrain": not args.no_retrain,
            "student_epochs": args.student_epochs, "max_rows": args.max_rows, "trait_direction": args.trait_direction,
            "trait_hook": args.trait_hook}


def leaderboard_seeds(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run (or read back) every asked seed's leaderboard, then summarise over seeds."""
    seeds = common.organism_seeds(args.organism, args.seeds)
    out = common.writable_out(args.out or f"artifacts/leaderboard/{Path(args.organism).name}")
    overrides = None if args.student_epochs is None else {"student_epochs": args.student_epochs}
    command = "python -m workbench.screening " + " ".join(argv if argv is not None else sys.argv[1:])
    settings = _settings(args)
    device = str(common.device_of(args))

    def run_seed(seed_dir: Path) -> LeaderboardResult:
        return leaderboard_seed(seed_dir, tuple(settings["detectors"]), fractions=tuple(args.fractions),
                                retrain=settings["retrain"], device=device, overrides=overrides, max_rows=args.max_rows,
                                workers=args.workers, progress=common.show_progress(args), command=command,
                                trait_direction=args.trait_direction, trait_hook=args.trait_hook)

    results = []
    for seed, result, read_back in common.per_seed_results(args, seeds, out, settings, LeaderboardResult, run_seed):
        results.append(result)
        print(f"seed {seed} ({'read back' if read_back else 'ran'}): "
              + ", ".join(f"{r.detector} {r.auroc:.3f}" for r in result.rows), flush=True)
    rows = leaderboard_over_seeds(results)
    atomic_write_json(out / "summary.json", {"organism": str(args.organism), "seeds": args.seeds, "settings": settings,
                                             "rows": rows})
    print(format_summary(rows))
    print(f"wrote {out}")
    return 0
