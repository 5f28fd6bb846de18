"""`python -m workbench.probe`: the main job, "where does the hidden signal live?".

Today it builds (or reuses) the default organism under `artifacts/organism/` and prints its
trait table: the behavioural evidence every later analysis localises. The localisation
analyses (activations, probes, weight deltas, gradient alignment, patching) join this job
as they land, each beside its control.
"""

from __future__ import annotations

import argparse
import sys

from workbench.organism.__main__ import build_and_print
from workbench.organism.config import PRESETS


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
    code = build_and_print(args.preset, args.seeds, args.organism, args.device, args.quiet, target=args.target)
    if code:
        return code
    print("The student's rate beside control (neutral teacher), other (another target) and cross (another "
          "init) is the behavioural evidence; localisation analyses are added to this report as they land.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
