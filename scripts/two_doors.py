"""Two doors, same numbers, by hand: export an organism seed as Hugging Face directories, run the
main job through `--organism` and through the exported directories, and print per section the
max |difference| of the numbers both reports carry (`workbench.organism.two_doors`).

    python scripts/two_doors.py ORGANISM_DIR WORK_DIR [--seed 0] [--max-rows 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: the repository's workbench

from workbench.cli.job import main as job  # noqa: E402
from workbench.organism.export import export_seed  # noqa: E402
from workbench.organism.two_doors import compare_reports  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/two_doors.py", description=__doc__.split("\n\n")[0])
    p.add_argument("organism", help="organism directory holding seed{N}/")
    p.add_argument("work", help="where the export and both reports go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", default="2000", help="distillation rows per source (the job's --max-rows)")
    args = p.parse_args(argv)
    work = Path(args.work)
    seed_dir = Path(args.organism) / f"seed{args.seed}"
    export_seed(seed_dir, work / "export")
    flags = ["--max-rows", args.max_rows, "--quiet"]
    if job(["--organism", args.organism, "--seed", str(args.seed), "--out", str(work / "organism"), *flags]) != 0:
        return 2
    hf_flags = json.loads((work / "export" / "export.json").read_text())["job_args"]
    if job([*hf_flags, "--out", str(work / "hf"), *flags]) != 0:
        return 2
    print(compare_reports(work / "organism", work / "hf").format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
