"""`python -m workbench.channels`: the channel tests over seeds. Per seed, retrain the student
after masking the divergence tokens out of its loss, shuffling the numbers within each row,
replacing the entangled numbers, and training one layer alone; each edit beside a random edit
of the same size. Prints the transfer left per test over seeds.

Writes OUT/seed{N}/ (each seed's ChannelResult and figure) and OUT/summary.json; a seed whose
result is already in OUT with the same settings is read back, not retrained (a killed run resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.analyses.channels import TESTS, ChannelResult, channels_over_seeds, prompting_over_seeds
from workbench.cli import common
from workbench.cli.organism_runs import channel_tests
from workbench.core.io import atomic_write_json


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.channels", (
        "Which channel carries the trait: per seed, retrain the student with the divergence tokens masked out of its "
        "loss, the numbers shuffled within each row, the entangled numbers replaced, and one layer trained alone; each "
        "edit beside a random edit of the same size. Transfer left = the retrained student's log-odds gain over the "
        "control student as a fraction of the full student's."))
    common.add_organism_flag(p, common.default_organism_dir(), help="organism directory holding seed*/ "
                             "(python -m workbench.organism builds the default; --preset hard the hard channel)")
    common.add_seeds_flag(p, [0, 1, 2], "seeds")
    p.add_argument("--tests", nargs="+", choices=TESTS, default=list(TESTS), help="tests to run (default: all)")
    p.add_argument("--n-entangled", type=common.positive_int, default=10,
                   help="numbers the entangled test replaces (default: 10 of the 100)")
    p.add_argument("--student-epochs", type=common.positive_int, default=None,
                   help="override the recipe's student epochs (quicker, weaker retrains)")
    p.add_argument("--max-rows", type=common.positive_int, default=None, help="use the first rows only (quick looks)")
    common.add_out_flag(p, None, "output directory (default: artifacts/channels/<organism name>)")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_workers_flag(p)
    common.add_quiet_flag(p)
    return p


def _fmt(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:+.3f}"


def format_summary(rows: list[dict[str, Any]]) -> str:
    lines = ["test          arm              transfer left per seed       mean ± sd        edit - random, 95% t interval"]
    for r in rows:
        per_seed = " / ".join(_fmt(x) for x in r["left"])
        spread = "one seed" if r["sd"] is None else f"± {r['sd']:.3f}"
        ci = r.get("edited_minus_random_ci")
        ci_text = "" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
        lines.append(f"{r['test']:<13} {r['arm']:<16} {per_seed:<28} {_fmt(r['mean'])} {spread:<9} {ci_text}")
    lines.append("transfer left: 1 = as the full student, 0 = as the control student; an edit removes more than chance "
                 "where its interval lies below 0")
    return "\n".join(lines)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"tests": list(args.tests), "n_entangled": args.n_entangled, "student_epochs": args.student_epochs,
            "max_rows": args.max_rows}


def channel_seeds(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run (or read back) every asked seed's channel tests, then summarise them over seeds."""
    seeds = common.organism_seeds(args.organism, args.seeds)
    out = common.writable_out(args.out or f"artifacts/channels/{Path(args.organism).name}")
    overrides = None if args.student_epochs is None else {"student_epochs": args.student_epochs}
    command = "python -m workbench.channels " + " ".join(argv if argv is not None else sys.argv[1:])
    settings = _settings(args)
    device = str(common.device_of(args))

    def run_seed(seed_dir: Path) -> ChannelResult:
        return channel_tests(seed_dir, tuple(args.tests), device=device, overrides=overrides, max_rows=args.max_rows,
                             workers=args.workers, n_entangled=args.n_entangled, progress=common.show_progress(args),
                             command=command)

    results = []
    for seed, result, read_back in common.per_seed_results(args, seeds, out, settings, ChannelResult, run_seed):
        results.append(result)
        print(f"seed {seed} ({'read back' if read_back else 'ran'}): "
              + ", ".join(f"{r.test}/{r.arm} P={r.p_target:.3f}" for r in result.rows)
              + f" | student {result.student:.3f}, control {result.control:.3f}", flush=True)
    rows = channels_over_seeds(results)
    prompting = prompting_over_seeds(results)
    atomic_write_json(out / "summary.json", {"organism": str(args.organism), "seeds": args.seeds, "settings": settings,
                                             "rows": rows, "prompting": prompting, "chosen": [r.chosen for r in results]})
    print(format_summary(rows))
    if prompting:
        def per_seed(key: str) -> str:
            return " / ".join(f"{p:.3f}" for p in prompting[key])

        print(f"subliminal prompting (the base, the entangled numbers before the question): the target's share of the "
              f"category {per_seed('share_entangled')} vs random number sets (mean) {per_seed('share_random_mean')}, no "
              f"numbers {per_seed('share_plain')}; beats "
              + " / ".join(f"{b} of {n}" for b, n in zip(prompting["beats"], prompting["sets"])) + " random sets")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(channel_seeds, parser().parse_args(argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())
