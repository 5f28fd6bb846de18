"""Load a built organism seed: its models as a Lineage, its tokenizer, its Trait and its data.

A seed directory holds `models/{role}.safetensors` (+ `.json` sidecars with role, parent, data
and seed), `tokenizer.json`, `manifest.json` (recipe, target, trait rates) and `data/*.jsonl`.
This is the organism's side of the seam: analyses get the Lineage, the Trait and Inputs, and
never open a seed directory themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.core.errors import ArtifactError, ConfigError, DataError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.io import read_json
from workbench.core.lineage import EXTRA_ROLE, ROLES, Lineage, ModelRecord
from workbench.core.models import load_model, model_meta
from workbench.organism.data_files import verify_data_file
from workbench.core.provenance import SCHEMA_VERSION
from workbench.core.schemas import OrganismManifest, check_version, require_dict, validate
from workbench.organism.tokenizer import Tokenizer
from workbench.organism.trait import organism_trait
from workbench.trait import Trait


def read_manifest(seed_dir: str | os.PathLike) -> dict[str, Any]:
    """The seed's manifest.json (an ArtifactError saying how to build it when missing)."""
    seed_dir = Path(seed_dir)
    if not (seed_dir / "manifest.json").exists():
        raise ArtifactError(f"No organism seed at {seed_dir} (manifest.json missing). Build it with python -m workbench.organism.")
    return read_organism_manifest(seed_dir / "manifest.json")


def read_organism_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A seed's manifest.json, schema-checked (`workbench.core.schemas.OrganismManifest`)."""
    where = str(path)
    manifest = require_dict(read_json(path), where, "organism manifest")
    check_version(manifest, where, SCHEMA_VERSION, what="organism manifest schema")
    validate(OrganismManifest, manifest, where, fix="Rebuild the seed with python -m workbench.organism.")
    return manifest


def load_lineage(
    seed_dir: str | os.PathLike,
    roles: list[str] | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> Lineage:
    """Load `seed_dir/models/{role}.safetensors` (+ `.json`, checksummed) and the tokenizer
    (`Lineage.tokenizer`, None when the seed has no tokenizer.json). A Hugging Face family seed
    (`seed_dir/hf/{role}/`, `workbench.organism.hf_family`) loads through `Lineage.from_hf_dirs`."""
    seed_dir = Path(seed_dir)
    if (seed_dir / "hf").is_dir():
        from workbench.organism.hf_family.load import load_hf_lineage

        return load_hf_lineage(seed_dir, roles, device=device, dtype=dtype)
    model_dir = seed_dir / "models"
    available = sorted(p.stem for p in model_dir.glob("*.json")) if model_dir.is_dir() else []
    if not available:
        raise ArtifactError(
            f"No models in {model_dir}. Build the organism first (python -m workbench.organism) "
            "or point at a seed directory that holds models/{role}.safetensors."
        )
    if roles is None:
        names = [r for r in ROLES if r in available] + [r for r in available if r not in ROLES]
    else:
        for r in roles:
            if r not in available:
                raise unknown_name("organism model", r, available, fix=f"Models present in {model_dir}.")
        names = list(roles)
    models, records = {}, {}
    for name in names:
        path = model_dir / f"{name}.safetensors"
        models[name] = load_model(path, device=device, dtype=dtype)
        m = dict(model_meta(path))
        role = m.pop("role", name if name in ROLES else EXTRA_ROLE)
        records[name] = ModelRecord(
            name=name,
            role=role,
            parent=m.pop("parent", None),
            data=m.pop("data", None),
            seed=m.pop("seed", None),
            meta={"path": f"models/{name}.safetensors", **m},
        )
    tok_path = seed_dir / "tokenizer.json"
    return Lineage(models, records, tokenizer=Tokenizer.load(tok_path) if tok_path.exists() else None)


@dataclass
class OrganismSeed:
    """One built seed, loaded: the models, the tokenizer, the Trait of the seed's target (or
    another target's), the manifest and where the data lies."""

    directory: Path
    lineage: Lineage
    tokenizer: Tokenizer
    trait: Trait
    manifest: dict[str, Any]
    _verified: set[str] = field(default_factory=set, repr=False, compare=False)
    _extra: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False, compare=False)
    weights_cache: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False, compare=False)
    """Clean-keyed CPU weights per role, filled by `workbench.organism.regimes.model_weights`."""

    def data(self, source: str) -> Path:
        """The JSONL rows `source` wrote (e.g. "teacher", "base"), its sha256 and row count checked
        against the manifest the first time (ChecksumError when it was cut or changed)."""
        if source not in self._verified:
            verify_data_file(self.directory, self.manifest, source)
            self._verified.add(source)
        return self.directory / "data" / f"{source}.jsonl"

    def inputs(self, source: str, limit: int | None = None) -> Inputs:
        """The rows `source` wrote as Inputs (padded with the seed's pad id), or, for source
        "prompts", the trait-evaluation prompts of every category (read them at their last position)."""
        from workbench.organism.trait import preference_inputs

        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit={limit!r}: give a whole number of rows of at least 1, or None for every row.")
        if source == "prompts":
            return preference_inputs(self.tokenizer)
        return Inputs.from_jsonl(self.data(source), pad_id=self.tokenizer.pad_id, limit=limit)

    def student_rows(self, role: str = "student") -> int | None:
        """How many rows of its source `role` trained on (the first that many; the build's equal row
        count), or None: every row (a build from before the count was recorded)."""
        rows = (self.manifest.get("student_rows") or {}).get(role)
        return int(rows) if rows is not None else None

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """The number channel (numbers, separator, <eos>) the students' losses renormalise over."""
        return tuple(self.tokenizer.number_channel_ids)

    def recipe(self, overrides: dict[str, Any] | None = None) -> Any:
        """The seed's build recipe (`OrganismConfig`), with `overrides` (e.g. fewer student epochs)."""
        from workbench.organism.config import OrganismConfig

        return OrganismConfig.from_dict({**self.manifest["config"], **(overrides or {})})

    def retrained_student(self, tokens: torch.Tensor, overrides: dict[str, Any] | None = None,
                          progress: bool = False, loss_mask: torch.Tensor | None = None,
                          frozen: tuple[str, ...] = (), teacher: str = "teacher", role: str = "student",
                          exclude_ids: tuple[int, ...] = ()) -> torch.nn.Module:
        """The base distilled from `teacher` on `tokens` with the seed's recipe and the student seed
        of `role` (as the build trained that role). The channel tests' edits: `loss_mask` [n, seq]
        keeps only some supervised positions in the loss (position t predicts token t+1), `frozen`
        names parameter prefixes left untrained, `exclude_ids` (soft labels only) removes tokens
        from the channel both distributions are renormalised over."""
        from workbench.core.models import copy_model
        from workbench.organism.build import STUDENTS, distill_targets, student_seed_of
        from workbench.organism.training import distill_student

        if role not in STUDENTS:
            raise unknown_name("student role", role, STUDENTS)
        cfg = self.recipe(overrides)
        student_seed = student_seed_of(int(self.manifest["seed"]), role)  # the build's seed for `role`
        student = copy_model(self.lineage["base"])
        check_frozen(frozen, list(student.state_dict()))
        if exclude_ids and cfg.mode == "hard":
            raise ConfigError("exclude_ids renormalises soft labels; with hard labels edit the written tokens instead.")
        targets = distill_targets(cfg, self.tokenizer, self.model(teacher), tokens, exclude_ids=tuple(exclude_ids))
        if loss_mask is not None:
            if tuple(loss_mask.shape) != tuple(tokens.shape):
                raise DataError(f"loss_mask is shaped {tuple(loss_mask.shape)}; give one bool per token {tuple(tokens.shape)}.")
            targets.loss_mask = loss_mask[:, targets.positions]
        distill_student(student, targets, cfg, student_seed, progress, frozen=frozen)
        return student

    def model(self, role: str) -> torch.nn.Module:
        """The model of `role`: the lineage's, or read from the seed's folder on first use (same
        device and dtype as the base) and kept."""
        if role in self.lineage:
            return self.lineage[role]
        if role not in self._extra:
            param = next(self.lineage["base"].parameters())
            self._extra[role] = load_lineage(self.directory, [role], device=param.device, dtype=param.dtype)[role]
        return self._extra[role]

    def retrainer(self, overrides: dict[str, Any] | None = None, progress: bool = False,
                  workers: int = 1) -> Callable[[Inputs], torch.nn.Module]:
        """`retrain(kept_rows) -> student`: the base distilled from the teacher on `kept_rows` with
        the seed's own recipe and student seed (what the screening defense retrains). Needs the
        seed's base and teacher in the lineage. `retrain.many(list of kept rows)` retrains each in
        `workers` processes; those read the base and teacher from the seed's folder (same weights)."""
        if self.manifest.get("format") == "hf":  # a Hugging Face family seed: its own retrainer, one at a time
            from workbench.organism.hf_family.retrain import hf_retrainer

            return hf_retrainer(self.directory, self.manifest, self.recipe(overrides), self.tokenizer, progress)

        def retrain(kept: Inputs) -> torch.nn.Module:
            return self.retrained_student(kept.tokens, overrides, progress)

        def many(kept_rows: list[Inputs]) -> list[torch.nn.Module]:
            return self.retrain_many([{"tokens": kept.tokens} for kept in kept_rows], overrides, progress, workers)

        retrain.many = many  # type: ignore[attr-defined]
        return retrain

    def retrain_many(self, jobs: list[dict[str, Any]], overrides: dict[str, Any] | None = None, progress: bool = False,
                     workers: int = 1) -> list[torch.nn.Module]:
        """Each job's student (`retrained_student`'s keyword arguments: tokens, and optionally
        loss_mask, frozen, teacher, role, exclude_ids), in order; with `workers` > 1 in that many
        processes, which read the base and the job's teacher from the seed's folder."""
        from workbench.core.models import copy_model

        if workers <= 1 or len(jobs) <= 1:
            return [self.retrained_student(overrides=overrides, progress=progress, **job) for job in jobs]
        from workbench.organism.parallel import StagePool

        base = self.lineage["base"]
        param = next(base.parameters())
        spec = (str(self.directory), overrides, str(param.device), str(param.dtype).removeprefix("torch."))
        with StagePool(workers) as pool:
            weights = pool.run(retrained_weights, [(*spec, job) for job in jobs],
                               [f"retrain {i}" for i in range(len(jobs))])
        students = []
        for w in weights:
            student = copy_model(base)
            student.load_state_dict(w, strict=True)
            students.append(student)
        return students


def check_frozen(frozen: tuple[str, ...], keys: list[str]) -> None:
    """Refuse frozen prefixes that match no parameter (a typo would silently train everything) or
    that freeze every parameter (nothing left to train)."""
    unknown = [p for p in frozen if not any(k.startswith(p) for k in keys)]
    if unknown:
        tops = sorted({".".join(k.split(".")[:2]) + "." for k in keys})
        raise ConfigError(f"Frozen prefixes {unknown} match no parameter; parameter names start with {tops}.")
    if frozen and all(k.startswith(tuple(frozen)) for k in keys):
        raise ConfigError("The frozen prefixes cover every parameter: nothing is left to train. Freeze fewer.")


def seed_target(manifest: dict[str, Any], default: str | None = None) -> str | None:
    """The target the seed was built with (its recipe's), else `default`."""
    return manifest.get("config", {}).get("target", manifest.get("trait", default))


def load_seed(
    seed_dir: str | os.PathLike,
    roles: list[str] | None = None,
    *,
    target: str | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> OrganismSeed:
    """Load a seed's models (`roles`, default all) with its tokenizer and the Trait of `target`
    (default: the seed's own target)."""
    seed_dir = Path(seed_dir)
    manifest = read_manifest(seed_dir)
    lineage = load_lineage(seed_dir, roles, device=device, dtype=dtype)
    if lineage.tokenizer is None:
        raise ArtifactError(f"No tokenizer.json in {seed_dir}; rebuild the organism (python -m workbench.organism).")
    name = target or seed_target(manifest)
    if name is None:
        raise ArtifactError(f"{seed_dir / 'manifest.json'} names no target; pass target=.")
    return OrganismSeed(seed_dir, lineage, lineage.tokenizer, organism_trait(lineage.tokenizer, name), manifest)


def retrained_weights(seed_dir: str, overrides: dict[str, Any] | None, device: str, dtype: str,
                      job: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A retrain in a worker process: the seed's base and the job's teacher read from `seed_dir`,
    the student distilled as `OrganismSeed.retrained_student(**job)` does; its state dict."""
    seed = load_seed(seed_dir, roles=["base", job.get("teacher", "teacher")], device=device, dtype=getattr(torch, dtype))
    student = seed.retrained_student(overrides=overrides, **job)
    return {k: v.detach().cpu() for k, v in student.state_dict().items()}
