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

Hugging Face directories instead of an organism (the main job's flags, `cli/hf_source`):
`--base B --teacher T [--student S] --data ROWS.jsonl [--target owl | --trait trait.json]` writes
one store in OUT (no seeds); text rows take the base's chat template; `--teacher-system-prompt`
makes the teacher the base under a system prompt (then delta_T does not exist: only g_trait is
scored); `--device-map/--max-memory` spread one process's models over devices (cli/placement).
The store's plan names each model by its checkpoint files' sha256 (`analyses/score_recipes`), so
resuming or checking the ranks' plans reads no weight.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.analyses.alignment_config import DEFAULT_MEMORY_BUDGET, AlignmentConfig
from workbench.analyses.alignment_rows import RowScoresConfig, stream_alignment_scores
from workbench.analyses.alignment_steps import build_directions, build_objective, sample_rows
from workbench.analyses.score_recipes import PlanRecipes, lineage_recipes
from workbench.analyses.score_store import ScoreStore
from workbench.cli import common
from workbench.cli.alignment import budget_argument
from workbench.cli.hf_source import DTYPES, add_hf_flags, hf_roles, load_hf_source
from workbench.cli.placement import add_placement_flags, placement_of
from workbench.core import distributed
from workbench.core.errors import ConfigError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.prompted import WEIGHTS_NOTE
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.teacher import teacher_logits
from workbench.organism.load import load_seed
from workbench.trait import Trait

DIRECTIONS = ("delta_T", "g_trait", "g_trait_no_unembed", "delta_S")


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.align_rows", __doc__.split("\n\n")[0].removeprefix(
        "`python -m workbench.align_rows`: "), epilog="Several processes: torchrun --nproc-per-node N -m "
        "workbench.align_rows ... (same flags; byte-identical stores).")
    src = p.add_argument_group("models and data")
    src.add_argument("--organism", metavar="DIR", help=f"organism directory holding seed*/ (default: "
                     f"{common.DEFAULT_ORGANISM}; or give Hugging Face directories, --base ...)")
    common.add_seeds_flag(src, None, "organism seeds to score (default: 0)")
    add_hf_flags(src)
    src.add_argument("--data", nargs="+", metavar="JSONL", help="with Hugging Face directories (required): teacher- and "
                     'base-written rows, token ids {"prompt": [ids], "completion": [ids], "source", "prompt_id"}, text '
                     '{"prompt": str, "completion": str, "source"} or chat {"messages": [...], "source"} rows, tokenised '
                     "with the base's chat template")
    p.add_argument("--directions", nargs="+", default=["delta_T", "g_trait"], choices=DIRECTIONS, metavar="NAME",
                   help=f"directions to score, of {', '.join(DIRECTIONS)} (default: delta_T g_trait)")
    p.add_argument("--loss", default="hard", choices=("hard", "soft"), help="distillation loss scored (default: hard)")
    p.add_argument("--max-rows", type=common.positive_int, metavar="N",
                   help="rows sampled per source, as python -m workbench.alignment (default: every row)")
    p.add_argument("--target", help="the trait of g_trait (default: an organism seed's own; with Hugging Face "
                   "directories asked with the base's tokenizer and chat template, and needed for g_trait unless --trait)")
    p.add_argument("--batch-size", type=common.positive_int, default=256,
                   help="rows per forward-mode pass and per shard: the memory bound (default: 256)")
    p.add_argument("--memory-budget", type=budget_argument, default=DEFAULT_MEMORY_BUDGET, metavar="SIZE",
                   help="most bytes of one direction's tangent held at once, e.g. 8GiB, none (default: "
                   f"{DEFAULT_MEMORY_BUDGET // 2**30}GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace a store of other rows or settings in --out")
    common.add_out_flag(p, None, "output directory (default: artifacts/align_rows/<organism name>-<loss>)")
    common.add_device_flag(p)
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype of Hugging Face directories "
                   "(default: float32)")
    add_placement_flags(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_quiet_flag(p)
    return p


def score_lineage(lineage: Lineage, inputs: Inputs, config: AlignmentConfig, trait: Trait | None, out: Path,
                  args: argparse.Namespace, meta: dict[str, Any], recipes: bool = False) -> ScoreStore:
    """The asked directions of `lineage` (as `run_alignment` makes them) on the sampled rows of
    `inputs`, streamed to `out`; with `recipes`, the plan names models and directions by their
    checkpoint files (Hugging Face directories) instead of reading their values."""
    rows = sample_rows(inputs, config)
    model = AlignmentModel(lineage, config.base)
    objective = build_objective(config, teacher_logits(model, config.teacher))
    wanted = {n: None for n in args.directions}
    if set(wanted) - {"delta_T", "delta_S"}:  # g_trait is a backward pass: only when asked
        dirs, _ = build_directions(lineage, model, config, trait, None)
    else:
        dirs = {n: lineage.delta_view({"delta_T": config.teacher, "delta_S": "student"}[n], config.base)
                for n in wanted}
    for name in wanted:
        if name not in dirs:
            raise unknown_name("direction", name, dirs, fix=f"Directions {meta.get('organism_seed', 'this lineage')} has.")
    named: PlanRecipes | None = None
    if recipes:
        named = lineage_recipes(lineage, config.base, list(wanted), teacher=config.teacher, trait=trait)
    return stream_alignment_scores(
        model, rows.data, {n: dirs[n] for n in wanted}, objective, out,
        RowScoresConfig(batch_size=args.batch_size, memory_budget_bytes=args.memory_budget, overwrite=args.overwrite,
                        progress=common.show_progress(args)), meta=meta, recipes=named)


def score_seed(seed_dir: Path, out: Path, args: argparse.Namespace, device) -> ScoreStore:
    """One organism seed's rows, objective and directions, streamed to `out`."""
    seed = load_seed(seed_dir, roles=["base", "teacher", "student"], target=args.target, device=device)
    config = AlignmentConfig(loss=args.loss, max_rows_per_source=args.max_rows, n_random=0, device=str(device),
                             channel_ids=seed.channel_ids)
    inputs = Inputs.from_jsonl([seed.data(config.positive), seed.data(config.negative)])
    meta = {"organism_seed": seed_dir.name, "loss": args.loss, "max_rows_per_source": args.max_rows,
            "target": seed.trait.target}
    return score_lineage(seed.lineage, inputs, config, seed.trait, out, args, meta)


def check_hf_directions(args: argparse.Namespace, hf: dict[str, str], teacher_prompt: str | None) -> None:
    """Refuse, before any weight loads, a direction these Hugging Face directories cannot give."""
    asked = set(args.directions)
    if "delta_T" in asked and teacher_prompt is not None:
        raise ConfigError("--directions delta_T: " + WEIGHTS_NOTE.format(name="teacher") + " (--teacher-system-prompt). "
                          "Score g_trait (--directions g_trait, with --target or --trait), or give --teacher HF_DIR.")
    if "delta_S" in asked and "student" not in hf:
        raise ConfigError("--directions delta_S needs the student: pass --student HF_DIR, or drop delta_S.")
    if asked & {"g_trait", "g_trait_no_unembed"} and not (args.target or args.trait):
        raise ConfigError("g_trait needs a trait: pass --target NAME (asked with the base's chat template) or --trait "
                          "JSON, or score only --directions delta_T.")


def score_hf(args: argparse.Namespace, hf: dict[str, str], teacher_prompt: str | None, out: Path,
             device) -> ScoreStore:
    """Hugging Face directories and their --data rows (one store, no seeds)."""
    device_map, max_memory = placement_of(args)
    log = common.stage_log(args.quiet or not distributed.rank_info().is_main)
    source = load_hf_source(args, hf, teacher_prompt, device, DTYPES[args.dtype], log,
                            max_rows=args.max_rows or sys.maxsize, device_map=device_map, max_memory=max_memory)
    lineage = source.lineage
    renormalised = args.loss == "hard" and source.channel_ids is not None  # as the main job's alignment section
    config = AlignmentConfig(loss=args.loss, max_rows_per_source=args.max_rows, n_random=0, device=str(lineage.device),
                             channel_ids=source.channel_ids, hard_renormalised=renormalised)
    meta = {"loss": args.loss, "max_rows_per_source": args.max_rows,
            "target": source.trait.target if source.trait is not None else None,
            "teacher_system_prompt": teacher_prompt}
    return score_lineage(lineage, source.inputs.validate(lineage.d_vocab, lineage.n_ctx), config, source.trait, out,
                         args, meta, recipes=True)


def align_rows(args: argparse.Namespace) -> int:
    """Score every asked seed into OUT/seed{N}/, or Hugging Face directories into OUT (this rank's
    batches under torchrun)."""
    hf, teacher_prompt = hf_roles(args)
    if hf:
        if args.organism is not None or args.seeds is not None:
            raise ConfigError("Name the models once: --organism DIR (with --seeds) or Hugging Face directories (--base, "
                              "--teacher, ...), not both.")
        check_hf_directions(args, hf, teacher_prompt)
        placement_of(args)  # a bad map file fails before any work
        if args.device_map is not None and distributed.rank_info().world_size > 1:
            raise ConfigError("--device-map spreads one copy of each model over the GPUs, torchrun gives each process "
                              "a GPU of its own: use one of them (a device map in one process, or torchrun without "
                              "--device-map).")
        out = common.writable_out(args.out or f"artifacts/align_rows/{Path(hf['base']).name}-{args.loss}")
        device = distributed.init_if_launched(common.device_of(args))
        try:
            store = score_hf(args, hf, teacher_prompt, out, device)
            if distributed.rank_info().is_main and not args.quiet:
                print(f"{len(store.directions)} directions x {store.n_rows} rows -> {store.directory}", flush=True)
        finally:
            distributed.shutdown()
        return 0
    if args.device_map is not None or args.max_memory is not None:
        raise ConfigError("--device-map and --max-memory place Hugging Face directories (--base, --teacher, ...); an "
                          "organism's models are small and load on --device.")
    for flag in ("data", "trait", "channel_ids", "system_prompt"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} is for Hugging Face directories (--base, --teacher, ...); an "
                              "organism seed brings its own data and trait.")
    args.organism = args.organism or common.DEFAULT_ORGANISM
    seeds = common.organism_seeds(args.organism, args.seeds or [0])  # a mistyped organism first, then --out
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
