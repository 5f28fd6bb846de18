"""The main job over organism seeds: which seeds it reports, and its report over them.

The training run (seed) is the unit of uncertainty, so `python -m workbench.probe` reports every
built seed of the organism (`--seeds 0 1 2` to choose; `--seed N` is `--seeds N`). With one seed
the report is that seed's, exactly as it always was. With several, each seed's sections and its
own full report go to `<out>/seeds/seed{N}/` (sections cached per seed, so a rerun reuses them),
and `<out>`'s report holds per section the aggregate over seeds (`results.seed_rows.SeedsResult`:
mean, sd over seeds, `clears` in every seed and firmly, `n_seeds`, `seed_values`, `margin_ci`); its meta lists the seeds
and per seed the organism's own record (target, the models' P(target), its report).

Hugging Face directories are one set of checkpoints (one run), so --seeds is an error there.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from workbench.core.errors import ConfigError
from workbench.report import section_ids, write_report
from workbench.results.base import Result
from workbench.results.seed_rows import SeedsResult

_SEED_DIR = re.compile(r"seed(\d+)")
PER_SEED = ("organism", "target", "trait P(target)", "data", "n_rows")
"""Meta entries listed per seed in the report over seeds, equal or not (`target` also once when equal)."""


class SeedRun(Protocol):
    """What one seed's run gives back (job.SectionRun)."""

    results: list[Result]
    missing: list[dict[str, str]]
    errors: list[str]


def built_seeds(organism: str | Path) -> list[int]:
    """The seeds built in an organism folder (seed{N}/manifest.json), in order."""
    return sorted(int(m.group(1)) for p in Path(organism).glob("seed*/manifest.json")
                  if (m := _SEED_DIR.fullmatch(p.parent.name)))


def requested_seeds(args: argparse.Namespace, hf: bool) -> list[int]:
    """The organism seeds the job reports: --seeds, or --seed N, or every built seed of
    --organism, or [0] where it holds none (built only where that is allowed: `organism_to_build`).
    With Hugging Face directories ([] : no seeds) --seeds or --seed is a ConfigError saying why."""
    if args.seeds is not None and args.seed is not None:
        raise ConfigError(f"--seed {args.seed} and --seeds {' '.join(map(str, args.seeds))} both name seeds; pass one "
                          "(--seed N is the same as --seeds N).")
    given = args.seeds if args.seeds is not None else ([args.seed] if args.seed is not None else None)
    if hf:
        if given is not None:
            flag = "--seeds" if args.seeds is not None else "--seed"
            raise ConfigError(f"{flag} {' '.join(map(str, given))} picks organism seeds (one seed{{N}}/ folder per "
                              "training run), but the models here are Hugging Face directories (--base, --teacher, "
                              f"...): one set of checkpoints, one run, no seed to pick. Drop {flag}; to report several "
                              "runs, run the job once per set of directories.")
        return []
    if given is not None:
        return list(dict.fromkeys(given))
    return built_seeds(args.organism) or [0]


def combine_sections(seeds: Sequence[int], runs: Sequence[SeedRun], seed_outs: Sequence[Path],
                     command: str) -> tuple[list[Result], list[dict[str, str]]]:
    """Per section (in first-seen order) the aggregate of the seeds' results, and the sections
    missing in every seed ({section, reason}; the reasons per seed where they differ). A section
    missing in only some seeds is aggregated over the others (its rows' n_seeds say so)."""
    by_id: dict[str, list[Result | None]] = {}
    for i, run in enumerate(runs):
        for sid, result in zip(section_ids(run.results), run.results):
            by_id.setdefault(sid, [None] * len(runs))[i] = result
    results: list[Result] = []
    for sid, per_seed in by_id.items():
        dirs = [out / "sections" / sid for out in seed_outs]
        results.append(SeedsResult.combine(per_seed, seeds, dirs, command=command))
    missing: list[dict[str, str]] = []
    reasons: dict[str, dict[int, str]] = {}
    for seed, run in zip(seeds, runs):
        for m in run.missing:
            reasons.setdefault(m["section"], {})[seed] = m["reason"]
    for section, per_seed_reason in reasons.items():
        if len(per_seed_reason) < len(runs):
            continue  # a result in some seed: aggregated above, the seeds lacking it in the meta
        texts = set(per_seed_reason.values())
        reason = texts.pop() if len(texts) == 1 else "; ".join(f"seed {s}: {r}" for s, r in per_seed_reason.items())
        missing.append({"section": section, "reason": reason})
    return results, missing


def combined_meta(seeds: Sequence[int], metas: Sequence[dict[str, Any]], runs: Sequence[SeedRun],
                  root: str | Path) -> dict[str, Any]:
    """The report's meta over seeds: `organism` (the folder), `seeds`, the entries equal in every
    seed (e.g. `target`, `models`, `hooks`), and `per seed`: each seed's own record (`PER_SEED`
    always, with the entries that differ between seeds, the sections it lacks, and its report)."""
    keys = list(dict.fromkeys(k for m in metas for k in m))
    shared = {k: metas[0][k] for k in keys if all(k in m and m[k] == metas[0][k] for m in metas)}
    for k in PER_SEED:
        if k != "target":
            shared.pop(k, None)
    per_seed: dict[str, Any] = {}
    for seed, meta, run in zip(seeds, metas, runs):
        own = {k: v for k, v in meta.items() if k not in shared or k in PER_SEED}
        if run.missing:
            own["missing"] = run.missing
        own["report"] = f"seeds/seed{seed}/report.json"
        per_seed[str(seed)] = own
    return {"organism": str(root), "seeds": list(seeds), **shared, "per seed": per_seed}


def report_over_seeds(seeds: Sequence[int], run_seed: Callable[[int, Path], tuple[SeedRun, dict[str, Any]]],
                      out: Path, *, root: str | Path, command: str, log: Callable[[str], None] = lambda s: None,
                      stream: TextIO | None = sys.stdout, full_table: bool = False) -> list[str]:
    """Run each seed (`run_seed(seed, <out>/seeds/seed{N})`: its sections and report there), then
    write `out`'s report over the seeds. Returns the error lines (a failed section, per seed)."""
    runs, metas, outs = [], [], []
    for seed in seeds:
        seed_out = out / "seeds" / f"seed{seed}"
        log(f"seed {seed} ({len(runs) + 1} of {len(seeds)}): {seed_out}")
        run, meta = run_seed(seed, seed_out)
        runs.append(run)
        metas.append(meta)
        outs.append(seed_out)
    results, missing = combine_sections(seeds, runs, outs, command)
    write_report(results, out, command=command, meta=combined_meta(seeds, metas, runs, root), missing=missing,
                 stream=stream, full_table=full_table)
    return [f"seed {seed}: {line}" for seed, run in zip(seeds, runs) for line in run.errors]
