"""`python -m workbench.probe`: the main job, "where does the hidden signal live?".

Today it builds (or reuses) the default organism under `artifacts/organism/` and prints its
trait table: the behavioural evidence every later analysis localises. The localisation
analyses (activations, probes, weight deltas, gradient alignment, patching) join this job
as they land, each beside its control.
"""

from __future__ import annotations

import argparse
import sys

from workbench.errors import WorkbenchError
from workbench.organism.build import build_organism, format_trait_table
from workbench.organism.config import PRESETS, preset


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--organism", default="artifacts/organism",
                   help="organism directory; built with --preset if missing (default: artifacts/organism)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="organism preset (default: default)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to build and report (default: 0)")
    p.add_argument("--target", default="owl", help="the trait (default: owl)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = preset(args.preset, target=args.target)
        log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
        _, summary = build_organism(cfg, args.seeds, args.organism, device=args.device,
                                    progress=not args.quiet and sys.stderr.isatty(), log=log)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_trait_table(summary))
    print("The student's rate beside control (neutral teacher), other (another target) and cross (another "
          "init) is the behavioural evidence; localisation analyses are added to this report as they land.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
