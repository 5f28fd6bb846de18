"""`python -m workbench.align_rows`: every row's alignment score a_i (and per token a_{i,t}) along
an organism's directions, streamed to a score store per seed, resumable, and shared out over
processes by `torchrun`.

Writes OUT/seed{N}/ (a `workbench.analyses.score_store.ScoreStore`: shards of a_i and a_{i,t}
per direction and batch, the rows, a manifest). The rows are those `python -m workbench.alignment`
scores: the seed's teacher- then base-written rows (`--max-rows` per source, seeded sample).
Run the same command again after a crash and it computes only the missing batches.

Under `torchrun --nproc-per-node N -m workbench.align_rows ...` whole batches are split over the N
processes (`gloo` on CPU, `nccl` with one GPU per process) and each store is byte-identical to a
one-process run at the same --threads; a plain `python -m workbench.align_rows` needs no launcher.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.analyses.alignment_config import DEFAULT_MEMORY_BUDGET, AlignmentConfig
from workbench.analyses.alignment_rows import RowScoresConfig, stream_alignment_scores
from workbench.analyses.alignment_steps import build_directions, build_objective, sample_rows
from workbench.analyses.score_store import ScoreStore
from workbench.cli import common
from workbench.cli.alignment import budget_argument
from workbench.core import distributed
from workbench.core.errors import unknown_name
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.teacher import teacher_logits
from workbench.organism.load import load_seed

DIRECTIONS = ("delta_T", "g_trait", "g_trait_no_unembed", "delta_S")


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.align_rows", __doc__.split("\n\n")[0].removeprefix(
        "`python -m workbench.align_rows`: "), epilog="Several processes: torchrun --nproc-per-node N -m "
        "workbench.align_rows ... (same flags; byte-identical stores).")
    common.add_organism_flag(p, common.DEFAULT_ORGANISM, help="organism directory holding seed*/")
    common.add_seeds_flag(p, [0], "seeds to score")
    p.add_argument("--directions", nargs="+", default=["delta_T", "g_trait"], choices=DIRECTIONS, metavar="NAME",
                   help=f"directions to score, of {', '.join(DIRECTIONS)} (default: delta_T g_trait)")
    p.add_argument("--loss", default="hard", choices=("hard", "soft"), help="distillation loss scored (default: hard)")
    p.add_argument("--max-rows", type=common.positive_int, metavar="N",
                   help="rows sampled per source, as python -m workbench.alignment (default: every row)")
    p.add_argument("--target", help="the trait of g_trait (default: the seed's own)")
    p.add_argument("--batch-size", type=common.positive_int, default=256,
                   help="rows per forward-mode pass and per shard: the memory bound (default: 256)")
    p.add_argument("--memory-budget", type=budget_argument, default=DEFAULT_MEMORY_BUDGET, metavar="SIZE",
                   help="most bytes of one direction's tangent held at once, e.g. 8GiB, none (default: "
                   f"{DEFAULT_MEMORY_BUDGET // 2**30}GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace a store of other rows or settings in --out")
    common.add_out_flag(p, None, "output directory (default: artifacts/align_rows/<organism name>-<loss>)")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_quiet_flag(p)
    return p


def score_seed(seed_dir: Path, out: Path, args: argparse.Namespace, device) -> ScoreStore:
    """One seed's rows, objective and directions (as `run_alignment` makes them), streamed to `out`."""
    seed = load_seed(seed_dir, roles=["base", "teacher", "student"], target=args.target, device=device)
    config = AlignmentConfig(loss=args.loss, max_rows_per_source=args.max_rows, n_random=0, device=str(device),
                             channel_ids=seed.channel_ids)
    inputs = Inputs.from_jsonl([seed.data(config.positive), seed.data(config.negative)])
    rows = sample_rows(inputs, config)
    model = AlignmentModel(seed.lineage, config.base)
    objective = build_objective(config, teacher_logits(model, config.teacher))
    wanted = {n: None for n in args.directions}
    if set(wanted) - {"delta_T", "delta_S"}:  # g_trait is a backward pass: only when asked
        dirs, _ = build_directions(seed.lineage, model, config, seed.trait, None)
    else:
        dirs = {n: seed.lineage.delta_view({"delta_T": config.teacher, "delta_S": "student"}[n], config.base)
                for n in wanted}
    for name in wanted:
        if name not in dirs:
            raise unknown_name("direction", name, dirs, fix=f"Directions {seed_dir} has.")
    meta = {"organism_seed": seed_dir.name, "loss": args.loss, "max_rows_per_source": args.max_rows,
            "target": seed.trait.target}
    return stream_alignment_scores(
        model, rows.data, {n: dirs[n] for n in wanted}, objective, out,
        RowScoresConfig(batch_size=args.batch_size, memory_budget_bytes=args.memory_budget, overwrite=args.overwrite,
                        progress=common.show_progress(args)), meta=meta)


def align_rows(args: argparse.Namespace) -> int:
    """Score every asked seed into OUT/seed{N}/ (this rank's batches under torchrun)."""
    seeds = common.organism_seeds(args.organism, args.seeds)  # a mistyped organism first, then --out
    out = common.writable_out(args.out or f"artifacts/align_rows/{Path(args.organism).name}-{args.loss}")
    device = distributed.init_if_launched(common.device_of(args))
    main_rank = distributed.rank_info().is_main
    try:
        for seed, seed_dir in seeds:
            store = score_seed(seed_dir, out / f"seed{seed}", args, device)
            if main_rank and not args.quiet:
                print(f"seed {seed}: {len(store.directions)} directions x {store.n_rows} rows -> {store.directory}",
                      flush=True)
    finally:
        distributed.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(align_rows, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
