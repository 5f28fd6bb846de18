"""Hugging Face directories as a command's source (the main job and `python -m workbench.align_rows`):
the role flags (`add_hf_flags`), the prompted-teacher checks (`hf_roles`), and `load_hf_source`,
which builds (lineage, rows, trait) from them. The base directory's own tokenizer, loaded offline
(never remote code), is turned into a `Trait` by `hf_trait` (chat-templated questions, multi-token
answers with their surface forms) and used for text rows; the context length its config.json
gives bounds them before any weight loads."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.core.errors import ConfigError, DataError
from workbench.core.hf_tokenizers import TOKENIZER_FILES, load_tokenizer
from workbench.core.hf_trait import hf_trait
from workbench.core.inputs import Inputs, distillation_inputs
from workbench.core.lineage import Lineage
from workbench.trait import Trait

HF_ROLES = ("base", "teacher", "student", "control")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def context_length(directory: str | Path) -> int | None:
    """The context length config.json gives (`n_positions`, `max_position_embeddings` or `n_ctx`;
    None when it gives none), read before any weights load so that long text rows fail fast."""
    from workbench.core.hf_config import read_hf_config

    config = read_hf_config(str(directory), Path(directory))
    nested = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for src in (config, nested):
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            if isinstance(src.get(key), int):
                return int(src[key])
    return None


def hf_dir_trait(base_dir: str | Path, target: str, system_prompt: str | None = None) -> Trait:
    """The trait `target` (e.g. owl) asked with the base directory's tokenizer and chat template;
    `system_prompt` first in every question when given."""
    return hf_trait(load_tokenizer(base_dir), target, system_prompt=system_prompt)


def add_hf_flags(group: Any) -> None:
    """--base/--teacher/--student/--control HF_DIR, --teacher-system-prompt, --system-prompt,
    --trait and --channel-ids (the command adds --data and --target: their defaults differ)."""
    group.add_argument("--system-prompt", metavar="TEXT", help="system prompt of the trait's questions with Hugging "
                       "Face directories (default: none)")
    for role in HF_ROLES:
        group.add_argument(f"--{role}", metavar="HF_DIR", help=f"local Hugging Face checkpoint directory of the {role} "
                           "(instead of --organism)")
    group.add_argument("--teacher-system-prompt", metavar="TEXT|@FILE", help="instead of --teacher: the teacher is the "
                       "--base model under this system prompt (text, or @FILE / a file path to read it from); what "
                       "needs teacher weights (delta_T) is left out, the log-prob parts use the prompted base")
    group.add_argument("--trait", metavar="JSON", help="with Hugging Face directories: the trait as token ids (prompts "
                       "and answers, e.g. trait.json of python -m workbench.organism export) instead of --target's "
                       "questions")
    group.add_argument("--channel-ids", metavar="JSON", help="with Hugging Face directories: token ids the students' "
                       'loss renormalises over (a JSON list, or {"channel_ids": [...]} as distillation.json of an export)')


def hf_roles(args: argparse.Namespace) -> tuple[dict[str, str], str | None]:
    """(role -> directory, the teacher's system prompt or None) from the flags, checked: a teacher
    named twice, or a prompted teacher without --base, is a ConfigError."""
    from workbench.core.prompted import read_system_prompt

    hf = {role: getattr(args, role) for role in HF_ROLES if getattr(args, role)}
    given = args.teacher_system_prompt
    teacher_prompt = read_system_prompt(given) if given is not None else None
    if teacher_prompt is not None:
        if "teacher" in hf:
            raise ConfigError("--teacher and --teacher-system-prompt both name the teacher; pass one: a checkpoint "
                              "directory, or the system prompt that makes the --base model the teacher.")
        if "base" not in hf:
            raise ConfigError("--teacher-system-prompt makes the --base model the teacher: pass --base HF_DIR too.")
    return hf, teacher_prompt


@dataclass
class HfSource:
    """Hugging Face directories loaded with their rows: the lineage (a prompted teacher added), the
    distillation rows, the trait (None without --trait or --target) and where they came from."""

    lineage: Lineage
    inputs: Inputs
    trait: Trait | None
    channel_ids: tuple[int, ...] | None
    data_paths: list[Path]
    origin: str


def load_hf_source(args: argparse.Namespace, hf: dict[str, str], teacher_prompt: str | None, device: torch.device,
                   dtype: torch.dtype, log: Callable[[str], None], *, max_rows: int, device_map: Any = None,
                   max_memory: dict[str, int] | None = None) -> HfSource:
    """--base, --teacher, ... and their --data rows (at most `max_rows` per source, on prompts both
    continued), placed by `device_map` / `max_memory` when given (see cli/placement). Everything
    that can be checked without weights (directories, data, trait, system prompt, row lengths)
    fails before any weight loads."""
    from workbench.core.hf import check_hf_dir
    from workbench.core.prompted import system_prompt_prefix
    from workbench.core.trait_spec import read_channel_ids, read_trait_spec

    for role in ("base", "teacher"):
        if role not in hf and not (role == "teacher" and teacher_prompt is not None):
            raise ConfigError(f"--{role} is missing: with Hugging Face directories the command needs at least --base "
                              "and --teacher (or --teacher-system-prompt).")
    for role, path in hf.items():
        check_hf_dir(role, path)
    if not args.data:
        raise ConfigError("--data JSONL is required with Hugging Face directories (teacher- and base-written rows).")
    data_paths = [Path(p) for p in args.data]
    for p in data_paths:
        if not p.is_file():
            raise DataError(f"No data file at {p}. Fix the --data path.")
    if args.trait:
        trait: Trait | None = read_trait_spec(args.trait)
    else:
        trait = hf_dir_trait(hf["base"], args.target, args.system_prompt) if args.target else None
    channel_ids = read_channel_ids(args.channel_ids) if args.channel_ids else None  # both before loading weights
    has_tokenizer = any((Path(hf["base"]) / f).is_file() for f in TOKENIZER_FILES)
    needs_tokenizer = teacher_prompt is not None or trait is not None and not args.trait
    tokenizer = load_tokenizer(hf["base"]) if needs_tokenizer or has_tokenizer else None
    prefix = system_prompt_prefix(tokenizer, teacher_prompt) if teacher_prompt is not None else None  # fail early
    # text rows take the base's tokenizer and chat template; too-long rows fail before loading weights
    inputs = distillation_inputs(data_paths, max_rows, tokenizer=tokenizer, n_ctx=context_length(hf["base"]))
    lineage = Lineage.from_hf_dirs(hf, device=device, dtype=dtype, device_map=device_map, max_memory=max_memory)
    lineage.tokenizer = tokenizer
    if prefix is not None:
        lineage.add_prompted("teacher", teacher_prompt, base="base")
        log(f"teacher: the base under a system prompt ({len(prefix.teacher_prefix)} prefix tokens replace "
            f"{len(prefix.base_prefix)}); what needs teacher weights is left out")
    origin = "Hugging Face directories: " + ", ".join(f"{role} {path}" for role, path in hf.items())
    if teacher_prompt is not None:
        origin += f"; teacher: the base under the system prompt {teacher_prompt!r}"
    return HfSource(lineage, inputs, trait, channel_ids, data_paths, origin)


__all__ = ["DTYPES", "HF_ROLES", "TOKENIZER_FILES", "HfSource", "add_hf_flags", "context_length", "hf_dir_trait",
           "hf_roles", "load_hf_source", "load_tokenizer"]
