"""`python -m workbench.capture`: capture activations of a lineage on JSONL rows into an artifact.

The models come from an organism seed (`--organism DIR --seed N`) or from local Hugging Face
directories (`--base`, `--teacher`, ...); the rows from `--data` JSONL (token ids, or text/chat
rows tokenised with the base directory's chat template). The artifact (`workbench.capture.store`)
is resumable: run the same command again after a crash and it writes only the missing shards.

Under `torchrun --nproc-per-node N -m workbench.capture ...` the shards are split over the N
processes (`gloo` on CPU, `nccl` with one GPU per process) and the artifact is byte-identical to
a one-process capture; a plain `python -m workbench.capture` needs no launcher.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.capture.capture import capture
from workbench.cli import common
from workbench.cli.hf_source import context_length
from workbench.cli.placement import add_placement_flags, placement_of
from workbench.cli.job import DTYPES, HF_ROLES
from workbench.core import distributed
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.capture", __doc__.split("\n\n")[0],
                              epilog="Several processes: torchrun --nproc-per-node N -m workbench.capture ... "
                              "(same flags; one artifact, byte-identical to a one-process capture).")
    src = p.add_argument_group("models and data")
    src.add_argument("--organism", metavar="DIR", help="organism directory holding seed{N}/ (or give --base, ...)")
    src.add_argument("--seed", type=int, default=0, help="organism seed (default: 0)")
    for role in HF_ROLES:
        src.add_argument(f"--{role}", metavar="HF_DIR", help=f"local Hugging Face checkpoint directory of the {role} "
                         "(instead of --organism)")
    src.add_argument("--data", nargs="+", required=True, metavar="JSONL",
                     help='rows: token ids {"prompt": [ids], "completion": [ids], "source"}, or with Hugging Face '
                     'directories text {"prompt": str, "completion": str, "source"} or chat {"messages": [...]} rows')
    src.add_argument("--max-rows", type=common.positive_int, metavar="N", help="read at most N rows (default: all)")
    what = p.add_argument_group("what to capture")
    what.add_argument("--hooks", nargs="+", required=True, help="hook names or aliases, e.g. blocks.0.hook_resid_post")
    what.add_argument("--positions", default="all", help="all, last, mean (over completion tokens) or indices "
                      "such as 0,3,5 (default: all)")
    what.add_argument("--roles", nargs="+", help="models to capture (default: every model loaded)")
    how = p.add_argument_group("how")
    how.add_argument("--batch-size", type=common.positive_int, default=64, help="rows per forward pass (default: 64)")
    how.add_argument("--shard-rows", type=common.positive_int, help="rows per shard file (default: ~16 MB of activations)")
    how.add_argument("--storage-dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                     help="dtype of the stored activations (default: float32)")
    how.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default: float32)")
    common.add_device_flag(how)
    add_placement_flags(how)
    common.add_out_flag(how, None, "artifact directory (required)")
    how.add_argument("--overwrite", action="store_true", help="replace a finished capture of other arguments in --out")
    common.add_quiet_flag(how)
    common.add_threads_flag(how)
    return p


def _positions(text: str) -> str | list[int]:
    if text in ("all", "last", "mean"):
        return text
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--positions {text!r}: give all, last, mean or comma-separated indices such as 0,3,5.") from None


def _load(args: argparse.Namespace, device) -> tuple[Lineage, Inputs]:
    """The lineage and rows the flags name (models on `device`)."""
    dtype = DTYPES[args.dtype]
    hf = {role: getattr(args, role) for role in HF_ROLES if getattr(args, role)}
    if bool(hf) == bool(args.organism):
        raise ConfigError("Name the models once: --organism DIR (with --seed N) or Hugging Face directories "
                          "(--base, --teacher, ...), not both and not neither.")
    device_map, max_memory = placement_of(args)  # a bad map file fails before any model loads
    if (device_map is not None or max_memory is not None) and not hf:
        raise ConfigError("--device-map and --max-memory place Hugging Face directories (--base, --teacher, ...); an "
                          "organism's models are small and load on --device.")
    if device_map is not None and distributed.rank_info().world_size > 1:
        raise ConfigError("--device-map spreads one copy of each model over the GPUs, torchrun gives each process a GPU "
                          "of its own: use one of them (a device map in one process, or torchrun without --device-map).")
    paths = [Path(p) for p in args.data]
    if hf:
        from workbench.core.hf import check_hf_dir
        from workbench.core.hf_tokenizers import TOKENIZER_FILES, load_tokenizer

        for role, path in hf.items():
            check_hf_dir(role, path)
        first = next(iter(hf.values()))
        tokenizer = load_tokenizer(first) if any((Path(first) / f).is_file() for f in TOKENIZER_FILES) else None
        inputs = Inputs.from_jsonl(paths, limit=args.max_rows, tokenizer=tokenizer, n_ctx=context_length(first))
        lineage = Lineage.from_hf_dirs(hf, device=device, dtype=dtype, tokenizer=tokenizer, device_map=device_map,
                                       max_memory=max_memory)
    else:
        from workbench.organism.load import load_lineage

        inputs = Inputs.from_jsonl(paths, limit=args.max_rows)
        lineage = load_lineage(Path(args.organism) / f"seed{args.seed}", args.roles, device=device, dtype=dtype)
    return lineage, inputs


def run_capture(args: argparse.Namespace) -> int:
    """Load, capture (this rank's shards under torchrun), print where the artifact is."""
    if not args.out:
        raise ConfigError("--out DIR is required: the artifact directory to write.")
    device = distributed.init_if_launched(common.device_of(args))
    try:
        lineage, inputs = _load(args, device)
        if args.device_map is not None:  # rows go in where the map put the embedding
            device = lineage.device
        store = capture(lineage, inputs, args.hooks, _positions(args.positions), args.roles, out_dir=args.out,
                        batch_size=args.batch_size, storage_dtype=args.storage_dtype, shard_rows=args.shard_rows,
                        device=device, overwrite=args.overwrite, progress=common.show_progress(args))
    finally:
        distributed.shutdown()
    if distributed.rank_info().is_main and not args.quiet:
        print(f"{store.directory}: {len(store.models)} models x {len(store.hooks)} hooks x {store.n_rows} rows, "
              f"{store.manifest['total_bytes']} bytes", file=sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(run_capture, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
