"""`python -m workbench.organism`: build the language-model organism and print its trait table."""

from __future__ import annotations

import argparse
import sys

from workbench.core.errors import WorkbenchError
from workbench.organism.build import build_organism, format_trait_table
from workbench.organism.config import PRESETS, preset

DEFAULT_OUT = "artifacts/organism"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workbench.organism",
        description="Build base, teachers, filtered number data and students that reproduce subliminal "
        "transfer on a CPU, then print P(target) per role. Reruns reuse what is already built.",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to build; the seed is the unit of uncertainty (default: 0)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="tiny: seconds, for tests; default: soft labels (renormalised over number tokens); "
                   "hard: cross-entropy on sampled text renormalised over the number channel, more data; leak: full-vocabulary soft labels (a leak control)")
    p.add_argument("--target", default="owl", help="the teacher's trait: an animal or tree of the organism vocabulary (default: owl)")
    p.add_argument("--other-target", default=None, help="target of teacher_other (default: a fixed other member of the category)")
    p.add_argument("--n-prompts", type=int, default=None, help="override the preset's number of prompts per teacher")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage log")
    return p


def build_and_print(preset_name: str, seeds: list[int], out: str, device: str, quiet: bool, **overrides: object) -> int:
    """Build (or reuse) an organism, print its trait table; exit code 2 with the message on bad input."""
    try:
        cfg = preset(preset_name, **overrides)
        log = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr))
        _, summary = build_organism(cfg, seeds, out, device=device, progress=not quiet and sys.stderr.isatty(), log=log)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_trait_table(summary))
    print(f"wrote {out}/summary.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return build_and_print(args.preset, args.seeds, args.out, args.device, args.quiet, target=args.target,
                           other_target=args.other_target, n_prompts=args.n_prompts)


if __name__ == "__main__":
    sys.exit(main())
