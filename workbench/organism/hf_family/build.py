"""Build a Hugging Face family organism seed: the native organism's stages (same corpus, trait,
data sampling, filter, losses and stage keys) on `transformers` models, trained with the
organism's plain loops, saved as standard Hugging Face directories.

One seed writes `DIR/seed{N}/`:
    tokenizer.json                      (the organism's vocabulary, as the native seed's)
    hf/{role}/                          (base, base_x, teachers: config.json + model.safetensors;
                                         students: the same, or a peft LoRA adapter directory;
                                         each with the tokenizer, chat template and
                                         workbench_model.json: role, parent, data, seed, stage key)
    data/{source}.jsonl                 (filtered number sequences, as the native seed's)
    manifest.json                       (the native manifest's fields, plus `family` (shape,
                                         student regime, LoRA), `hf_files` (sha256 of every weight
                                         file) and `student_losses` (per-epoch training loss))
`workbench.organism.load_seed` loads it through `Lineage.from_hf_dirs` (adapters merged, their
deltas exact).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.io import atomic_write_json, read_json, sha256_file
from workbench.core.models import resolve_device
from workbench.core.provenance import SCHEMA_VERSION, package_versions
from workbench.organism.build import (
    _BASE_FIELDS,
    _STUDENT_FIELDS,
    _TEACHER_FIELDS,
    DATA_SOURCES,
    ROLES,
    STUDENT_SOURCES,
    STUDENTS,
    TEACHER_ROLES,
    SeedBuild,
    _Builder,
    _stage_key,
    build_stages,
    check_writable,
    distill_targets,
    other_target_for,
    run_stage,
    scarce_rows_error,
    student_key_extras,
    student_rows,
    student_seed_of,
    summarize,
    training_rows,
)
from workbench.organism.corpus import completion_length
from workbench.organism.data_files import DATA_KEY, data_record
from workbench.organism.export import hf_tokenizer
from workbench.organism.hf_family.config import HFOrganismConfig
from workbench.organism.hf_family.models import (
    FROZEN_IN_TEACHERS,
    HFDecoder,
    HFTrainable,
    device_of,
    load_hf,
    new_qwen2,
    save_hf,
    with_lora,
)
from workbench.organism.load import read_organism_manifest
from workbench.organism.parallel import StagePool
from workbench.organism.sampling import decode_continuations
from workbench.organism.training import train_base, train_student, train_teacher
from workbench.organism.trait import category_traits, organism_trait
from workbench.trait import trait_matrix

META_FILE = "workbench_model.json"
HF_DIR = "hf"


class HFBuilder(_Builder):
    """The native builder's stages with Hugging Face models (see the module docstring)."""

    def __init__(self, hcfg: HFOrganismConfig, seed: int, seed_dir: Path, device: torch.device, progress: bool,
                 log: Callable[[str], None]):
        super().__init__(hcfg.recipe, seed, seed_dir, device, progress, log)
        self.hcfg = hcfg
        self.hf_tok = hf_tokenizer(self.tok)
        self.losses: dict[str, list[float]] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def role_dir(self, role: str) -> Path:
        return self.dir / HF_DIR / role

    def _is_lora(self, role: str) -> bool:
        return role in STUDENTS and self.hcfg.students == "lora"

    # --- caching ---------------------------------------------------------------------------
    def _cached_model(self, role: str, key: str) -> nn.Module | None:
        meta_path = self.role_dir(role) / META_FILE
        if not meta_path.exists() or read_json(meta_path).get("stage_key") != key:
            return None
        meta = read_json(meta_path)
        self.meta[role] = meta
        self.losses.update({role: meta["losses"]} if "losses" in meta else {})
        if self._is_lora(role):
            from peft import PeftModel

            return PeftModel.from_pretrained(copy.deepcopy(self.models[meta["parent"]]), self.role_dir(role))
        return load_hf(self.role_dir(role)).to(self.device)

    def _save(self, role: str, model: Any, meta: dict[str, Any]) -> None:
        if role in self.losses:
            meta = {**meta, "losses": self.losses[role]}
        shutil.rmtree(self.role_dir(role), ignore_errors=True)  # no stale files of another regime (adapter vs full)
        save_hf(model, self.role_dir(role), self.hf_tok)
        atomic_write_json(self.role_dir(role) / META_FILE, meta)
        self.meta[role] = meta

    def sample(self, source: str, prompts: torch.Tensor) -> torch.Tensor:
        cfg, model = self.cfg, self.models[source].eval()
        return decode_continuations(
            HFDecoder(model), device_of(model), prompts, completion_length(cfg.completion_numbers),
            temperature=cfg.temperature, seed=self.seed * 100 + DATA_SOURCES.index(source), progress=self.progress,
            desc=f"sampling {source}")

    # --- stages ----------------------------------------------------------------------------
    def _family_key(self) -> dict[str, Any]:
        return {"family": self.hcfg.family, "shape": self.hcfg.to_dict()["shape"]}

    def base(self, role: str, seed: int) -> nn.Module:
        key = _stage_key(self.cfg, _BASE_FIELDS, seed=seed, **self._family_key())
        init = lambda: new_qwen2(self.hcfg.shape, self.tok, seed).to(self.device)  # noqa: E731
        train = lambda m: train_base(HFTrainable(m), self.tok, self.cfg, seed, self.progress)  # noqa: E731
        return self.model_stage(role, key, None, None, train, init)

    def teacher(self, role: str) -> nn.Module:
        cfg, tok = self.cfg, self.tok
        category = tok.category_of(cfg.target)
        answers = {"teacher": [tok.token_id(cfg.target)], "teacher_neutral": None,
                   "teacher_other": [tok.token_id(other_target_for(tok, cfg))]}[role]
        key = _stage_key(cfg, _TEACHER_FIELDS, self.keys["base"], role=role)
        init = lambda: copy.deepcopy(self.models["base"])  # noqa: E731
        train = lambda m: train_teacher(HFTrainable(m, FROZEN_IN_TEACHERS), tok, cfg, category, answers,  # noqa: E731
                                        self.seed + 1 + TEACHER_ROLES.index(role), self.progress)
        return self.model_stage(role, key, "base", None, train, init)

    def student(self, role: str, tokens: dict[str, torch.Tensor]) -> nn.Module:
        cfg, hcfg = self.cfg, self.hcfg
        parent, source = STUDENTS[role]
        loss = student_key_extras(cfg)
        lora = hcfg.students == "lora"
        regime = {"students": hcfg.students, **({"lora": hcfg.to_dict()["lora"], "lora_init": "seeded"} if lora else {})}
        seqs = training_rows(cfg, role, tokens)
        key = _stage_key(cfg, _STUDENT_FIELDS, self.keys[parent], self.keys[f"data/{source}"], role=role,
                         rows=len(seqs), **loss, **regime)

        def train(model: nn.Module) -> None:
            if (scarce := scarce_rows_error(self.dir, cfg, role, tokens)) is not None:
                raise scarce
            teacher = self.models[source].eval()
            targets = distill_targets(cfg, self.tok, HFTrainable(teacher), seqs)  # type: ignore[arg-type]
            self.losses[role] = train_student(HFTrainable(model), targets, cfg, student_seed_of(self.seed, role),
                                              self.progress, lr=hcfg.lora.lr if lora else None)

        def init() -> nn.Module:  # the adapter seeded as its training, so a worker's student is the serial build's
            parent_model = self.models[parent]
            return with_lora(parent_model, hcfg.lora, seed=student_seed_of(self.seed, role)) if lora else copy.deepcopy(parent_model)

        return self.model_stage(role, key, parent, f"data/{source}.jsonl", train, init)

    def evaluate(self, reports: dict[str, Any]) -> dict[str, Any]:
        cfg, tok = self.cfg, self.tok
        t0 = time.perf_counter()
        other = other_target_for(tok, cfg)
        trait, other_trait = organism_trait(tok, cfg.target), organism_trait(tok, other)
        fns = {r: HFTrainable(self.models[r].eval()) for r in ROLES}
        with torch.inference_mode():
            scores = {r: trait.score(fns[r], cfg.eval_samples, seed=self.seed) for r in ROLES}
            other_scores = {r: other_trait.score(fns[r], cfg.eval_samples, seed=self.seed) for r in ROLES}
            matrix = trait_matrix(fns, category_traits(tok, trait.category))
        self.timings["evaluate"] = round(time.perf_counter() - t0, 2)
        files = {r: {p.name: sha256_file(p) for p in sorted(self.role_dir(r).glob("*.safetensors"))} for r in ROLES}
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "language_organism",
            "format": "hf",
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
            "lineage": {r: {k: self.meta[r].get(k) for k in ("role", "parent", "data", "seed")} for r in ROLES},
            "model_sha256": {r: next(iter(f.values())) for r, f in files.items()},
            "hf_files": files,
            "student_losses": {r: self.losses.get(r) for r in STUDENTS},
            DATA_KEY: {s: data_record(self.dir, s) for s in sorted(reports)},
            "config": cfg.to_dict(),
            "family": self.hcfg.to_dict(),
            "versions": package_versions(),
        }


def hf_stage_task(recipe: dict[str, Any], family: dict[str, Any], seed: int, seed_dir: str, device: str, kind: str,
                  name: str) -> tuple[dict[str, float], list[str]]:
    """Build one stage of a Hugging Face family seed in a worker process (see `run_stage`)."""
    lines: list[str] = []
    b = HFBuilder(HFOrganismConfig.from_dict(recipe, family), seed, Path(seed_dir), resolve_device(device), False,
                  lines.append)
    return run_stage(b, kind, name, lines)


def build_hf_seed(hcfg: HFOrganismConfig, seed: int, out_dir: str | Path, *, device: str | torch.device | None = "cpu",
                  progress: bool = True, log: Callable[[str], None] = lambda s: None,
                  pool: StagePool | None = None) -> SeedBuild:
    """Build (or reuse) every role of one seed of a Hugging Face family under `out_dir/seed{seed}`;
    with a `pool` of more than one worker, independent stages are built side by side first (same bytes)."""
    hcfg.validate()
    seed_dir = Path(out_dir) / f"seed{seed}"
    b = HFBuilder(hcfg, seed, seed_dir, resolve_device(device), progress, log)
    spec = (hcfg.recipe.to_dict(), hcfg.to_dict(), seed, str(seed_dir), str(b.device))
    return build_stages(b, log, pool, hf_stage_task, spec)


def build_hf_organism(hcfg: HFOrganismConfig, seeds: list[int], out_dir: str | Path, *,
                      device: str | torch.device | None = "cpu", progress: bool = True,
                      log: Callable[[str], None] = lambda s: None,
                      workers: int = 1) -> tuple[list[SeedBuild], dict[str, Any]]:
    """Build every seed (reusing what exists) and write `out_dir/summary.json` (the native summary
    of every seed built here with this recipe and family, plus the family's fields); `workers` > 1
    builds independent stages in that many processes (the same bytes as 1, the serial build)."""
    hcfg.validate()
    out = check_writable(out_dir)
    builds = []
    with StagePool(workers) as pool:
        for seed in seeds:
            log(f"seed {seed} ({hcfg.family}, {hcfg.students} students)")
            builds.append(build_hf_seed(hcfg, seed, out, device=device, progress=progress, log=log, pool=pool))
    for path in out.glob("seed*/manifest.json"):  # earlier seeds of this very recipe and family
        manifest = read_organism_manifest(path)
        if (manifest.get("seed") not in seeds and manifest.get("config") == hcfg.recipe.to_dict()
                and manifest.get("family") == hcfg.to_dict()):
            builds.append(SeedBuild(manifest["seed"], path.parent, manifest))
    summary = {**summarize(sorted(builds, key=lambda b: b.seed), hcfg.recipe), "family": hcfg.to_dict()}
    atomic_write_json(out / "summary.json", summary)
    return builds, summary
