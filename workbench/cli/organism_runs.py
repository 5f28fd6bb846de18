"""Commands that compose the organism (a source) with the analyses: load a seed, hand its
Lineage, Inputs and Trait to an analysis, and supply what only the organism knows (its data
files, its number channel, its recipe for retraining a student).

The analyses never import the organism; the command-line modules call these.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from workbench.analyses.alignment import AlignmentConfig, run_alignment
from workbench.analyses.alignment_result import AlignmentResult
from workbench.analyses.compare import ActivationComparison, CompareConfig, compare, residual_hooks
from workbench.analyses.screening import ScreeningConfig, ScreeningResult, ScreeningRow, run_screening
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.organism.load import load_seed, read_manifest


# --------------------------------------------------------------------------- compare


def compare_organism_seed(seed_dir: str | os.PathLike, out_dir: str | os.PathLike, *, data: str = "teacher",
                          limit: int | None = None, config: CompareConfig | None = None,
                          device: str | torch.device = "cpu", progress: bool = True) -> ActivationComparison:
    """Capture the residual stream of every role of one organism seed and compare the shifts
    (the logit lens reports the seed's own target).

    data: "teacher" (the teacher's filtered distillation data; positions = mean over the
    completion tokens) or "prompts" (the trait-evaluation prompts; the answer position).
    """
    from workbench.capture.capture import capture

    seed_dir, out_dir = Path(seed_dir), Path(out_dir)
    seed = load_seed(seed_dir, device=device)
    lin, manifest = seed.lineage, seed.manifest
    if data not in ("teacher", "base", "teacher_neutral", "teacher_other", "prompts"):
        raise ConfigError(f"data={data!r}: use 'teacher', 'base', 'teacher_neutral', 'teacher_other' or 'prompts'.")
    inputs, positions = seed.inputs(data, limit=limit), "last" if data == "prompts" else "mean"
    store = capture(lin, inputs, residual_hooks(int(lin.cfg.n_layers)), positions=positions,
                    out_dir=out_dir / "activations", progress=progress, device=device, overwrite=True)
    result = compare(lin, store, config or CompareConfig(), trait=seed.trait,
                     meta={"seed": manifest.get("seed"), "data": data, "mode": manifest.get("mode"),
                           "trait_rates": manifest.get("trait_rates")})
    result.command = (f"python -m workbench.compare --organism {seed_dir.parent.name} --seeds {manifest.get('seed')} "
                      f"--data {data}")
    result.save(out_dir)
    return result


# --------------------------------------------------------------------------- alignment


def align_organism(seed_dir: str | os.PathLike, config: AlignmentConfig, target: str | None = None) -> AlignmentResult:
    """`run_alignment` on one organism seed: its base, teacher and student, the rows its teacher
    and base wrote for the same prompts (data/{positive,negative}.jsonl), the Trait of `target`
    (default: the seed's own) and its number channel."""
    seed_dir = Path(seed_dir)
    roles = [r for r in (config.base, config.teacher, config.student) if r]
    seed = load_seed(seed_dir, roles=roles, target=target, device=config.device)
    inputs = Inputs.from_jsonl([seed.data(config.positive), seed.data(config.negative)])
    config = AlignmentConfig.from_dict({**config.to_dict(), "channel_ids": seed.channel_ids})
    command = f"python -m workbench.alignment --organism {seed_dir.parent} --seeds {seed_dir.name[4:]} --loss {config.loss}"
    return run_alignment(lineage=seed.lineage, inputs=inputs, config=config, trait=seed.trait, command=command)


# --------------------------------------------------------------------------- screening


def screen_organism_seed(
    seed_dir: str | Path,
    fractions: tuple[float, ...] = (0.1, 0.25),
    *,
    device: str = "cpu",
    batch_size: int = 256,
    overrides: dict[str, Any] | None = None,
    max_rows: int | None = None,
    progress: bool = False,
    workers: int = 1,
) -> tuple[list[ScreeningRow], dict[str, Any]]:
    """`run_screening` on one organism seed: its teacher rows, its Trait, and students retrained
    with the seed's own recipe and student seed; returns the rows and the seed's reference trait
    rates. The teacher rows are those the student trained on (the build's equal row count);
    `overrides` change recipe fields (e.g. fewer epochs); `max_rows` keeps the first rows only
    (tests); `workers` > 1 retrains the students in that many processes (the same weights)."""
    manifest = read_manifest(seed_dir)
    seed = load_seed(seed_dir, roles=["base", "teacher"], target=manifest["config"]["target"], device=device)
    cfg = seed.recipe(overrides)
    trained_on = seed.student_rows("student")  # the rows the student saw: screening drops rows from those
    limit = min((n for n in (max_rows, trained_on) if n is not None), default=None)
    data = Inputs.from_jsonl(seed.data("teacher"), limit=limit)
    retrain = seed.retrainer(overrides, progress, workers=workers)

    # score rows with the loss the student trains with: both modes renormalise over the number channel
    config = ScreeningConfig(fractions=tuple(fractions), loss=cfg.mode, channel_ids=seed.channel_ids,
                             seed=int(manifest["seed"]), batch_size=batch_size, progress=progress)
    rows = run_screening(seed.lineage, data, seed.trait, retrain, config)
    reference = {"student": manifest["trait_rates"]["student"], "base": manifest["trait_rates"]["base"],
                 "control": manifest["trait_rates"]["control"], "n_rows": len(data), "mode": cfg.mode}
    return rows, reference


def screening_defense(seed_dir: str | Path, fractions: tuple[float, ...] = (0.1, 0.25), *, command: str | None = None,
              **kwargs: Any) -> ScreeningResult:
    """`screen_organism_seed` as a report section's result."""
    rows, reference = screen_organism_seed(seed_dir, fractions, **kwargs)
    return ScreeningResult(rows, reference, command or f"workbench.cli.organism_runs.screening_defense({str(seed_dir)!r})",
                           {"fractions": list(fractions)})


# --------------------------------------------------------------------------- steering vectors


def steer_organism_seed(seed_dir: str | os.PathLike, config: Any, *, data: str = "teacher", limit: int | None = None,
                        device: str | torch.device = "cpu", command: str | None = None) -> Any:
    """`steering` on one organism seed: its base, student, teacher and control, its Trait, and (for
    `config.vectors_from == "rows"`) the rows `data` wrote (default: the teacher's distillation rows)."""
    from workbench.analyses.steering import steering

    seed_dir = Path(seed_dir)
    roles = [r for r in (config.base, config.student, config.teacher, config.control) if r]
    seed = load_seed(seed_dir, roles=roles, device=device)
    inputs = seed.inputs(data, limit=limit) if config.vectors_from == "rows" else None
    meta = {"seed": seed.manifest.get("seed"), "mode": seed.manifest.get("mode"), "target": seed.trait.target,
            "data": data if inputs is not None else "prompts", "trait_rates": seed.manifest.get("trait_rates")}
    return steering(seed.lineage, seed.trait, config, inputs, meta=meta,
                    command=command or f"python -m workbench.steering --organism {seed_dir.parent} --seeds {seed.manifest.get('seed')}")


# --------------------------------------------------------------------------- channel tests


def channel_tests(seed_dir: str | os.PathLike, tests: tuple[str, ...] | None = None, *, device: str = "cpu",
                  overrides: dict[str, Any] | None = None, max_rows: int | None = None, workers: int = 1,
                  n_entangled: int = 10, progress: bool = False, command: str | None = None) -> Any:
    """`run_channels` on one organism seed: the teacher rows its student trained on, the base's
    rows (entangled tokens), its number channel, and students retrained with the seed's own
    recipe and student seed (`workers` processes)."""
    from workbench.analyses.channels import TESTS, ChannelConfig, run_channels
    from workbench.organism.channel_source import OrganismChannelSource

    seed_dir = Path(seed_dir)
    manifest = read_manifest(seed_dir)
    seed = load_seed(seed_dir, roles=["base", "teacher", "teacher_other"], target=manifest["config"]["target"],
                     device=device)
    trained_on = seed.student_rows("student")
    limit = min((n for n in (max_rows, trained_on) if n is not None), default=None)
    data = seed.inputs("teacher", limit=limit)
    config = ChannelConfig(tests=tuple(tests or TESTS), channel_ids=seed.channel_ids,
                           movable_ids=tuple(seed.tokenizer.number_ids), n_entangled=n_entangled,
                           separator_id=seed.tokenizer.separator_id,
                           seed=int(manifest["seed"]), retrain_reference=_differs(overrides, limit, trained_on, max_rows))
    source = OrganismChannelSource(seed, overrides, progress, workers)
    rates = manifest["trait_rates"]
    reference = {"student": rates["student"], "control": rates["control"], "base": rates["base"],
                 "mode": seed.recipe(overrides).mode}
    result = run_channels(seed.lineage, data, seed.trait, source, config, base_rows=seed.inputs("base", limit=limit),
                          reference=reference, meta={"overrides": overrides or {}},
                          command=command or f"python -m workbench.channels --organism {seed_dir.parent} --seeds {manifest['seed']}")
    if "entangled_ids" in result.chosen:
        result.chosen["entangled_tokens"] = [seed.tokenizer.vocab[i] for i in result.chosen["entangled_ids"]]
    return result


# --------------------------------------------------------------------------- screening leaderboard


def leaderboard_seed(seed_dir: str | os.PathLike, detectors: tuple[str, ...] | None = None, *,
                     fractions: tuple[float, ...] = (0.1, 0.25), retrain: bool = True, device: str = "cpu",
                     overrides: dict[str, Any] | None = None, max_rows: int | None = None, workers: int = 1,
                     progress: bool = False, command: str | None = None, trait_direction: str = "contrast",
                     trait_hook: str | None = None) -> Any:
    """`run_leaderboard` on one organism seed: the teacher rows its student trained on against as
    many rows the base wrote, its number channel, and students retrained with the seed's recipe
    (`trait_direction`, `trait_hook`: what the activation detectors read, `LeaderboardConfig`)."""
    from workbench.analyses.detectors import NEEDS
    from workbench.analyses.leaderboard import LeaderboardConfig, run_leaderboard
    from workbench.organism.channel_source import OrganismChannelSource

    seed_dir = Path(seed_dir)
    manifest = read_manifest(seed_dir)
    seed = load_seed(seed_dir, roles=["base", "teacher"], target=manifest["config"]["target"], device=device)
    trained_on = seed.student_rows("student")
    limit = min((n for n in (max_rows, trained_on) if n is not None), default=None)
    teacher_rows = seed.inputs("teacher", limit=limit)
    base_rows = seed.inputs("base", limit=len(teacher_rows))
    config = LeaderboardConfig(detectors=tuple(detectors or NEEDS), fractions=tuple(fractions), retrain=retrain,
                               channel_ids=seed.channel_ids, movable_ids=tuple(seed.tokenizer.number_ids),
                               seed=int(manifest["seed"]), retrain_reference=_differs(overrides, limit, trained_on, max_rows),
                               trait_direction=trait_direction, trait_hook=trait_hook)
    source = OrganismChannelSource(seed, overrides, progress, workers)
    rates = manifest["trait_rates"]
    reference = {"student": rates["student"], "control": rates["control"], "base": rates["base"],
                 "mode": seed.recipe(overrides).mode}
    return run_leaderboard(seed.lineage, teacher_rows, base_rows, seed.trait, source, config, reference=reference,
                           meta={"overrides": overrides or {}},
                           command=command or f"python -m workbench.screening --leaderboard --organism {seed_dir.parent} "
                                              f"--seeds {manifest['seed']}")


def _differs(overrides: dict[str, Any] | None, limit: int | None, trained_on: int | None, max_rows: int | None) -> bool:
    """Whether retrains on these rows with these overrides differ from the build's student (so the
    full student must be retrained beside them to measure transfer left against the same rows)."""
    if overrides:
        return True
    if trained_on is None:
        return max_rows is not None
    return limit is not None and limit < trained_on
