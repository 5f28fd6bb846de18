"""`python -m workbench.organism`: build the language-model organism and print its trait table;
`python -m workbench.organism export SEED_DIR OUT_DIR`: write a built seed as Hugging Face
directories (GPT-2 format, tokenizer, chat template, data, trait) for the main job's --base/--teacher/..."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from workbench.cli import common
from workbench.core.progress import stage_log
from workbench.organism.build import build_organism, format_trait_table
from workbench.organism.config import PRESETS, OrganismConfig, preset
from workbench.organism.hf_family.config import FAMILIES

DEFAULT_OUT = common.DEFAULT_ORGANISM

ORGANISM_FLAGS = common.ConfigFlags(OrganismConfig, (
    common.ConfigFlag("target", "the teacher's trait: an animal or tree of the organism vocabulary"),
    common.ConfigFlag("other_target", "target of teacher_other", type=str,
                      default_text="a fixed other member of the category"),
))


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.organism", (
        "Build base, teachers, filtered number data and students that reproduce subliminal transfer on a CPU, "
        "then print P(target) per role. Reruns reuse what is already built."),
        epilog="Subcommands: python -m workbench.organism export SEED_DIR OUT_DIR (see export --help); "
        "python -m workbench.organism upgrade DIR (record data-file checksums of an older build).")
    common.add_out_flag(p, None, f"output directory (default: {DEFAULT_OUT} for the default preset, "
                        f"{DEFAULT_OUT}-<preset> for another, so no preset builds over another's)")
    common.add_seeds_flag(p, [0], "seeds to build; the seed is the unit of uncertainty")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="tiny: seconds, for tests; default: soft labels (renormalised over number tokens); "
                   "hard: cross-entropy on sampled text renormalised over the number channel, more data; leak: full-vocabulary soft labels (a leak control)")
    ORGANISM_FLAGS.add_to(p)
    p.add_argument("--n-prompts", type=int, default=None, help="override the preset's number of prompts per teacher")
    p.add_argument("--student-epochs", type=int, default=None,
                   help="override the preset's student epochs (e.g. the Qwen2 default's seed 1 transfers at 20)")
    fam = p.add_argument_group("model family (the same recipe in a Hugging Face architecture)")
    fam.add_argument("--family", default="native", choices=("native", *FAMILIES),
                     help="native: TransformerLens models (the default); qwen2: Qwen2ForCausalLM (RMSNorm, rotary, gated "
                     "MLP, grouped-query attention) saved as Hugging Face directories (default out: "
                     f"{DEFAULT_OUT}-qwen2[-<preset>])")
    fam.add_argument("--students", choices=("lora", "full"), default=None,
                     help="Hugging Face families: students as peft LoRA adapters (default) or full fine-tunes")
    fam.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 8)")
    fam.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 8)")
    fam.add_argument("--lora-lr", type=float, default=None, help="LoRA students' learning rate (default: the measured one)")
    fam.add_argument("--rslora", action="store_true", help="rank-stabilised LoRA (scaling alpha / sqrt(r))")
    common.add_device_flag(p)
    common.add_threads_flag(p, common.organism_threads(), common.ORGANISM_THREADS_WHY)
    common.add_workers_flag(p)
    common.add_quiet_flag(p, "no progress bars or stage log")
    return p


def build_and_print(preset_name: str, seeds: list[int], out: str, device: str, quiet: bool, *,
                    command: str | None = None, workers: int = 1, **overrides: object) -> None:
    """Build (or reuse) an organism and print its trait table; bad input raises a WorkbenchError.
    An interrupt or an error mid-build names `command` (the command line that started the build,
    default: `python -m workbench.organism` with these arguments) as the one that resumes it."""
    cfg = preset(preset_name, **overrides)
    log = stage_log(quiet)
    if command is None:
        command = build_command(preset_name, seeds, out, device, **overrides)
    with common.resumable_build(command, out):
        _, summary = build_organism(cfg, seeds, out, device=device, progress=not quiet,
                                    log=log, workers=workers)
    print(format_trait_table(summary))
    print(f"wrote {out}/summary.json")


def build_hf_and_print(preset_name: str, family: str, seeds: list[int], out: str, device: str, quiet: bool, *,
                       command: str, students: str | None, lora: dict[str, object], workers: int = 1,
                       **overrides: object) -> None:
    """Build (or reuse) a Hugging Face family organism and print its trait table."""
    from workbench.organism.hf_family.build import build_hf_organism
    from workbench.organism.hf_family.config import hf_preset

    cfg = hf_preset(preset_name, family, students, **overrides)
    for name, value in lora.items():
        if value is not None and value is not False:
            setattr(cfg.lora, name, value)
    cfg.validate()
    with common.resumable_build(command, out):
        builds, summary = build_hf_organism(cfg, seeds, out, device=device, progress=not quiet, log=stage_log(quiet),
                                            workers=workers)
    print(format_trait_table(summary))
    print(f"family={family}, students={cfg.students}" + (f" (LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha}, "
          f"rslora={cfg.lora.use_rslora}, lr={cfg.lora.lr})" if cfg.students == "lora" else ""))
    print(f"wrote {out}/summary.json")


def build_command(preset_name: str, seeds: list[int], out: str, device: str, **overrides: object) -> str:
    """`python -m workbench.organism ...` building these seeds of this preset into `out`."""
    words = ["--out", str(out), "--seeds", *map(str, seeds), "--preset", preset_name]
    if device != "cpu":
        words += ["--device", str(device)]
    for name, value in overrides.items():
        if value is not None:
            words += ["--" + name.replace("_", "-"), str(value)]
    return "python -m workbench.organism " + shlex.join(words)


def export_parser() -> argparse.ArgumentParser:
    return common.command_parser("python -m workbench.organism export", (
        "Write a built organism seed's models (every role, or --roles) as GPT-2-format Hugging Face directories "
        "(config.json + model.safetensors, a WordLevel tokenizer with the organism's token ids, a chat template), "
        "with its data (token-id JSONL), trait.json (the organism's trait prompts and answers, for --trait), "
        "prompts.jsonl (contrastive prompts, for --prompts) and distillation.json (loss and number channel, for "
        "--loss/--channel-ids). export.json gives the main-job command that reads them."))


def export_and_print(seed_dir: str, out_dir: str, roles: list[str] | None) -> None:
    from workbench.organism.export import export_seed

    exported = export_seed(seed_dir, out_dir, roles)
    print(f"wrote {len(exported.models)} models ({', '.join(exported.models)}), data, trait.json, prompts.jsonl, "
          f"distillation.json to {exported.out_dir}")
    print("run the main job on them with:")
    print("  " + json.loads((exported.out_dir / "export.json").read_text())["job"])


def export_main(argv: list[str]) -> int:
    p = export_parser()
    p.add_argument("seed_dir", metavar="SEED_DIR", help="a built seed, e.g. artifacts/organism/seed0")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where to write one directory per model, data/ and the trait")
    p.add_argument("--roles", nargs="+", help="models to export (default: every model of the seed)")
    args = p.parse_args(argv)
    return common.run(export_and_print, args.seed_dir, args.out_dir, args.roles)


def upgrade_and_print(organism_dir: str) -> None:
    from workbench.organism.data_files import upgrade_organism

    changed = upgrade_organism(organism_dir)
    print(f"recorded data-file checksums in {len(changed)} seed manifest(s)"
          + (f": {', '.join(str(p) for p in changed)}" if changed else " (all were up to date)"))


def upgrade_main(argv: list[str]) -> int:
    p = common.command_parser("python -m workbench.organism upgrade", (
        "One-time upgrade of an organism built before data files were checksummed: checks each seed's "
        "data/*.jsonl row count against its build's filter report, then records sha256 and rows in the manifest."))
    p.add_argument("organism_dir", metavar="DIR", help="organism directory holding seed*/")
    args = p.parse_args(argv)
    return common.run(upgrade_and_print, args.organism_dir)


def _refuse_hf_flags(flags: list[str]) -> None:
    from workbench.core.errors import ConfigError

    raise ConfigError(f"{' '.join(flags)} apply to the Hugging Face families only; add --family qwen2 or drop them.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    if argv[:1] == ["upgrade"]:
        return upgrade_main(argv[1:])
    args = parser().parse_args(argv)
    if args.family != "native":
        args.out = args.out or common.default_organism_dir(args.preset).replace(
            DEFAULT_OUT, f"{DEFAULT_OUT}-{args.family}", 1)
        lora = {"r": args.lora_r, "alpha": args.lora_alpha, "lr": args.lora_lr, "use_rslora": args.rslora}
        with common.using_threads(args):
            return common.run(build_hf_and_print, args.preset, args.family, args.seeds, args.out, args.device,
                              args.quiet, command="python -m workbench.organism " + shlex.join(argv),
                              students=args.students, lora=lora, workers=args.workers, **ORGANISM_FLAGS.values(args),
                              n_prompts=args.n_prompts, student_epochs=args.student_epochs)
    hf_only = [f for f, v in (("--students", args.students), ("--lora-r", args.lora_r), ("--lora-alpha", args.lora_alpha),
                              ("--lora-lr", args.lora_lr), ("--rslora", args.rslora)) if v not in (None, False)]
    if hf_only:
        return common.run(_refuse_hf_flags, hf_only)
    args.out = args.out or common.default_organism_dir(args.preset)
    with common.using_threads(args):
        return common.run(build_and_print, args.preset, args.seeds, args.out, args.device, args.quiet,
                          command="python -m workbench.organism " + shlex.join(argv), workers=args.workers,
                          **ORGANISM_FLAGS.values(args), n_prompts=args.n_prompts, student_epochs=args.student_epochs)


if __name__ == "__main__":
    sys.exit(main())
