"""Load a Hugging Face family seed (`seed_dir/hf/{role}/`) as a Lineage through
`Lineage.from_hf_dirs`: weight files checked against the manifest's sha256 first, LoRA students
merged into their parents (their deltas exact), the organism's tokenizer as the lineage's."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from workbench.core.errors import ArtifactError, ChecksumError, unknown_name
from workbench.core.io import read_json, sha256_file
from workbench.core.lineage import ROLES, Lineage
from workbench.core.lora import is_adapter_dir
from workbench.organism.hf_family.build import HF_DIR, META_FILE
from workbench.organism.tokenizer import Tokenizer


def verify_hf_files(seed_dir: Path, manifest: dict, names: list[str]) -> None:
    """Every weight file of `names` has the sha256 the manifest recorded (ChecksumError naming the file)."""
    recorded = manifest.get("hf_files")
    if not isinstance(recorded, dict):
        raise ArtifactError(f"{seed_dir / 'manifest.json'} records no hf_files checksums; rebuild the seed "
                            "(python -m workbench.organism --family qwen2).")
    for name in names:
        for file, sha in recorded.get(name, {}).items():
            path = seed_dir / HF_DIR / name / file
            if not path.is_file() or sha256_file(path) != sha:
                raise ChecksumError(f"{path} is missing or changed since the build (manifest sha256 {sha[:12]}...). "
                                    f"Rebuild the seed: python -m workbench.organism --family qwen2 --out {seed_dir.parent}.")


def load_hf_lineage(
    seed_dir: str | os.PathLike,
    roles: list[str] | None = None,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> Lineage:
    """The seed's models (`roles`, default all) as a Lineage; a LoRA student's parent is loaded
    with it even when not asked for (the adapter merges into it)."""
    from workbench.organism.load import read_manifest

    seed_dir = Path(seed_dir)
    manifest = read_manifest(seed_dir)
    root = seed_dir / HF_DIR
    available = sorted(p.parent.name for p in root.glob(f"*/{META_FILE}"))
    if not available:
        raise ArtifactError(f"No models in {root}. Build the seed: python -m workbench.organism --family qwen2.")
    for r in roles or []:
        if r not in available:
            raise unknown_name("organism model", r, available, fix=f"Models present in {root}.")
    names = list(roles) if roles is not None else [r for r in ROLES if r in available] + [
        r for r in available if r not in ROLES]
    meta = {n: read_json(root / n / META_FILE) for n in available}
    for n in list(names):  # an adapter needs its parent's weights
        parent = meta[n].get("parent")
        if is_adapter_dir(root / n) and parent not in names:
            names.insert(0, parent)
    verify_hf_files(seed_dir, manifest, names)
    dirs = {n: root / n for n in names}
    tok_path = seed_dir / "tokenizer.json"
    return Lineage.from_hf_dirs(
        dirs, parents={n: meta[n].get("parent") if meta[n].get("parent") in dirs else None for n in names},
        data={n: meta[n].get("data") for n in names}, device=device, dtype=dtype,
        tokenizer=Tokenizer.load(tok_path) if tok_path.exists() else None)
