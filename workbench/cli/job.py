"""`python -m workbench.probe`: the main job, "where does the hidden signal live?".

With no arguments it uses the default organism in `artifacts/organism/` (built if it holds no
built seed, reusing what exists; any other --organism is built only with --build), reads
activations of the distillation data and of contrastive preference prompts, runs the report sections (linear probes with their controls; trait
directions with detection by projection and cross-model shifts; activation shifts; weight deltas; delta and
activation patching; gradient alignment) and writes `artifacts/report/`
(report.json, one HTML per figure, index.html) plus a terminal summary: per layer/component
the strongest evidence beside its control.

Sections are functions `(lineage, inputs, config) -> Result` listed in `SECTIONS`; another
analysis joins the report by adding one (report.py walks results through the Result contract).
Each section is saved under `<out>/sections/<name>/` as soon as it finishes, keyed by what it was
computed from (`SECTION_READS`, section_store.py); a rerun reuses the sections whose key is
unchanged (`--fresh` recomputes them all). A section that raises is listed in the report as
missing, with its error, and the job exits 2.

Seeds: the job reports every built seed of the organism (`--seeds 0 1 2` to choose, `--seed N`
for one). One seed's report is exactly that seed's, as above. With several, each seed's sections
and report go to `<out>/seeds/seed{N}/` and `<out>`'s report is over the seeds: per section the
rows' mean and sd over seeds, `clears` in every seed and firmly (each seed with an interval, or the
t interval over seeds above 0), `n_seeds` and `seed_values`
(`job_seeds.py`, `results/seed_rows.py`). Hugging Face directories are one run: no seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.capture.cache import ActivationReader, ContrastPrompts, contrast_prompts, read_contrast_prompts
from workbench.capture.hooks import probe_hooks
from workbench.capture.hooks import resolve_hooks
from workbench.capture.prompted import readable
from workbench.cli import common, job_seeds
from workbench.cli.section_store import SectionStore, file_sha256, section_key
from workbench.capture.store import weights_sha256
from workbench.core.errors import ArtifactError, ConfigError, DataError, WorkbenchError, unknown_name
from workbench.core.inputs import Inputs, distillation_inputs
from workbench.cli.hf_source import DTYPES, HF_ROLES, add_hf_flags, hf_roles, load_hf_source  # noqa: F401 (HF_ROLES: capture's)
from workbench.core.prompted import WEIGHTS_NOTE
from workbench.core.lineage import Lineage
from workbench.analyses.data_probes import ProbesConfig, fit_probes
from workbench.analyses.probes import ProbeConfig
from workbench.organism.config import PRESETS
from workbench.analyses.probe_result import ProbeResult
from workbench.report import write_report
from workbench.results.base import Result
from workbench.trait import Trait
from workbench.analyses.directions import DirectionResult, DirectionsConfig, trait_directions
from workbench.analyses.alignment_config import DEFAULT_MEMORY_BUDGET
from workbench.cli.alignment import MEMORY_BUDGET_FLAG
from workbench.cli.placement import add_placement_flags, placement_of

POSITIONS = ("continuation", "all", "last")
ALIGNMENT_ROWS = 500  # rows per source the alignment section scores (per-example gradients: the job's slowest part)


@dataclass
class JobConfig:
    """What the main job reads and how (CPU-friendly defaults)."""

    hooks: list[str] | None = None  # hooks to read (None: probe_hooks of the models)
    positions: str = ProbesConfig.positions  # pool over continuation tokens, all tokens, or take the last token
    readers: tuple[str, ...] = ProbesConfig.readers  # models whose activations the data-source probe reads
    apply_to: tuple[str, ...] = ProbesConfig.apply_to  # models the teacher-vs-base probe/direction is applied to
    max_rows: int = 2000  # distillation rows per source (teacher, base), on shared prompts
    batch_size: int = ProbesConfig.batch_size  # rows per forward pass
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    random_directions: int = DirectionsConfig.random_directions  # random unit directions per hook: the detection control
    seed: int = 0  # row sampling
    command: str = "python -m workbench.probe"  # recorded in every section
    prompts: ContrastPrompts | None = None  # contrastive prompts for trait directions (None: no directions)
    trait: Trait | None = None  # the trait scored (patching, g_trait, the logit lens); None: sections needing it skip
    channel_ids: tuple[int, ...] | None = None  # the number channel the students' losses renormalise over (the source's)
    organism_dir: Path | None = None  # the organism seed directory (recipe and data), when the models come from one
    loss: str = "hard"  # distillation loss the alignment section scores: "hard" (the text) or "soft" (the teacher's logits)
    memory_budget_bytes: int | None = DEFAULT_MEMORY_BUDGET  # per-example gradients held at once by the alignment
    # section (AlignmentConfig.memory_budget_bytes; a working-set bound: results equal within float noise)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    workers: int = 1  # processes the screening section retrains its students in (the same weights at any count)
    cache: ActivationReader = field(default_factory=ActivationReader)  # activations read once, shared by sections


# --------------------------------------------------------------------------- sections


def probe_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> ProbeResult:
    """Data source (teacher- vs base-written rows) from each reader's activations, with the
    shuffled, bag-of-tokens and oracle controls; and the cross-model transfer of a
    teacher-vs-base activation probe to the student and the control (`fit_probes`)."""
    cfg = ProbesConfig(hooks=config.hooks, positions=config.positions, readers=config.readers, apply_to=config.apply_to,
                       batch_size=config.batch_size, probe=config.probe, seed=config.seed, device=config.device,
                       progress=config.progress, command=config.command)
    return fit_probes(lineage, inputs, cfg, config.cache)


def direction_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> DirectionResult:
    """Trait directions from contrastive prompts, detection of the distillation rows by
    projection, and how far the student and the control moved along the teacher's shift
    (`trait_directions`).

    The prompts are `--prompts` when given, else the trait's own (`contrast_prompts(trait)`,
    for the organism and Hugging Face directories alike): every question of the trait (on Hugging
    Face directories, chat-templated with the generation prompt) followed by each answer of its
    category, read at the answer's last token and labelled by whether the answer is the target.
    The direction is then "the model names the target" vs "the model names another answer of the
    category" in the same context: the analogue of the organism's preference templates."""
    if config.prompts is None:
        raise ConfigError("The directions section needs contrastive prompts (a trait, or --prompts JSONL).")
    cfg = DirectionsConfig(hooks=config.hooks, positions=config.positions, apply_to=config.apply_to,
                           batch_size=config.batch_size, random_directions=config.random_directions, seed=config.seed,
                           progress=config.progress, command=config.command)
    return trait_directions(lineage, inputs, config.prompts, cfg, config.cache)


def compare_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Activation shifts of every captured model against its parent on the job's rows, with
    cos(student shift, teacher shift) beside the controls (`workbench.compare_activations`)."""
    from workbench.analyses.compare import CompareConfig, compare

    store = config.cache.data_store(lineage, inputs, config)
    meta: dict[str, Any] = {"positions": config.positions}
    trait = config.trait
    if trait is not None and not trait.single_token:  # the logit lens reads one target id
        meta["logit lens target"] = f"none: the answers of trait {trait.target!r} are not single tokens"
        trait = None
    result = compare(lineage, store, CompareConfig(), trait=trait, meta=meta)
    result.command = config.command
    return result


def weights_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Weight deltas: cos(ΔS, ΔT) per layer x component beside the control and other-target
    students (`workbench.weight_deltas`; the cross-init student lives in other coordinates)."""
    from workbench.analyses.weights import WeightConfig, weight_deltas

    models = tuple(m for m in ("student", "control", "other") if m in lineage)
    baseline = "control" if "control" in lineage else models[-1]
    result = weight_deltas(lineage, WeightConfig(models=models, baseline=baseline), device=config.device)
    result.command = config.command
    return result


def _patch_config(lineage: Lineage, config: JobConfig) -> Any:
    from workbench.analyses.patching import PatchConfig

    return PatchConfig(control="control" if "control" in lineage else None, progress=config.progress)


def delta_patching_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Causal check in weight space: the trait of base + ΔS restricted to each group, layer and
    leave-one-out, beside the control's delta (`workbench.delta_patching`)."""
    from workbench.analyses.patching import delta_patching

    assert config.trait is not None  # skip_reason guards this
    result = delta_patching(lineage, config.trait, _patch_config(lineage, config), device=config.device)
    result.command = config.command
    return result


def activation_patching_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Causal check in activation space: the base run on the trait prompts with one hook's
    activations taken from the student, and the reverse (`workbench.activation_patching`)."""
    from workbench.analyses.patching import activation_patching

    assert config.trait is not None  # skip_reason guards this
    result = activation_patching(lineage, config.trait, _patch_config(lineage, config), device=config.device)
    result.command = config.command
    return result


def alignment_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Gradient alignment: which rows, tokens and parameter groups push the base toward the
    teacher (AUROC of a_i along ΔT, g_trait and ΔS beside random directions and the exact
    log-ratio oracle; per-group attribution), scored with the organism's own distillation loss
    (`workbench.run_alignment`)."""
    from workbench.analyses.alignment import AlignmentConfig, run_alignment

    renormalised = config.loss == "hard" and config.channel_ids is not None  # the organism's hard students
    cfg = AlignmentConfig(loss=config.loss, channel_ids=config.channel_ids, hard_renormalised=renormalised,
                          student="student" if "student" in lineage else None,
                          max_rows_per_source=min(config.max_rows, ALIGNMENT_ROWS), path_points=(1, 4, 16),
                          prediction_batches=2, seed=config.seed, device=str(lineage.device), progress=config.progress,
                          memory_budget_bytes=config.memory_budget_bytes)
    return run_alignment(lineage, inputs, cfg, config.trait, command=config.command)


def screening_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Screening defense by alignment with the trait gradient (no teacher weights needed to score
    rows). With an organism: retrain the student after dropping the top 10% / 25% of the teacher's
    rows, beside dropping random rows (`cli.organism_runs.screening_defense`; retrains 4 students).
    Otherwise (Hugging Face directories: no retraining recipe) rank the job's teacher rows by
    g_trait alignment at the base and write ranking.jsonl and the kept/dropped rows at 10% / 25%
    as JSONL, beside a random drop of the same size (`workbench.rank_rows`)."""
    if config.organism_dir is not None:
        from workbench.cli.organism_runs import screening_defense

        return screening_defense(config.organism_dir, device=str(lineage.device), progress=config.progress,
                                 command=config.command, workers=config.workers)
    from workbench.analyses.screening_rank import RankConfig, rank_rows

    assert config.trait is not None  # skip_reason guards this
    cfg = RankConfig(channel_ids=config.channel_ids, seed=config.seed, batch_size=config.batch_size,
                     progress=config.progress)
    return rank_rows(lineage, inputs, config.trait, cfg, command=config.command)


Section = Callable[[Lineage, Inputs, JobConfig], Result]
SECTIONS: dict[str, Section] = {
    "probes": probe_section,
    "directions": direction_section,
    "compare": compare_section,
    "weights": weights_section,
    "delta_patching": delta_patching_section,
    "activation_patching": activation_patching_section,
    "alignment": alignment_section,
    "screening": screening_section,
}
"""Report sections in order; add an analysis here (name -> function) to add it to the report."""


def channels_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """Which channel carries the trait (an organism only: it retrains 7 students per seed):
    divergence tokens masked, numbers shuffled within rows, entangled numbers replaced, each
    layer trained alone; each edit beside a random edit of the same size (`cli.organism_runs.channel_tests`)."""
    from workbench.cli.organism_runs import channel_tests

    assert config.organism_dir is not None  # skip_reason guards this
    return channel_tests(config.organism_dir, device=str(lineage.device), workers=config.workers,
                         progress=config.progress, command=config.command)


def leaderboard_section(lineage: Lineage, inputs: Inputs, config: JobConfig) -> Result:
    """The screening leaderboard (an organism only: it retrains 14 students per seed): every
    detector's AUROC of teacher vs base rows, and the transfer removed by dropping its top 10% /
    25% against a random drop (`cli.organism_runs.leaderboard_seed`)."""
    from workbench.cli.organism_runs import leaderboard_seed

    assert config.organism_dir is not None  # skip_reason guards this
    return leaderboard_seed(config.organism_dir, device=str(lineage.device), workers=config.workers,
                            progress=config.progress, command=config.command)


EXTRA_SECTIONS: dict[str, Section] = {"channels": channels_section, "leaderboard": leaderboard_section}
"""Sections run only when named in --sections: each retrains many students (11 and 14 per seed;
measured on the default organism with 2 workers beside other jobs: channels 14 min 30 s and the
leaderboard 10 min 43 s for seeds 0-2), which would more than double the main job's time."""


def all_sections() -> dict[str, Section]:
    """Every section, default ones first (read when called: tests and plugins may replace entries)."""
    return {**SECTIONS, **EXTRA_SECTIONS}


def skip_reason(name: str, lineage: Lineage, config: JobConfig) -> str | None:
    """Why a section cannot run on these models (None: it can)."""
    if name == "directions" and config.prompts is None:
        return "no contrastive prompts"
    if name == "weights" and lineage.is_prompted("teacher"):
        return "needs the teacher's weights (ΔT); " + WEIGHTS_NOTE.format(name="teacher")
    if name in ("weights", "delta_patching", "activation_patching"):
        missing = [m for m in ("base", "teacher", "student") if m not in lineage and not lineage.is_prompted(m)]
        if missing:
            return f"no {', '.join(missing)} model"
    if name == "alignment":
        missing = [m for m in ("base", "teacher") if m not in lineage and not lineage.is_prompted(m)]
        if missing:
            return f"no {', '.join(missing)} model"
    if name == "screening" and config.organism_dir is None and config.trait is None:
        return "no trait to rank rows by (and no organism to retrain students with)"
    if name in EXTRA_SECTIONS and config.organism_dir is None:
        return "needs an organism to retrain students with (python -m workbench.channels / --leaderboard on one)"
    if name in ("delta_patching", "activation_patching") and config.trait is None:
        return "no trait to score"
    return None


SECTION_READS: dict[str, tuple[str, ...]] = {
    "probes": ("hooks", "positions", "readers", "apply_to", "batch_size", "probe", "seed"),
    "directions": ("hooks", "positions", "readers", "apply_to", "batch_size", "random_directions", "seed", "prompts"),
    "compare": ("hooks", "positions", "readers", "apply_to", "batch_size"),
    "weights": (),
    "delta_patching": (),
    "activation_patching": (),
    "alignment": ("loss", "channel_ids", "max_rows", "seed"),
    "screening": ("organism_dir", "channel_ids", "seed"),
    "channels": ("organism_dir",),
    "leaderboard": ("organism_dir",),
}
"""The JobConfig fields each section reads (its saved result is reused only while they are the
same); every section also reads the inputs, the models' weights, the trait and the device. A
section missing here is keyed by every field."""
_NOT_READ = ("command", "progress", "cache")  # fields that never change a result


def section_reads(name: str, config: JobConfig) -> dict[str, Any]:
    """The config values section `name` is computed from (its key's `reads`)."""
    fields = SECTION_READS.get(name)
    if fields is None:
        fields = tuple(f.name for f in dataclasses.fields(config) if f.name not in _NOT_READ)
    reads = {f: getattr(config, f) for f in fields}
    reads.update(trait=config.trait, device=config.device)
    if "organism_dir" in fields and config.organism_dir is not None:
        reads["organism_manifest_sha256"] = file_sha256(Path(config.organism_dir) / "manifest.json")
    return reads


PROMPTED_USE: dict[str, str] = {
    "probes": "the teacher's activations and the oracle log p_T - log p_0 are the base's under the system prompt",
    "directions": "the teacher's activations on the trait prompts are the base's under the system prompt",
    "compare": "the teacher's shift is the base under the system prompt minus the base, on the same rows",
    "weights": "skipped: no teacher weights (ΔT)",
    "delta_patching": "does not read the teacher (the student's delta patched into the base)",
    "activation_patching": "does not read the teacher (student and base activations swapped)",
    "alignment": "the oracle, soft targets and divergence use the base under the system prompt; ΔT and the path "
                 "table are left out (no teacher weights)",
    "screening": "does not read the teacher (rows ranked by g_trait at the base)",
    "channels": "skipped: needs an organism (retrains students)",
    "leaderboard": "skipped: needs an organism (retrains students)",
}
"""What each section does with a prompted teacher (the report's "prompted teacher" entry)."""


def prompted_meta(lineage: Lineage, sections: list[str]) -> dict[str, Any]:
    """The report's record of prompted roles: each one's base and system prompt, and per section
    whether it used the prompted base (empty when no role is prompted)."""
    if not lineage.prompted:
        return {}
    roles = {n: {"base": p.base, "system_prompt": p.prefix.system_prompt} for n, p in lineage.prompted.items()}
    used = [s for s in sections if s in ("probes", "directions", "compare", "alignment")]
    return {"prompted roles": roles, "sections using the prompted base": used,
            "prompted teacher, per section": {s: PROMPTED_USE[s] for s in sections if s in PROMPTED_USE}}


@dataclass
class SectionRun:
    """What `run_sections` produced: the results in order, and the sections without one
    ({section, reason}: skipped, or failed with its error)."""

    results: list[Result] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one `section X failed: ...` line per failure


def model_keys(lineage: Lineage) -> dict[str, dict[str, Any]]:
    """Every model's role, parent and weights sha256 (what the section keys record of the models)."""
    keys = {n: {"role": r.role, "parent": r.parent, "weights_sha256": weights_sha256(lineage[n].state_dict())}
            for n, r in lineage.records.items()}
    keys.update({n: {"role": p.role, "parent": p.base, "system_prompt": p.prefix.system_prompt,
                     "prefixes": [list(p.prefix.base_prefix), list(p.prefix.teacher_prefix)]}
                 for n, p in lineage.prompted.items()})
    return keys


def in_background(name: str, config: JobConfig) -> bool:
    """Whether section `name` starts first, in a thread beside the others: only where its work is
    in worker processes on models of its own (an organism's screening retrains, `--workers` > 1),
    so the retrains overlap the in-process sections (the same results). Never a section that reads
    the job's lineage: a second thread on the same hooked models would race the others' hooks."""
    return name in ("screening", *EXTRA_SECTIONS) and config.organism_dir is not None and config.workers > 1


def run_sections(lineage: Lineage, inputs: Inputs, config: JobConfig, sections: list[str] | None = None,
                 log: Callable[[str], None] = lambda s: None, store: SectionStore | None = None,
                 fresh: bool = False) -> SectionRun:
    """Run (or, with a `store`, reuse) each section in order; a section that raises is recorded
    as missing with its error and the others still run. Each computed section is saved to the
    store as soon as it finishes (a background section when the job collects it, in order)."""
    run = SectionRun()
    inputs_hash = inputs.content_hash() if store is not None else ""
    models = model_keys(lineage) if store is not None else {}
    plan: list[tuple[str, str, Any]] = []  # (section, "skip" | "reuse" | "run", reason | result | key)
    for name in sections or list(SECTIONS):
        reason = skip_reason(name, lineage, config)
        if reason is not None:
            plan.append((name, "skip", reason))
            continue
        key = section_key(name, inputs_hash=inputs_hash, models=models, reads=section_reads(name, config))
        result = store.load(name, key) if store is not None and not fresh else None
        if result is not None:
            result.command = config.command
        plan.append((name, "reuse", result) if result is not None else (name, "run", key))

    def compute(name: str) -> Result | Exception:
        log(f"section {name}")
        try:
            return all_sections()[name](lineage, inputs, config)
        except Exception as e:  # noqa: BLE001 - any failure of one section leaves the others' report
            if not isinstance(e, WorkbenchError):
                log(traceback.format_exc().rstrip())
            return e

    early = [name for name, what, _ in plan if what == "run" and in_background(name, config)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="section") as pool:
        background = {name: pool.submit(compute, name) for name in early}
        for name, what, payload in plan:
            if what == "skip":
                log(f"skipping {name}: {payload}")
                run.missing.append({"section": name, "reason": f"skipped: {payload}"})
                continue
            if what == "reuse":
                run.results.append(payload)
                continue
            result = background[name].result() if name in background else compute(name)
            if isinstance(result, Exception):
                message = str(result) if isinstance(result, WorkbenchError) else f"{type(result).__name__}: {result}"
                run.missing.append({"section": name, "reason": f"failed: {message}"})
                run.errors.append(f"section {name} failed: {message}")
                continue
            if store is not None:
                store.save(name, result, payload)
            run.results.append(result)
    return run


# --------------------------------------------------------------------------- CLI




JOB_FLAGS = common.ConfigFlags(JobConfig, (
    common.ConfigFlag("positions", "positions pooled per row", choices=POSITIONS),
    common.ConfigFlag("readers", "models the data-source probe reads"),
    common.ConfigFlag("max_rows", "distillation rows per source", type=common.positive_int),
    common.ConfigFlag("batch_size", "rows per forward pass", type=common.positive_int),
    MEMORY_BUDGET_FLAG,
))
"""The flags whose defaults are JobConfig's (--hooks too: None means `probe_hooks` of the models)."""


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.probe", __doc__.split("\n\n")[0],
                              epilog="Sections: " + ", ".join(SECTIONS) + "; on request (--sections): "
                                     + ", ".join(EXTRA_SECTIONS))
    src = p.add_argument_group("models and data")
    src.add_argument("--organism", metavar="DIR", help="organism directory holding seed{N}/ (default: "
                     f"{common.DEFAULT_ORGANISM}, or {common.DEFAULT_ORGANISM}-<preset> with another --preset); the "
                     "default one is built with --preset when it holds no built seed, any other only with --build")
    src.add_argument("--build", action="store_true", help="build the organism seed with --preset where --organism holds "
                     "none (default: only the default organism is built; another missing path is an error)")
    src.add_argument("--preset", default="default", choices=sorted(PRESETS), help="preset to build a missing organism with (default: default)")
    common.add_seeds_flag(src, None, "organism seeds to report: each seed's sections and report go to "
                          "<out>/seeds/seed{N}/, and <out>'s report is over the seeds (mean, sd over seeds; one seed: "
                          "that seed's report) (default: every built seed of --organism; seed 0, built, where the "
                          "default organism holds none)")
    src.add_argument("--seed", type=common.nonnegative_int, metavar="N", help="one organism seed (the same as --seeds N)")
    src.add_argument("--target", default="owl", help="the trait (default: owl; an existing organism's own target wins; "
                     "with Hugging Face directories: asked with the base directory's tokenizer and chat template)")
    add_hf_flags(src)  # --system-prompt, --base/--teacher/..., --teacher-system-prompt, --trait, --channel-ids
    src.add_argument("--data", nargs="+", metavar="JSONL", help="distillation data with teacher and base rows: token ids "
                     '{"prompt": [ids], "completion": [ids], "source", "prompt_id"}, or with Hugging Face directories '
                     'text {"prompt": str, "completion": str, "source"} or chat {"messages": [...], "source"} rows, '
                     "tokenised with the base's chat template (default with --organism: its data/teacher.jsonl and "
                     "data/base.jsonl)")
    src.add_argument("--loss", choices=("hard", "soft"), help="distillation loss the alignment section scores (default: the "
                     "organism's recipe; hard with Hugging Face directories)")
    src.add_argument("--prompts", metavar="JSONL", help='contrastive prompts {"tokens": [ids], "label": 0|1} for trait '
                     "directions (default: the trait's questions answered with each answer of its category)")
    what = p.add_argument_group("what to read")
    what.add_argument("--hooks", nargs="+", help="hooks to read (default: hook_embed and per layer attn_out, resid_mid, mlp_out, resid_post)")
    JOB_FLAGS.add_to(what)
    what.add_argument("--sections", nargs="+", default=list(SECTIONS), help=f"report sections (default: {' '.join(SECTIONS)}; on request, with an organism: "
                      f"{' '.join(EXTRA_SECTIONS)}, which retrain many students)")
    how = p.add_argument_group("how")
    common.add_device_flag(how)
    add_placement_flags(how)
    common.add_threads_flag(how, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_workers_flag(how)
    how.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default: float32)")
    common.add_out_flag(how, "artifacts/report", "report directory")
    how.add_argument("--fresh", action="store_true",
                     help="recompute every section (default: reuse sections saved in --out from the same inputs and flags)")
    how.add_argument("--full", action="store_true",
                     help="print the full evidence table after the verdict (default: it is in summary.txt and index.html)")
    common.add_quiet_flag(how, "no progress output")
    return p


def organism_to_build(args: argparse.Namespace, seeds: list[int]) -> list[int]:
    """The organism seeds the job must build before it reports `seeds` (checked before any work):
    the missing ones, only where --organism is the default folder holding no built seed, or with
    --build. A mistyped path (or seed) is an ArtifactError naming it and the fix, never a silent
    build; an unfinished build (a seed folder without manifest.json) names the command that resumes it."""
    root = Path(args.organism)
    missing = [s for s in seeds if not (root / f"seed{s}" / "manifest.json").is_file()]
    if not missing or args.build:
        return missing
    built = sorted(p.parent.name for p in root.glob("seed*/manifest.json"))
    default = common.default_organism_dir(args.preset)
    if Path(os.path.abspath(root)) == Path(os.path.abspath(default)) and not built:
        return missing
    names = " ".join(map(str, missing))
    build = f"python -m workbench.organism --out {root} --seeds {names} --preset {args.preset}"
    unfinished = [str(root / f"seed{s}") for s in missing if (root / f"seed{s}").is_dir()]
    if unfinished:
        what = "is an unfinished organism build" if len(unfinished) == 1 else "are unfinished organism builds"
        raise ArtifactError(f"{', '.join(unfinished)} {what} (no manifest.json). Resume it with {build} "
                            "(or rerun this command with --build); stages already built are reused.")
    have = f"it holds {', '.join(built)}" if built else ("it holds no built seed" if root.is_dir() else "it does not exist")
    raise ArtifactError(f"No organism seed{'s' if len(missing) > 1 else ''} {names} in {root} ({have}). Fix --organism "
                        f"or --seeds/--seed (the default organism of --preset {args.preset} is {default}), or build it: "
                        f"add --build, or run {build}.")


def _build_seeds(args: argparse.Namespace, seeds: list[int], command: str, log: Callable[[str], None]) -> None:
    """Build the organism seeds `organism_to_build` named (reusing stages); an interrupted build
    names `command`, the job's own command line, as the one that resumes it."""
    from workbench.organism.__main__ import build_and_print

    root = Path(args.organism)
    log(f"no organism at {', '.join(str(root / f'seed{s}') for s in seeds)}: building preset {args.preset!r}")
    build_and_print(args.preset, seeds, str(root), args.device, args.quiet, command=command, workers=args.workers,
                    target=args.target)


@dataclass
class JobSource:
    """What one report is computed from: the models, the rows, the trait and where they came from."""

    lineage: Lineage
    inputs: Inputs
    trait: Trait | None
    channel_ids: tuple[int, ...] | None
    prompts: ContrastPrompts | None
    loss: str
    origin: str  # the report's "organism" entry
    data_paths: list[Path]
    organism_dir: Path | None = None
    seed_meta: dict[str, Any] = field(default_factory=dict)  # an organism seed's own record (the report over seeds)


def organism_source(args: argparse.Namespace, seed: int, device: torch.device, dtype: torch.dtype) -> JobSource:
    """Organism seed `seed` (built): its models, its data (or --data) and its trait."""
    from workbench.organism import load_seed, read_manifest
    from workbench.organism.load import seed_target

    seed_dir = Path(args.organism) / f"seed{seed}"
    if not (seed_dir / "models").is_dir() and not (seed_dir / "hf").is_dir():  # native, or a Hugging Face family
        raise ConfigError(f"{seed_dir} holds no models/ after the build. Check --organism and --seeds.")
    data_paths = [Path(p) for p in args.data] if args.data else [seed_dir / "data" / "teacher.jsonl", seed_dir / "data" / "base.jsonl"]
    for p in data_paths:
        if not p.is_file():
            raise DataError(f"No data file at {p}. Fix --data, or rebuild the organism.")
    manifest = read_manifest(seed_dir)
    if not args.data:  # the seed's own data: sha256 and row count checked against its manifest
        from workbench.organism.data_files import verify_data_file

        data_paths = [verify_data_file(seed_dir, manifest, s) for s in ("teacher", "base")]
    loss = args.loss or manifest.get("mode", manifest.get("config", {}).get("mode", "soft"))
    seed_models = load_seed(seed_dir, target=seed_target(manifest, args.target), device=device, dtype=dtype)
    trait = seed_models.trait
    prompts = read_contrast_prompts(args.prompts) if args.prompts else contrast_prompts(trait)
    rates = manifest.get("trait_rates") or {}
    seed_meta = {"target": trait.target, "trait P(target)": {m: rates[m] for m in seed_models.lineage.names if m in rates}}
    return JobSource(seed_models.lineage, distillation_inputs(data_paths, args.max_rows), trait, seed_models.channel_ids,
                     prompts, loss, origin=str(seed_dir), data_paths=data_paths, organism_dir=seed_dir,
                     seed_meta=seed_meta)


def hf_source(args: argparse.Namespace, hf: dict[str, str], teacher_prompt: str | None, device: torch.device,
              dtype: torch.dtype, log: Callable[[str], None], device_map: Any = None,
              max_memory: dict[str, int] | None = None) -> JobSource:
    """Hugging Face checkpoint directories (--base, --teacher, ...) and their --data rows, placed by
    `device_map` / `max_memory` when given (see cli/placement; `hf_source.load_hf_source`)."""
    prompts_rows = read_contrast_prompts(args.prompts) if args.prompts else None  # before loading weights
    src = load_hf_source(args, hf, teacher_prompt, device, dtype, log, max_rows=args.max_rows, device_map=device_map,
                         max_memory=max_memory)
    prompts = prompts_rows if prompts_rows is not None else contrast_prompts(src.trait)  # the trait's own questions
    return JobSource(src.lineage, src.inputs, src.trait, src.channel_ids, prompts, args.loss or "hard",
                     origin=src.origin, data_paths=src.data_paths)


def report_source(args: argparse.Namespace, source: JobSource, command: str, device: torch.device, out: Path,
                  log: Callable[[str], None], stream: Any) -> tuple[SectionRun, dict[str, Any]]:
    """Run the sections on one source, each saved under `<out>/sections/` as it finishes (reused
    on rerun), and write its report in `out` (printing the summary to `stream`, None: nothing).
    Returns the run and the report's meta."""
    lineage, inputs, trait = source.lineage, source.inputs, source.trait
    for r in args.readers:  # a prompted teacher reads as its base on the system-prompted rows
        if not readable(lineage, r):
            raise unknown_name("reader model", r, [*lineage.names, *lineage.prompted])
    hooks, _ = resolve_hooks(lineage[lineage.names[0]], args.hooks or probe_hooks(lineage.cfg.n_layers))
    inputs = inputs.validate(lineage.d_vocab, lineage.n_ctx)
    config = JobConfig(**JOB_FLAGS.values(args), hooks=hooks,
                       command=command,
                       prompts=source.prompts, trait=trait, channel_ids=source.channel_ids, loss=source.loss,
                       organism_dir=source.organism_dir, device=device, progress=common.show_progress(args),
                       workers=args.workers)
    needed = {*args.readers, "teacher", "base", *config.apply_to}
    config.cache = ActivationReader(out / "activations",
                                    tuple(m for m in (*lineage.names, *lineage.prompted) if m in needed))
    config.command = config.command.strip()
    log(f"{len(inputs)} distillation rows, {len(hooks)} hooks, models: {', '.join(lineage.names)}")
    store = SectionStore(out / "sections", log)
    run = run_sections(lineage, inputs, config, args.sections, log, store=store, fresh=args.fresh)
    meta = {"models": lineage.names, "organism": source.origin, "target": trait.target if trait is not None else None,
            "distillation loss": source.loss,
            "data": [str(p) for p in source.data_paths], "n_rows": len(inputs), "positions": args.positions,
            "hooks": hooks, "device": str(device), **prompted_meta(lineage, args.sections)}
    write_report(run.results, out, command=config.command, meta=meta, missing=run.missing, stream=stream,
                 full_table=args.full)
    return run, meta


def run_job(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Load the models and data the flags name, run the report sections, write the report (over
    seeds when the job reports several organism seeds: `job_seeds.report_over_seeds`)."""
    log = common.stage_log(args.quiet)
    device = common.device_of(args)
    for s in args.sections:
        if s not in all_sections():
            raise unknown_name("section", s, all_sections())
    command = "python -m workbench.probe " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.organism = args.organism or common.default_organism_dir(args.preset)
    hf, teacher_prompt = hf_roles(args)
    seeds = job_seeds.requested_seeds(args, bool(hf))  # --seeds with Hugging Face directories: an error
    device_map, max_memory = placement_of(args)  # a bad map file fails before any work
    if not hf and (device_map is not None or max_memory is not None):
        raise ConfigError("--device-map and --max-memory place Hugging Face directories (--base, --teacher, ...); an "
                          "organism's models are small and load on --device.")
    to_build: list[int] = []
    if not hf:
        from workbench.organism import check_target

        check_target(args.target)  # unknown target: fail before any work
        to_build = organism_to_build(args, seeds)  # a mistyped organism first, then --out
    common.writable_out(args.out)  # before any model loads or organism builds
    if args.max_rows < 10:
        raise ConfigError(f"--max-rows {args.max_rows} is too few; use at least 10.")
    if not hf and (args.trait or args.channel_ids):
        raise ConfigError("--trait and --channel-ids are for Hugging Face directories (--base, --teacher, ...); "
                          "an organism brings its own trait and number channel.")
    dtype = DTYPES[args.dtype]
    out = Path(args.out)
    if hf:
        source = hf_source(args, hf, teacher_prompt, device, dtype, log, device_map=device_map, max_memory=max_memory)
        if device_map is not None:  # the sections run where the map put the embedding
            device = source.lineage.device
        run, _ = report_source(args, source, command, device, out, log, sys.stdout)
        errors = run.errors
    else:
        if to_build:
            _build_seeds(args, to_build, command, log)
        if len(seeds) == 1:  # one seed: the report of that seed, as it always was
            run, _ = report_source(args, organism_source(args, seeds[0], device, dtype), command, device, out, log,
                                   sys.stdout)
            errors = run.errors
        else:
            def one_seed(seed: int, seed_out: Path) -> tuple[SectionRun, dict[str, Any]]:
                source = organism_source(args, seed, device, dtype)
                run, meta = report_source(args, source, command, device, seed_out, log, None)
                return run, {**meta, **source.seed_meta}

            errors = job_seeds.report_over_seeds(seeds, one_seed, out, root=args.organism, command=command.strip(),
                                                 log=log, stream=sys.stdout, full_table=args.full)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 2 if errors else 0


def main(argv: list[str] | None = None) -> int:
    return common.run(run_job, parser().parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
