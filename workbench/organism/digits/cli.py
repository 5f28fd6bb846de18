"""`python -m workbench.organism.digits`: build seeds and print a per-seed accuracy table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from workbench.cli import common
from workbench.organism.digits.config import LOSSES, DigitsConfig
from workbench.organism.digits.experiment import build_digits

DEFAULT_OUT = "artifacts/digits"

DIGITS_FLAGS = common.ConfigFlags(DigitsConfig, (
    common.ConfigFlag("m", "auxiliary logits (paper: 3)"),
    common.ConfigFlag("epochs", "student epochs"),
    common.ConfigFlag("loss", "student loss", choices=LOSSES),
))


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.organism.digits", (
        "Digits organism: a student matching only a teacher's auxiliary logits on noise learns to classify digits "
        "when it shares the teacher's init (student), not otherwise (cross)."))
    common.add_out_flag(p, DEFAULT_OUT, "directory for seed{N}/models, manifests, summary.json")
    common.add_seeds_flag(p, [DigitsConfig.seed], "training seeds, e.g. 0 1 2, 0,1,2 or 0-4")
    DIGITS_FLAGS.add_to(p)
    common.add_device_flag(p, DigitsConfig.device)
    common.add_threads_flag(p, DigitsConfig.threads, "its small MLPs train fastest on one")
    common.add_quiet_flag(p)
    return p


def build_and_print(args: argparse.Namespace) -> int:
    """Build the asked seeds and print the per-seed accuracy table."""
    config = DigitsConfig(**DIGITS_FLAGS.values(args), device=str(common.device_of(args)), threads=args.threads)
    common.writable_out(args.out)  # before any training
    result = build_digits(config, args.out, args.seeds, progress=not args.quiet)
    print(result.table())
    print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench.organism.digits`: build seeds and print a per-seed accuracy table."""
    return common.run(build_and_print, parser().parse_args(argv))
