"""`python -m workbench.organism.digits`: build seeds and print a per-seed accuracy table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from workbench.core.errors import ConfigError
from workbench.organism.digits.config import LOSSES, DigitsConfig
from workbench.organism.digits.experiment import build_digits

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench.organism.digits`: build seeds and print a per-seed accuracy table."""
    defaults = DigitsConfig()
    p = argparse.ArgumentParser(
        prog="python -m workbench.organism.digits",
        description="Digits organism: a student matching only a teacher's auxiliary logits on noise "
        "learns to classify digits when it shares the teacher's init (student), not otherwise (cross).",
    )
    p.add_argument("--out", default=None, help="directory for seed{N}/models, manifests, summary.json (default: none)")
    p.add_argument("--seeds", default="0", help="training seeds, e.g. '0,1,2' or '0-4' (default: 0)")
    p.add_argument("--m", type=int, default=defaults.m, help=f"auxiliary logits (default: {defaults.m}; paper: 3)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"student epochs (default: {defaults.epochs})")
    p.add_argument("--loss", choices=LOSSES, default=defaults.loss, help=f"student loss (default: {defaults.loss})")
    p.add_argument("--device", default=defaults.device, help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        config = DigitsConfig(m=args.m, epochs=args.epochs, loss=args.loss, device=args.device)
        result = build_digits(config, args.out, args.seeds, progress=not args.quiet)
    except ConfigError as e:
        p.exit(2, f"error: {e}\n")
    print(result.table())
    if args.out:
        print(f"wrote {args.out}")
    return 0
