"""Weight deltas and causal localisation on built organism seeds: one table per seed, mean ± sd.

    python -m workbench.localise artifacts/organism [--out artifacts/localise/soft]

Writes each seed's results (weights, delta_patching, activation_patching; JSON + HTML figures)
under OUT/seed{n}/ and prints the per-seed numbers the issue asks for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from workbench.organism.load import load_seed
from workbench.analyses.patching import PatchConfig, activation_patching, delta_patching
from workbench.results.figures import write_result_figures
from workbench.results.seeds import over_seeds
from workbench.analyses.weights import weight_deltas


def fmt(x: float | None, spec: str = "+.3f") -> str:
    return "undefined" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.localise", description=__doc__.split("\n\n")[0])
    p.add_argument("organism", help="organism directory holding seed*/")
    p.add_argument("--out", default=None, help="where to write results (default: no files)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = sorted(Path(args.organism).glob("seed*/manifest.json"), key=lambda q: int(q.parent.name[4:]))
    cos: dict[str, list[float]] = {}
    recovered: dict[str, list[float | None]] = {}
    greedy_sizes: list[int | None] = []
    for manifest in seeds:
        seed_dir = manifest.parent
        seed = load_seed(seed_dir, device=args.device)
        lin = seed.lineage
        w = weight_deltas(lin)
        d = delta_patching(lin, seed.trait, PatchConfig())
        a = activation_patching(lin, seed.trait, PatchConfig())
        if args.out:
            out = Path(args.out) / seed_dir.name
            for r in (w, d, a):
                r.save(out)
                write_result_figures(r, out)
        lo = d.log_odds
        print(f"== {seed_dir}  engine={d.engine}")
        print("  whole-model cos(ΔM, ΔT): " + ", ".join(f"{m} {w.value(m):+.3f}" for m in w.config.models))
        for m in w.config.models:
            cos.setdefault(m, []).append(w.value(m))
        for r in d.table("group") + d.table("layer"):
            recovered.setdefault(r["name"], []).append(r["recovered"])
        greedy_sizes.append(len(d.greedy_set) if d.greedy_set is not None else None)
        print(f"  log-odds: base {lo['base']:+.3f} student {lo['student']:+.3f} control {lo['control']:+.3f}; "
              f"gain student {lo['student'] - lo['base']:+.3f} control {lo['control'] - lo['base']:+.3f}; "
              f"recovered defined: {d.defined}")
        for r in d.top_groups(4):
            print(f"  group {r['name']:<18} gain {r['gain']:+.3f} recovered {fmt(r['recovered'])} "
                  f"control {r['control_gain']:+.3f} random {r['random_gain']:+.3f}")
        for r in d.table("layer"):
            print(f"  set   {r['name']:<18} gain {r['gain']:+.3f} recovered {fmt(r['recovered'])} "
                  f"control {r['control_gain']:+.3f}")
        loo = sorted(d.table("leave_one_out"), key=lambda r: r["gain"])[:3]
        print("  leave-one-out (largest drops): " + "; ".join(
            f"{r['name']} remaining {fmt(r['recovered'])} (gain {r['gain']:+.3f})" for r in loo))
        print(f"  greedy set (>= {d.config.recover:.0%}): " + (
            " + ".join(d.greedy_set) + f" -> {d.greedy[len(d.greedy_set) - 1]['recovered']:.3f}"
            if d.greedy_set is not None else "undefined"))
        for h in a.hooks:
            print(f"  act {h:<26} student->base {fmt(a.value('student->base', h))} "
                  f"base->student {fmt(a.value('base->student', h))} "
                  f"gain {a.value('student->base', h, metric='gain'):+.3f} "
                  f"control gain {a.value('control->base', h, metric='gain'):+.3f}")
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


if __name__ == "__main__":
    raise SystemExit(main())
