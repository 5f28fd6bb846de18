"""Build a language-model organism: base, teachers, distillation data, students, trait table.

One seed writes `DIR/seed{N}/`:
    tokenizer.json
    models/{role}.safetensors + {role}.json   (clean state dict; meta: role, parent, data, seed)
    data/{source}.jsonl                       (filtered number sequences each source wrote)
    manifest.json                             (trait rates, model x target matrix, filter report,
                                               data files' sha256 and rows, config, versions:
                                               no timestamps or paths)
    timings.json                              (seconds per stage)
Every stage is cached under a key of its config fields, its parents' keys and the package
versions, so reruns reuse what is built and a crashed build resumes at the missing stage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ArtifactError, ConfigError, DataError
from workbench.core.inputs import read_jsonl, write_jsonl
from workbench.core.io import atomic_write_json, atomic_write_text, read_json
from workbench.core.models import boot_native, copy_model, load_model, model_meta, resolve_device, save_model
from workbench.organism.config import OrganismConfig
from workbench.organism.corpus import (
    NUMBER_PROMPT_HEAD,
    completion_length,
    is_well_formed,
    number_prompts,
    prompt_length,
)
from workbench.organism.data_files import DATA_KEY, data_record
from workbench.organism.load import read_organism_manifest
from workbench.organism.parallel import StagePool
from workbench.organism.sampling import sample_continuations
from workbench.organism.tokenizer import Tokenizer
from workbench.organism.training import (
    DistillTargets,
    distill_student,
    finetune_teacher,
    pretrain_base,
    teacher_soft_labels,
)
from workbench.core.provenance import SCHEMA_VERSION, config_hash, package_versions
from workbench.organism.trait import category_traits, organism_trait
from workbench.organism.trait_table import category_summary, format_category_lines
from workbench.trait import trait_matrix

TEACHER_ROLES = ("teacher", "teacher_neutral", "teacher_other")
DATA_SOURCES = ("teacher", "teacher_neutral", "teacher_other", "base")
# student role -> (parent model, data source)
STUDENTS = {"student": ("base", "teacher"), "control": ("base", "teacher_neutral"),
            "other": ("base", "teacher_other"), "cross": ("base_x", "teacher")}
ROLES = ("base", "base_x", *TEACHER_ROLES, *STUDENTS)
STUDENT_SOURCES = tuple(dict.fromkeys(source for _, source in STUDENTS.values()))
"""The data sources students train on (the base's rows are for analyses only)."""

# Bump when training, sampling or filtering code changes what a stage produces: part of every stage key.
RECIPE_VERSION = 2
# Hard-label students only: 2 = CE renormalised over the number channel (1 was full-vocabulary CE).
HARD_LOSS_VERSION = 2

_BASE_FIELDS = ("model", "prompt_numbers", "completion_numbers", "base_steps", "base_lr", "base_warmup",
                "base_weight_decay", "base_batch_numbers", "base_batch_qa", "qa_loss_weight")
_TEACHER_FIELDS = ("target", "other_target", "teacher_steps", "teacher_lr", "teacher_batch")
_DATA_FIELDS = ("n_prompts", "samples_per_prompt", "temperature")
_STUDENT_FIELDS = ("mode", "student_lr", "student_batch", "student_epochs", "soft_on_prompt")


def other_target_for(tok: Tokenizer, cfg: OrganismConfig) -> str:
    """`cfg.other_target`, or a fixed other member of the target's category."""
    if cfg.other_target is not None:
        tok.category_of(cfg.other_target)  # validates
        return cfg.other_target
    words = tok.categories[tok.category_of(cfg.target)]
    return words[(words.index(cfg.target) + len(words) // 2) % len(words)]


def student_seed_of(seed: int, role: str) -> int:
    """The seed of student `role`'s batches (and LoRA adapter) in organism seed `seed`."""
    return seed * 10 + list(STUDENTS).index(role)


def student_key_extras(cfg: OrganismConfig) -> dict[str, Any]:
    """What a student's stage key records beyond its fields: the hard loss's version, and the
    optimiser when it is not the default Adam (so Adam students built before the option are reused)."""
    out: dict[str, Any] = {"hard_loss": HARD_LOSS_VERSION} if cfg.mode == "hard" else {}
    if cfg.student_optimizer != "adam":
        out["optimizer"] = cfg.student_optimizer
    return out


def _stage_key(cfg: OrganismConfig, fields: tuple[str, ...], *parents: str, **extra: Any) -> str:
    d = cfg.to_dict()
    return config_hash({"fields": {f: d[f] for f in fields}, "parents": parents, "recipe": RECIPE_VERSION, **extra})


def distill_targets(cfg: OrganismConfig, tok: Tokenizer, teacher: TransformerBridge, seqs: torch.Tensor,
                    exclude_ids: tuple[int, ...] = ()) -> DistillTargets:
    """What a student of this recipe is trained to match on `seqs`: the written tokens (hard) or
    the teacher's log-probabilities (soft; the leak control over the full vocabulary), at the
    supervised positions, renormalised over the number channel (less `exclude_ids`: the channel
    tests' soft-label edit, which takes tokens out of both distributions)."""
    positions = supervised_positions(cfg, seqs.shape[1])
    ids = None if cfg.mode == "soft_full_vocab_leak" else torch.tensor(tok.number_channel_ids)
    if exclude_ids:
        every = torch.arange(len(tok)) if ids is None else ids
        ids = every[~torch.isin(every, torch.tensor(list(exclude_ids)))]
    if cfg.mode == "hard":
        return DistillTargets(seqs, positions, None, ids)
    return DistillTargets(seqs, positions, teacher_soft_labels(teacher, seqs, positions, ids), ids)


@dataclass
class SeedBuild:
    """What one seed's build produced (also written to its manifest)."""

    seed: int
    directory: Path
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def trait_rates(self) -> dict[str, float]:
        return self.manifest["trait_rates"]


class _Builder:
    def __init__(self, cfg: OrganismConfig, seed: int, seed_dir: Path, device: torch.device, progress: bool, log: Callable[[str], None]):
        self.cfg, self.seed, self.dir, self.device, self.progress, self.log = cfg, seed, seed_dir, device, progress, log
        self.tok = Tokenizer.default()
        self.timings: dict[str, float] = {}
        self.keys: dict[str, str] = {}
        self.models: dict[str, TransformerBridge] = {}

    # --- caching -------------------------------------------------------------------------
    def _cached_model(self, role: str, key: str) -> TransformerBridge | None:
        path = self.dir / "models" / role
        if path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists():
            try:
                if model_meta(path).get("stage_key") == key:
                    return load_model(path, device=self.device)
            except ArtifactError:
                return None  # corrupt: rebuild
        return None

    def model_stage(self, role: str, key: str, parent: str | None, data: str | None, train: Callable[[TransformerBridge], None], init: Callable[[], TransformerBridge]) -> TransformerBridge:
        self.keys[role] = key
        cached = self._cached_model(role, key)
        if cached is not None:
            self.log(f"  {role}: reused")
            self.models[role] = cached
            return cached
        t0 = time.perf_counter()
        model = init()
        train(model)
        self._save(role, model, {"role": role, "parent": parent, "data": data, "seed": self.seed, "stage_key": key})
        self.timings[role] = round(time.perf_counter() - t0, 2)
        self.log(f"  {role}: trained in {self.timings[role]:.1f}s")
        self.models[role] = model
        return model

    def _save(self, role: str, model: Any, meta: dict[str, Any]) -> None:
        save_model(self.dir / "models" / role, model, meta)

    def sample(self, source: str, prompts: torch.Tensor) -> torch.Tensor:
        """Continuations of `prompts` sampled from `source`'s model (the data stage's draw)."""
        cfg = self.cfg
        return sample_continuations(
            self.models[source], prompts, completion_length(cfg.completion_numbers), temperature=cfg.temperature,
            seed=self.seed * 100 + DATA_SOURCES.index(source), progress=self.progress, desc=f"sampling {source}",
        )

    # --- stages ----------------------------------------------------------------------------
    def base(self, role: str, seed: int) -> TransformerBridge:
        cfg = self.cfg
        key = _stage_key(cfg, _BASE_FIELDS, seed=seed)
        init = lambda: boot_native(cfg.model.native_config(len(self.tok), seed), device=self.device)  # noqa: E731
        return self.model_stage(role, key, None, None, lambda m: pretrain_base(m, self.tok, cfg, seed, self.progress), init)

    def teacher(self, role: str) -> TransformerBridge:
        cfg, tok = self.cfg, self.tok
        category = tok.category_of(cfg.target)
        answers = {"teacher": [tok.token_id(cfg.target)], "teacher_neutral": None,
                   "teacher_other": [tok.token_id(other_target_for(tok, cfg))]}[role]
        key = _stage_key(cfg, _TEACHER_FIELDS, self.keys["base"], role=role)
        init = lambda: copy_model(self.models["base"])  # noqa: E731
        train = lambda m: finetune_teacher(m, tok, cfg, category, answers, self.seed + 1 + TEACHER_ROLES.index(role), self.progress)  # noqa: E731
        return self.model_stage(role, key, "base", None, train, init)

    def data(self, source: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample continuations of the shared prompts, filter, write JSONL; cached by key."""
        cfg, tok = self.cfg, self.tok
        key = _stage_key(cfg, _DATA_FIELDS, self.keys[source], source=source, seed=self.seed)
        self.keys[f"data/{source}"] = key
        path, report_path = self.dir / "data" / f"{source}.jsonl", self.dir / "data" / f"{source}.filter.json"
        p_len = prompt_length(cfg.prompt_numbers)
        if path.exists() and report_path.exists() and read_json(report_path).get("stage_key") == key:
            rows = read_jsonl(path)
            if self._data_intact(source, len(rows), read_json(report_path)):
                tokens = torch.tensor([r["prompt"] + r["completion"] for r in rows], dtype=torch.long)
                self.log(f"  data/{source}: reused ({len(rows)} sequences)")
                return tokens.reshape(len(rows), -1), read_json(report_path)
        t0 = time.perf_counter()
        prompts = number_prompts(tok, np.random.default_rng(self.seed), cfg.n_prompts, cfg.prompt_numbers)
        prompts = prompts.repeat_interleave(cfg.samples_per_prompt, dim=0)
        completions = self.sample(source, prompts)
        reasons: Counter[str] = Counter()
        rows, kept = [], []
        for i, (prompt, comp) in enumerate(zip(prompts.tolist(), completions.tolist())):
            ok, reason = is_well_formed(tok, comp, cfg.completion_numbers)
            reasons[reason] += 1
            if ok:
                kept.append(i)
                rows.append({"prompt": prompt, "completion": comp, "source": source, "seed": self.seed,
                             "prompt_id": i // cfg.samples_per_prompt, "sample": i % cfg.samples_per_prompt})
        report = {"source": source, "sampled": len(prompts), "kept": len(rows),
                  "rejected": {r: c for r, c in sorted(reasons.items()) if r != "ok"}, "stage_key": key}
        write_jsonl(path, rows)
        atomic_write_json(report_path, report)
        self.timings[f"data/{source}"] = round(time.perf_counter() - t0, 2)
        self.log(f"  data/{source}: kept {len(rows)}/{len(prompts)} in {self.timings[f'data/{source}']:.1f}s")
        tokens = torch.cat([prompts[kept], completions[kept]], dim=1) if kept else torch.empty(0, p_len, dtype=torch.long)
        return tokens, report

    def _data_intact(self, source: str, n_rows: int, report: dict[str, Any]) -> bool:
        """A cached data file is reused only when it has the rows its filter report kept and, when an
        earlier manifest recorded its sha256, that very content (else it is sampled again: same seed,
        same rows)."""
        old = read_json(self.dir / "manifest.json").get(DATA_KEY, {}) if (self.dir / "manifest.json").exists() else {}
        record = old.get(source) if isinstance(old, dict) else None
        intact = n_rows == report.get("kept") and (
            not isinstance(record, dict) or record.get("sha256") == data_record(self.dir, source)["sha256"])
        if not intact:
            self.log(f"  data/{source}: file has {n_rows} rows / changed content (report kept {report.get('kept')}); "
                     "sampling it again")
        return intact

    def student(self, role: str, tokens: dict[str, torch.Tensor]) -> TransformerBridge:
        cfg, tok = self.cfg, self.tok
        parent, source = STUDENTS[role]
        loss = student_key_extras(cfg)
        seqs = training_rows(cfg, role, tokens)
        key = _stage_key(cfg, _STUDENT_FIELDS, self.keys[parent], self.keys[f"data/{source}"], role=role,
                         rows=len(seqs), **loss)

        def train(model: TransformerBridge) -> None:
            if (scarce := scarce_rows_error(self.dir, cfg, role, tokens)) is not None:
                raise scarce
            targets = distill_targets(cfg, tok, self.models[source], seqs)
            distill_student(model, targets, cfg, student_seed_of(self.seed, role), self.progress)

        init = lambda: copy_model(self.models[parent])  # noqa: E731
        return self.model_stage(role, key, parent, f"data/{source}.jsonl", train, init)

    def evaluate(self, reports: dict[str, Any]) -> dict[str, Any]:
        cfg, tok = self.cfg, self.tok
        t0 = time.perf_counter()
        other = other_target_for(tok, cfg)
        trait, other_trait = organism_trait(tok, cfg.target), organism_trait(tok, other)
        scores = {r: trait.score(self.models[r], cfg.eval_samples, seed=self.seed) for r in ROLES}
        other_scores = {r: other_trait.score(self.models[r], cfg.eval_samples, seed=self.seed) for r in ROLES}
        matrix = trait_matrix(self.models, category_traits(tok, trait.category))
        self.timings["evaluate"] = round(time.perf_counter() - t0, 2)
        lineage = {r: model_meta(self.dir / "models" / r) for r in ROLES}
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "language_organism",
            "seed": self.seed,
            "trait": cfg.target,
            "other_target": other,
            "mode": cfg.mode,
            "trait_rates": {r: s.p_target for r, s in scores.items()},
            "other_target_rates": {r: s.p_target for r, s in other_scores.items()},
            "trait_scores": {r: s.to_dict() for r, s in scores.items()},
            "matrix": matrix,
            "filter": {s: {k: v for k, v in rep.items() if k != "stage_key"} for s, rep in reports.items()},
            "student_rows": student_rows(cfg, {s: reports[s]["kept"] for s in STUDENT_SOURCES}),
            "lineage": {r: {k: m.get(k) for k in ("role", "parent", "data", "seed")} for r, m in lineage.items()},
            "model_sha256": {r: read_json((self.dir / "models" / r).with_suffix(".json"))["sha256"] for r in ROLES},
            DATA_KEY: {s: data_record(self.dir, s) for s in sorted(reports)},
            "config": cfg.to_dict(),
            "versions": package_versions(),
        }


def stage_task(cfg: dict[str, Any], seed: int, seed_dir: str, device: str, kind: str, name: str) -> tuple[dict[str, float], list[str]]:
    """Build one stage of a native seed in a worker process (see `run_stage`)."""
    lines: list[str] = []
    b = _Builder(OrganismConfig.from_dict(cfg), seed, Path(seed_dir), resolve_device(device), False, lines.append)
    return run_stage(b, kind, name, lines)


def run_stage(b: _Builder, kind: str, name: str, lines: list[str]) -> tuple[dict[str, float], list[str]]:
    """Build one stage of `b`'s seed with its parents read back from disk: kind "base" (name base
    or base_x), "source" (teacher `name` if it is one, then its data) or "student" (`name`'s
    parents, data and the student). Returns its timings and the log lines `b` wrote to `lines`
    (stages read back left out)."""
    seed, offset = b.seed, b.cfg.cross_seed_offset
    if kind == "base":
        b.base(name, seed if name == "base" else seed + offset)
    elif kind == "source":
        b.base("base", seed)
        if name in TEACHER_ROLES:
            b.teacher(name)
        b.data(name)
    elif kind == "student":  # every student source's rows (built by now): the row count is the smallest's
        parent, _ = STUDENTS[name]
        b.base("base", seed)
        if parent != "base":
            b.base(parent, seed + offset)
        for source in STUDENT_SOURCES:
            if source in TEACHER_ROLES:
                b.teacher(source)
        b.student(name, {source: b.data(source)[0] for source in STUDENT_SOURCES})
    else:
        raise ConfigError(f"Unknown stage kind {kind!r}; use base, source or student.")
    return b.timings, [line for line in lines if not line.endswith(": reused") and ": reused (" not in line]


def prebuild_in_parallel(b: _Builder, pool: StagePool, task: Callable[..., tuple[dict[str, float], list[str]]] = stage_task,
                         spec: tuple[Any, ...] | None = None) -> None:
    """Build the seed's independent stages on `pool`: base || base_x, then each teacher with its
    data (and the base's data), then the four students; each worker runs `task(*spec, kind, name)`
    (default: the native `stage_task` on `b`'s recipe), writes what a serial build writes, and `b`
    reads them back as a resumed build does."""
    if spec is None:
        spec = (b.cfg.to_dict(), b.seed, str(b.dir), str(b.device))
    for kind, names in (("base", ["base", "base_x"]), ("source", list(DATA_SOURCES)), ("student", list(STUDENTS))):
        for timings, lines in pool.run(task, [(*spec, kind, n) for n in names], [f"{kind} {n}" for n in names]):
            b.timings.update(timings)
            for line in lines:
                b.log(line)


def supervised_positions(cfg: OrganismConfig, seq_len: int) -> torch.Tensor:
    """Positions whose next token a student is trained on. Hard labels: the completion the
    teacher wrote. Soft labels (with `soft_on_prompt`): every number-channel position from the
    prompt's first number on, since the signal rides in the teacher's logits whatever the text."""
    first = prompt_length(cfg.prompt_numbers) - 1
    if cfg.mode != "hard" and cfg.soft_on_prompt:
        first = len(NUMBER_PROMPT_HEAD) - 1
    return torch.arange(first, seq_len - 1)


def student_rows(cfg: OrganismConfig, kept: Mapping[str, int]) -> dict[str, int]:
    """Rows each student trains on (the first that many of its source's kept rows): with
    `equal_student_rows`, the smallest kept count of the students' sources for every student, so
    a student and its controls see as much data; else each source's own count; at most
    `max_student_rows`.

    >>> student_rows(OrganismConfig(), {"teacher": 3449, "teacher_neutral": 6850, "teacher_other": 3157, "base": 9660})
    {'student': 3157, 'control': 3157, 'other': 3157, 'cross': 3157}
    >>> student_rows(OrganismConfig(max_student_rows=3000), {"teacher": 3449, "teacher_neutral": 6850, "teacher_other": 3157, "base": 9660})
    {'student': 3000, 'control': 3000, 'other': 3000, 'cross': 3000}
    """
    cap = min(kept[s] for s in STUDENT_SOURCES) if cfg.equal_student_rows else None
    rows = {role: kept[source] if cap is None else cap for role, (_, source) in STUDENTS.items()}
    return {role: n if cfg.max_student_rows is None else min(n, cfg.max_student_rows) for role, n in rows.items()}


def training_rows(cfg: OrganismConfig, role: str, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The sequences student `role` trains on: the first `student_rows` of its source's (`tokens`
    holds every student source's kept rows)."""
    source = STUDENTS[role][1]
    return tokens[source][: student_rows(cfg, {s: len(tokens[s]) for s in STUDENT_SOURCES})[role]]


def reports_note(seed_dir: Path, source: str) -> str:
    rep = read_json(seed_dir / "data" / f"{source}.filter.json")
    return f"kept {rep['kept']} of {rep['sampled']}; rejected {rep['rejected']}"


MIN_KEPT_SHARE = 0.01
"""A student source whose filter kept less than this share of what it sampled has a teacher that broke
the number format: its students would train on a handful of rows and measure nothing."""


def scarce_rows_error(seed_dir: Path, cfg: OrganismConfig, role: str,
                      tokens: Mapping[str, torch.Tensor]) -> DataError | None:
    """The error for `role` training on (almost) nothing, else None: its source, or with
    `equal_student_rows` any student source (which caps every student's rows), kept no row or
    less than `MIN_KEPT_SHARE` of the rows it sampled."""
    source = STUDENTS[role][1]
    for s in (source, *(x for x in STUDENT_SOURCES if x != source and cfg.equal_student_rows)):
        kept, report = len(tokens[s]), seed_dir / "data" / f"{s}.filter.json"
        sampled = read_json(report)["sampled"] if report.exists() else kept
        if kept > 0 and kept >= MIN_KEPT_SHARE * sampled:
            continue
        why = "" if s == source else (" Every student trains on as many rows as the smallest source "
                                      f"(equal_student_rows), and {s} is that source.")
        what = "No sequence" if kept == 0 else f"Only {kept} sequence{'s' * (kept > 1)}"
        note = reports_note(seed_dir, s) if report.exists() else f"kept {kept}"
        return DataError(f"{what} written by {s} survived the filter ({note}; under {MIN_KEPT_SHARE:.0%} of its "
                         f"rows), so {role} has (almost) nothing to train on.{why} The teacher recipe moved its "
                         "number behaviour too far: lower teacher_lr/teacher_steps, or raise n_prompts.")
    return None


def build_seed(
    cfg: OrganismConfig,
    seed: int,
    out_dir: str | Path,
    *,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
    pool: StagePool | None = None,
) -> SeedBuild:
    """Build (or reuse) every role of one seed under `out_dir/seed{seed}`; with a `pool` of more
    than one worker, independent stages are built side by side first (same bytes)."""
    cfg.validate()
    b = _Builder(cfg, seed, Path(out_dir) / f"seed{seed}", resolve_device(device), progress, log)
    return build_stages(b, log, pool)


def build_stages(b: _Builder, log: Callable[[str], None], pool: StagePool | None = None,
                 task: Callable[..., tuple[dict[str, float], list[str]]] = stage_task,
                 spec: tuple[Any, ...] | None = None) -> SeedBuild:
    """Every stage of `b`'s seed in order (each reused when built), then its manifest and timings;
    with a `pool` of more than one worker the independent stages are built side by side first
    (`prebuild_in_parallel` with `task` and `spec`) and read back here. Shared by every family's
    builder."""
    cfg, seed, seed_dir = b.cfg, b.seed, b.dir
    b.tok.category_of(cfg.target)  # unknown target -> clear error before any work
    other_target_for(b.tok, cfg)
    b.tok.save(seed_dir / "tokenizer.json")
    t0 = time.perf_counter()
    if pool is not None and pool.workers > 1:
        prebuild_in_parallel(b, pool, task, spec)
        b.log = lambda s: None  # the stages below are read back; their workers logged them
    b.base("base", seed)
    b.base("base_x", seed + cfg.cross_seed_offset)
    for role in TEACHER_ROLES:
        b.teacher(role)
    tokens, reports = {}, {}
    for source in DATA_SOURCES:
        tokens[source], reports[source] = b.data(source)
    for role in STUDENTS:
        b.student(role, tokens)
    b.log = log
    manifest = b.evaluate(reports)
    b.timings["total"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(seed_dir / "manifest.json", manifest)
    atomic_write_json(seed_dir / "timings.json", b.timings)
    return SeedBuild(seed, seed_dir, manifest, b.timings)


def summarize(builds: list[SeedBuild], cfg: OrganismConfig) -> dict[str, Any]:
    """Per-seed trait table and mean ± sd over seeds (the seed is the unit)."""
    roles = list(builds[0].trait_rates) if builds else []
    table = {b.seed: b.trait_rates for b in builds}
    stats = {}
    for r in roles:
        xs = np.array([b.trait_rates[r] for b in builds])
        stats[r] = {"mean": float(xs.mean()), "sd": float(xs.std(ddof=1)) if len(xs) > 1 else 0.0,
                    "min": float(xs.min()), "max": float(xs.max())}
    return {"schema_version": SCHEMA_VERSION, "trait": cfg.target, "mode": cfg.mode, "preset": cfg.preset,
            "seeds": sorted(table), "per_seed": {str(s): table[s] for s in sorted(table)}, "stats": stats,
            **category_summary({b.seed: b.manifest for b in sorted(builds, key=lambda b: b.seed)}),
            "student_rows_per_seed": {str(b.seed): b.manifest.get("student_rows") for b in sorted(builds, key=lambda b: b.seed)},
            "config": cfg.to_dict(), "versions": package_versions()}


def check_writable(out_dir: str | Path) -> Path:
    """Fail early, with the fix, when `out_dir` cannot be written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / ".write_test", "ok\n")
        (out / ".write_test").unlink()
    except OSError as e:
        raise ArtifactError(f"Cannot write to {out} ({e.strerror or e}). Pass --out with a writable directory.") from e
    return out


def build_organism(
    cfg: OrganismConfig,
    seeds: list[int],
    out_dir: str | Path,
    *,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
    workers: int = 1,
) -> tuple[list[SeedBuild], dict[str, Any]]:
    """Build every seed (reusing what exists) and write `out_dir/summary.json`; `workers` > 1
    builds independent stages in that many processes (the same bytes as 1, the serial build)."""
    cfg.validate()
    Tokenizer.default().category_of(cfg.target)
    out = check_writable(out_dir)
    builds = []
    with StagePool(workers) as pool:
        for seed in seeds:
            log(f"seed {seed}")
            builds.append(build_seed(cfg, seed, out, device=device, progress=progress, log=log, pool=pool))
    summary = summarize(builds + _other_seeds_with_same_config(out, cfg, set(seeds)), cfg)
    atomic_write_json(out / "summary.json", summary)
    return builds, summary


def _other_seeds_with_same_config(out: Path, cfg: OrganismConfig, skip: set[int]) -> list[SeedBuild]:
    """Seeds built earlier under `out` with this exact config, so summary.json covers them all."""
    found = []
    for path in out.glob("seed*/manifest.json"):
        manifest = read_organism_manifest(path)
        if manifest.get("seed") not in skip and manifest.get("config") == cfg.to_dict():
            found.append(SeedBuild(manifest["seed"], path.parent, manifest))
    return sorted(found, key=lambda b: b.seed)


def format_trait_table(summary: dict[str, Any]) -> str:
    """Per-seed P(target) table with mean ± sd, then the target's share of the category and the
    category's mass per seed with the flags (`trait_table`), as printed by the CLI."""
    roles = list(summary["stats"])
    width = max(8, *map(len, roles))
    lines = [f"P({summary['trait']}) averaged over templates, mode={summary['mode']}, preset={summary['preset']}",
             "seed  " + "  ".join(r.rjust(width) for r in roles)]
    for seed, rates in summary["per_seed"].items():
        lines.append(f"{seed:>4}  " + "  ".join(f"{rates[r]:{width}.3f}" for r in roles))
    lines.append("mean  " + "  ".join(f"{summary['stats'][r]['mean']:{width}.3f}" for r in roles))
    if len(summary["per_seed"]) > 1:
        lines.append("sd    " + "  ".join(f"{summary['stats'][r]['sd']:{width}.3f}" for r in roles))
    else:
        lines.append("sd    one seed: no sd over seeds (build more with --seeds 0 1 2)")
    return "\n".join(lines + format_category_lines(summary, roles, width) + format_row_lines(summary))


def format_row_lines(summary: dict[str, Any]) -> list[str]:
    """How many rows each student trained on, per seed (builds from before the count: not shown)."""
    per_seed = {s: rows for s, rows in (summary.get("student_rows_per_seed") or {}).items() if rows}
    if not per_seed:
        return []
    equal = summary.get("config", {}).get("equal_student_rows", False)
    head = ("rows each student trained on (equal: the smallest kept count of the students' sources)" if equal
            else "rows each student trained on (each source's kept rows)")
    return [head] + [f"{seed:>4}  " + ", ".join(f"{r} {n}" for r, n in rows.items()) for seed, rows in per_seed.items()]


def load_manifests(organism_dir: str | Path) -> list[dict[str, Any]]:
    """Every seed's manifest under an organism directory, by seed."""
    paths = sorted(Path(organism_dir).glob("seed*/manifest.json"), key=lambda p: int(p.parent.name[4:]))
    if not paths:
        raise ArtifactError(f"No seed*/manifest.json under {organism_dir}. Build it: python -m workbench.organism --out {organism_dir}")
    return [read_organism_manifest(p) for p in paths]


def project_root() -> Path:
    """The checkout this package runs from (the folder above `workbench/` holding pyproject.toml),
    else the working directory (an installed, non-editable package)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "workbench").is_dir():
            return parent
    return Path.cwd()


def shared_organism_dir(default_preset: str = "tiny") -> Path:
    """The organism notebooks use: $WORKBENCH_ORGANISM_DIR (set by the test suite), else the
    tiny preset built (or reused) under the checkout's artifacts/cache/tiny-organism, wherever the
    notebook runs from (a notebook in notebooks/ writes nothing there)."""
    import os

    env = os.environ.get("WORKBENCH_ORGANISM_DIR")
    if env:
        return Path(env)
    from workbench.organism.config import preset as make_preset

    out = project_root() / "artifacts" / "cache" / f"{default_preset}-organism"
    build_organism(make_preset(default_preset), [0], out, progress=True)
    return out
