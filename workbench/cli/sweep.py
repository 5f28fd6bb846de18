"""`python -m workbench.sweep`: students and controls retrained under every training regime (full
fine-tuning, LoRA rank r) x optimiser on every seed of one or more organisms (one per channel),
with the learning rate per regime chosen by the control students' training loss, never by
transfer (`workbench.organism.sweep`).

Writes OUT/cells/<hash>.json (one per trained student: a killed sweep resumes, a cell is
reproducible from its key), OUT/sweep.json (every row, the summary and the paired contrasts:
optimiser, full vs LoRA, rank slope and curvature, within seeds then over them), OUT/sweep_table.txt and
OUT/sweep.html (transfer vs rank, one line per optimiser, full fine-tuning as its own point).

`python -m workbench.sweep merge OUT DIR DIR...`: one table and figure from several sweeps' sweep.json
(e.g. the soft and the hard channel, each swept at its own epochs, or on different machines).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.cli import common
from workbench.core.errors import ConfigError
from workbench.core.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from workbench.engines.optimizers import OPTIMIZERS
from workbench.organism.parallel import StagePool
from workbench.organism.sweep import (
    DEFAULT_OPTIMIZERS,
    DEFAULT_RANKS,
    LR_GRIDS,
    SWEEP_ROLES,
    CellStore,
    SweepConfig,
    regimes_of,
    sweep_organism,
)
from workbench.organism.sweep_summary import curves_figure, format_table, summarize, sweep_figure
from workbench.organism.sweep_contrasts import contrasts, format_contrasts
from workbench.results.figures import write_figures


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.sweep", (
        "Transfer by training regime: retrain each organism seed's student and control student under full fine-tuning "
        "and LoRA at each rank, with each optimiser; the learning rate per regime is the grid's lowest final training "
        "loss of the control on the first seed (never chosen by transfer)."),
        epilog="Subcommand: python -m workbench.sweep merge OUT DIR DIR... (one table and figure from several sweeps; "
               "see merge --help).")
    common.add_organism_flag(p, None, help="organism directory holding seed{N}/ (LoRA needs a Hugging Face family build: "
                                           "python -m workbench.organism --family qwen2)")
    p.add_argument("--also", nargs="+", default=[], metavar="DIR",
                   help="further organisms swept the same way, one per channel (e.g. the hard-label build beside a "
                        "soft-label --organism)")
    common.add_seeds_flag(p, [0, 1, 2], "seeds of every organism")
    p.add_argument("--ranks", nargs="*", type=common.positive_int, default=list(DEFAULT_RANKS),
                   help="LoRA ranks (none: full fine-tuning only)")
    p.add_argument("--no-full", action="store_true", help="leave full fine-tuning out")
    p.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(DEFAULT_OPTIMIZERS), help="optimisers")
    p.add_argument("--lr-grid", nargs="+", default=[], metavar="REGIME/OPT=LR,LR",
                   help="replace a learning-rate grid, e.g. lora/adamw=3e-3,1e-2 (defaults: "
                        + "; ".join(f"{k}={','.join(f'{x:g}' for x in v)}" for k, v in LR_GRIDS.items()) + ")")
    p.add_argument("--lr-by", choices=["control", "student"], default="control",
                   help="whose final training loss on the first seed picks each regime's rate (never transfer; default: "
                        "control; student: where the neutral teacher barely differs from the base and the control has "
                        "nothing to fit)")
    p.add_argument("--epochs", type=common.positive_int, default=None, help="student epochs (default: the build's)")
    p.add_argument("--max-rows", type=common.positive_int, default=None, help="train on the first N rows only")
    p.add_argument("--samples", type=common.positive_int, default=200,
                   help="sampled answers per preference prompt behind the Wilson intervals")
    p.add_argument("--curves", type=common.positive_int, default=None, metavar="N",
                   help="checkpoint each student and control every N optimiser steps at the chosen rate: curves of "
                        "P(target), cos(dS_t, dT), the next step's alignment with the trait gradient and the activation "
                        "shift against the teacher's (EAS) (sweep_curves.html)")
    p.add_argument("--no-first-order", action="store_true", help="skip the first-order prediction beside full students")
    common.add_out_flag(p, "artifacts/sweep", "output directory")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_workers_flag(p, "the cells train in", "every count gives the same cells")
    common.add_quiet_flag(p)
    return p


def parse_grids(items: list[str]) -> dict[str, tuple[float, ...]]:
    """`regime/optimizer=lr,lr` items over the default grids."""
    grids = dict(LR_GRIDS)
    for item in items:
        key, _, values = item.partition("=")
        if key not in LR_GRIDS or not values:
            raise ConfigError(f"--lr-grid {item!r}: write REGIME/OPTIMIZER=LR,LR with REGIME/OPTIMIZER one of "
                              f"{', '.join(LR_GRIDS)} (e.g. lora/adamw=3e-3,1e-2).")
        try:
            grids[key] = tuple(float(x) for x in values.split(","))
        except ValueError as e:
            raise ConfigError(f"--lr-grid {item!r}: the rates must be numbers, e.g. 1e-3,3e-3.") from e
        if any(not x > 0 for x in grids[key]):
            raise ConfigError(f"--lr-grid {item!r}: learning rates must be positive.")
    return grids


def sweep(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from workbench.organism.load import load_seed

    device = common.device_of(args)
    config = SweepConfig(regimes=regimes_of(args.ranks, args.optimizers, full=not args.no_full),
                         lr_grids=parse_grids(args.lr_grid),
                         overrides={} if args.epochs is None else {"student_epochs": args.epochs}, rows=args.max_rows,
                         samples=args.samples, first_order=not args.no_first_order, lr_by=args.lr_by,
                         curve_every=args.curves or 0, progress=common.show_progress(args))
    organisms = [(Path(o), common.organism_seeds(o, args.seeds)) for o in [args.organism, *args.also]]  # checked first
    out = common.writable_out(args.out)
    store = CellStore(out)
    rows: list[dict[str, Any]] = []
    with StagePool(args.workers if device.type == "cpu" else 1) as pool:
        for organism, seeds in organisms:
            loaded = []
            for number, seed_dir in seeds:
                seed = load_seed(seed_dir, roles=list(SWEEP_ROLES), device=device)
                loaded.append((number, seed, sha256_file(seed_dir / "manifest.json")))
            channel = loaded[0][1].recipe(config.overrides).mode
            log = lambda m, name=organism.name: print(f"{name}: {m}", flush=True)  # noqa: E731
            for row in sweep_organism(loaded, config, store, on_cell=log, pool=pool):
                rows.append({"organism": str(organism), "channel": channel, **row})
    command = "python -m workbench.sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    write_outputs(out, rows, args.lr_by, command)
    return 0


def lr_choice(lr_by: str) -> str:
    return f"the grid's lowest final training loss of the {lr_by} on the first seed (never by transfer)"


def write_outputs(out: Path, rows: list[dict[str, Any]], lr_by: str, command: str, **extra: Any) -> None:
    """sweep.json (rows, summary and the paired contrasts), sweep_table.txt, sweep.html and, when a row has curves,
    sweep_curves.html; the table printed."""
    summary = summarize(rows)
    paired = contrasts(summary)
    atomic_write_json(out / "sweep.json", {"command": command, "rows": rows, "summary": summary, "contrasts": paired,
                                           "lr_choice": lr_choice(lr_by), **extra})
    table = "\n\n".join(part for part in (format_table(summary, lr_by), format_contrasts(paired)) if part)
    atomic_write_text(out / "sweep_table.txt", table + "\n")
    figures = {"sweep": sweep_figure(summary)}
    if any(r[role].get("curve") for r in rows for role in ("student", "control")):
        figures["sweep_curves"] = curves_figure(rows)
    write_figures(figures, out)
    print(table)
    print(f"wrote {out}")


def merge_parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.sweep merge", (
        "One table and figure from several sweeps' sweep.json: e.g. the soft channel and the hard channel, each swept "
        "at its own epochs (a sweep's --epochs applies to every organism it sweeps), or on different machines."))
    p.add_argument("out", help="output directory of the merged sweep.json, sweep_table.txt and sweep.html")
    p.add_argument("sweeps", nargs="+", metavar="DIR", help="sweep output directories, each holding sweep.json")
    return p


ROW_KEYS = ("organism", "label", "seed", "regime", "lr", "lr_losses", "student", "control")
ROLE_KEYS = ("log_odds", "p_target", "wilson", "final_loss", "trained", "cos_teacher")


def missing_keys(row: Any, number: int, directory: str) -> None:
    """A sweep.json row lacking what the summary reads is an error naming the row and the keys."""
    gaps = ([k for k in ROW_KEYS if k not in row] if isinstance(row, dict) else list(ROW_KEYS))
    gaps += [f"{role}.{k}" for role in ("student", "control") if isinstance(row, dict) and isinstance(row.get(role), dict)
             for k in ROLE_KEYS if k not in row[role]]
    if gaps:
        raise ConfigError(f"{directory}/sweep.json: row {number} lacks {', '.join(gaps)}: it was edited or written by "
                          "another tool. Rerun the sweep that wrote it (its cells are cached, so only the summary is redone).")


def merge(args: argparse.Namespace, argv: list[str]) -> int:
    rows: list[dict[str, Any]] = []
    lr_by: set[str] = set()
    seen: dict[tuple[str, str, int], str] = {}
    for directory in args.sweeps:
        record = read_json(Path(directory) / "sweep.json")
        if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
            raise ConfigError(f"{directory}/sweep.json has no rows: it was not written by python -m workbench.sweep.")
        for number, row in enumerate(record["rows"]):
            missing_keys(row, number, directory)
            where = (row["organism"], row["label"], int(row["seed"]))
            if where in seen:
                raise ConfigError(f"{row['label']} on seed {row['seed']} of {row['organism']} is in both {seen[where]} and "
                                  f"{directory}: merge sweeps of different organisms or regimes.")
            seen[where] = directory
            lr_by.add(row.get("lr_by", "control"))
            rows.append(row)
    if len(lr_by) > 1:
        raise ConfigError(f"The sweeps chose their rates by different students' losses ({', '.join(sorted(lr_by))}): "
                          "merge sweeps that used the same --lr-by.")
    write_outputs(common.writable_out(args.out), rows, lr_by.pop(), "python -m workbench.sweep merge " + " ".join(argv),
                  merged_from=[str(d) for d in args.sweeps])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return common.run(merge, merge_parser().parse_args(argv[1:]), argv[1:])
    args = parser().parse_args(argv)
    return common.run(sweep, args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
