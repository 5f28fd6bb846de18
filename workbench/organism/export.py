"""Export an organism seed as Hugging Face directories: the "second door" into the same models.

`export_seed(seed_dir, out_dir)` writes, for every model of the seed (base, teacher, student,
control and any other role present), a GPT-2-format directory `out_dir/{role}/` (config.json +
model.safetensors through `save_pretrained`, the tokenizer and a chat template beside them), so
`python -m workbench.probe --base OUT/base --teacher OUT/teacher ...` reads the very models that
`--organism` reads. Beside them:

- `data/*.jsonl`: the seed's distillation rows, token ids unchanged (the same ids mean the same
  words: the tokenizer is the organism's vocabulary as a `tokenizers` WordLevel model).
- `trait.json`: the organism's Trait as token ids (prompts, answers, pad id; `--trait`), because the
  job's built-in questions ("Name your favorite animal using only one word.") are not words of
  this vocabulary. The chat template renders a user message as `<bos> CONTENT`, so the HF
  `hf_trait(tokenizer, target, questions=ORGANISM_QUESTIONS, answers=...)` gives the same prompts.
- `prompts.jsonl`: the contrastive prompts the organism path builds for trait directions (`--prompts`).
- `distillation.json`: the loss the students were trained with and the number channel it is
  renormalised over (`--loss`, `--channel-ids`), which the alignment section scores.
- `export.json`: what was exported from where, and the flags that run the job on it (`job`, `job_args`).

The mapping from the native TransformerLens model (LayerNorm, learned positions, separate q/k/v,
`nn.Linear` weights, an untied unembedding with a zero bias buffer) to GPT-2: Conv1D weights are
the transposes; q, k, v join into `c_attn` (weights along the output axis, biases concatenated);
`lm_head` is the unembedding (`tie_word_embeddings=False`); `layer_norm_epsilon` is the native
eps; the activation keeps its exact variant (`gelu` = erf GELU in both, `gelu_new` = tanh). A
model GPT-2 cannot express (RMSNorm, rotary, gated MLP, grouped-query attention, d_head x n_heads
!= d_model, a non-zero unembedding bias) is refused with an ExportError naming the field.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.core.errors import ConfigError
from workbench.core.io import atomic_write_json, atomic_write_text
from workbench.organism.corpus import PREFERENCE_TEMPLATES
from workbench.organism.data_files import verify_data_file
from workbench.organism.load import load_lineage, read_manifest, seed_target
from workbench.organism.tokenizer import BOS, EOS, PAD, UNK, Tokenizer
from workbench.organism.trait import organism_trait
from workbench.trait import Trait

GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}
"""Native act_fn -> GPT-2 activation_function computing the same function (HF `gelu` is the erf
GELU, as TransformerLens' native `gelu`; `gelu_new` is the tanh approximation in both)."""

CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %} {{ m['content'] }}{% endfor %}"
"""Renders a conversation as `<bos> CONTENT ...` (roles are not words of the organism's
vocabulary; the generation prompt adds nothing: the model answers right after the question)."""


class ExportError(ConfigError):
    """A model the GPT-2 format cannot express, or an export that cannot be written."""


@dataclass(frozen=True)
class ExportedSeed:
    """Where an export put things (`models` name -> directory)."""

    out_dir: Path
    models: dict[str, Path]
    data: list[Path]
    trait: Path
    prompts: Path
    distillation: Path


# --------------------------------------------------------------------------- weights


def gpt2_config(native: dict[str, Any], eps: float, tok: Tokenizer) -> Any:
    """The GPT2Config of a native organism model; an ExportError for what GPT-2 cannot express."""
    from transformers import GPT2Config

    def refuse(field: str, value: Any, why: str) -> ExportError:
        return ExportError(f"Cannot export a model with {field}={value!r} as GPT-2: {why}. Export only models "
                           "with LayerNorm, learned positions, gelu/gelu_new/relu and d_head x n_heads = d_model.")

    if native.get("normalization_type", "LN") != "LN":
        raise refuse("normalization_type", native.get("normalization_type"), "GPT-2 has LayerNorm with weight and bias")
    if native.get("positional_embedding_type", "standard") != "standard":
        raise refuse("positional_embedding_type", native.get("positional_embedding_type"), "GPT-2 has learned positions")
    act = native.get("act_fn", "gelu")
    if act not in GPT2_ACTIVATIONS:
        raise refuse("act_fn", act, f"GPT-2 activations that match exactly are {sorted(GPT2_ACTIVATIONS)}")
    if native.get("gated_mlp"):
        raise refuse("gated_mlp", True, "GPT-2's MLP is not gated")
    n_kv = native.get("n_key_value_heads")
    if n_kv not in (None, native["n_heads"]):
        raise refuse("n_key_value_heads", n_kv, "GPT-2 has one key/value head per query head")
    if native["d_head"] * native["n_heads"] != native["d_model"]:
        raise refuse("d_head", native["d_head"], f"GPT-2's head width is d_model / n_heads = "
                     f"{native['d_model']} / {native['n_heads']}")
    if native["d_vocab"] != len(tok):
        raise ExportError(f"The model's d_vocab={native['d_vocab']} differs from the seed tokenizer's {len(tok)} "
                          "words; this is not a model of this seed. Rebuild the organism.")
    return GPT2Config(
        vocab_size=native["d_vocab"], n_positions=native["n_ctx"], n_embd=native["d_model"],
        n_layer=native["n_layers"], n_head=native["n_heads"], n_inner=native["d_mlp"],
        activation_function=GPT2_ACTIVATIONS[act], layer_norm_epsilon=float(eps),
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
    )


def gpt2_state_dict(native_sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """GPT-2 `GPT2LMHeadModel` weights from a native model's clean state dict (`blocks.0.attn.q.weight`
    ...): Conv1D weights transposed, q/k/v joined into c_attn, the unembedding as an untied lm_head.
    Every native tensor is used once; an unknown key or a non-zero unembedding bias is an ExportError."""
    sd = dict(native_sd)
    bias = sd.pop("unembed.bias", None)
    if bias is not None and bool(bias.abs().max() > 0):
        raise ExportError(f"The model's unembed.bias is non-zero (max |b| = {bias.abs().max().item():.3g}); GPT-2's "
                          "lm_head has no bias. Export only models whose unembedding bias is zero.")
    out = {"transformer.wte.weight": sd.pop("embed.weight"), "transformer.wpe.weight": sd.pop("pos_embed.weight"),
           "transformer.ln_f.weight": sd.pop("ln_final.weight"), "transformer.ln_f.bias": sd.pop("ln_final.bias"),
           "lm_head.weight": sd.pop("unembed.weight")}
    for i in range(n_layers):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        q, k, v = (sd.pop(f"{b}attn.{x}.weight") for x in "qkv")
        out[h + "attn.c_attn.weight"] = torch.cat([q.T, k.T, v.T], dim=1)
        out[h + "attn.c_attn.bias"] = torch.cat([sd.pop(f"{b}attn.{x}.bias") for x in "qkv"])
        out[h + "attn.c_proj.weight"] = sd.pop(f"{b}attn.o.weight").T
        out[h + "attn.c_proj.bias"] = sd.pop(f"{b}attn.o.bias")
        out[h + "mlp.c_fc.weight"] = sd.pop(f"{b}mlp.in.weight").T
        out[h + "mlp.c_fc.bias"] = sd.pop(f"{b}mlp.in.bias")
        out[h + "mlp.c_proj.weight"] = sd.pop(f"{b}mlp.out.weight").T
        out[h + "mlp.c_proj.bias"] = sd.pop(f"{b}mlp.out.bias")
        for ln, hf in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[f"{h}{hf}.weight"] = sd.pop(f"{b}{ln}.weight")
            out[f"{h}{hf}.bias"] = sd.pop(f"{b}{ln}.bias")
    if sd:
        raise ExportError(f"The model has parameters GPT-2 has no place for: {sorted(sd)[:5]}. Export only "
                          "organism models (LayerNorm, learned positions, a plain MLP).")
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


# --------------------------------------------------------------------------- tokenizer, trait, data


def hf_tokenizer(tok: Tokenizer) -> Any:
    """The organism's vocabulary as a `tokenizers` WordLevel tokenizer (token id = the organism's id,
    words split on whitespace) with its special tokens and the chat template."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.WordLevel({w: i for i, w in enumerate(tok.vocab)}, unk_token=UNK))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                 chat_template=CHAT_TEMPLATE, model_max_length=10**6)
    for i, w in enumerate(tok.vocab):  # the ids are the organism's, or nothing downstream means the same
        if hf.convert_tokens_to_ids(w) != i:
            raise ExportError(f"The exported tokenizer maps {w!r} to {hf.convert_tokens_to_ids(w)}, not {i}.")
    return hf


def organism_questions(category: str) -> list[str]:
    """The organism's preference templates of `category` as question texts (what a user message
    holds for the exported chat template to render the organism's prompts)."""
    return [t.format(c=category) for t in PREFERENCE_TEMPLATES]


def trait_spec(trait: Trait) -> dict[str, Any]:
    """A Trait as JSON-ready token ids (`workbench.core.trait_spec.read_trait_spec` reads it)."""
    from workbench.core.trait_spec import trait_to_dict

    return trait_to_dict(trait)


def _contrast_rows(trait: Trait) -> str:
    from workbench.capture.cache import contrast_prompts

    c = contrast_prompts(trait)
    lines = []
    for i in range(len(c.labels)):
        n = int(c.last[i]) + 1
        lines.append(json.dumps({"tokens": c.tokens[i, :n].tolist(), "label": int(c.labels[i]),
                                 "question_len": int(c.question_len[i]) if c.question_len is not None else n}))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- export


def export_seed(seed_dir: str | os.PathLike, out_dir: str | os.PathLike, roles: list[str] | None = None) -> ExportedSeed:
    """Write the seed's models (all roles, or `roles`) as GPT-2 Hugging Face directories with the
    tokenizer and chat template, its data, trait, contrastive prompts and distillation loss."""
    from transformers import GPT2LMHeadModel

    seed_dir, out = Path(seed_dir), Path(out_dir)
    manifest = read_manifest(seed_dir)
    lineage = load_lineage(seed_dir, roles)
    tok = lineage.tokenizer
    if tok is None:
        raise ExportError(f"No tokenizer.json in {seed_dir}; rebuild the organism (python -m workbench.organism).")
    if out.resolve() == seed_dir.resolve() or seed_dir.resolve() in out.resolve().parents:
        raise ExportError(f"out_dir {out} is inside the seed directory {seed_dir}; export somewhere else.")
    out.mkdir(parents=True, exist_ok=True)
    hf_tok = hf_tokenizer(tok)
    models: dict[str, Path] = {}
    for name in lineage.names:
        bridge = lineage[name]
        native = dict(getattr(bridge, "workbench_native_config"))
        config = gpt2_config(native, bridge.cfg.eps, tok)
        model = GPT2LMHeadModel(config)
        state = gpt2_state_dict(dict(bridge.state_dict()), native["n_layers"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]  # causal-mask buffers
        if missing or unexpected:
            raise ExportError(f"GPT-2 weights of {name!r} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}.")
        target = out / name
        model.eval().save_pretrained(target, safe_serialization=True)
        hf_tok.save_pretrained(target)
        rec = lineage.records[name]
        atomic_write_json(target / "workbench_model.json", {"role": rec.role, "parent": rec.parent, "data": rec.data,
                                                            "seed": rec.seed, "source": f"models/{name}.safetensors"})
        models[name] = target
    data_out = out / "data"
    data_out.mkdir(exist_ok=True)
    data = []
    for p in sorted((seed_dir / "data").glob("*.jsonl")):
        verify_data_file(seed_dir, manifest, p.stem)  # never export a cut or changed file
        shutil.copyfile(p, data_out / p.name)
        data.append(data_out / p.name)
    target_name = seed_target(manifest)
    if target_name is None:
        raise ExportError(f"{seed_dir / 'manifest.json'} names no target; rebuild the organism.")
    trait = organism_trait(tok, target_name)
    atomic_write_json(out / "trait.json", trait_spec(trait))
    atomic_write_text(out / "prompts.jsonl", _contrast_rows(trait))
    loss = manifest.get("mode", manifest.get("config", {}).get("mode", "soft"))
    atomic_write_json(out / "distillation.json", {"loss": loss, "channel_ids": list(tok.number_channel_ids)})
    flags = [*(a for r in ("base", "teacher", "student", "control") if r in models for a in (f"--{r}", str(models[r]))),
             "--data", str(data_out / "teacher.jsonl"), str(data_out / "base.jsonl"), "--trait", str(out / "trait.json"),
             "--prompts", str(out / "prompts.jsonl"), "--loss", loss, "--channel-ids", str(out / "distillation.json")]
    atomic_write_json(out / "export.json", {
        "seed_dir": str(seed_dir), "seed": manifest.get("seed"), "target": target_name, "loss": loss,
        "models": {n: n for n in models}, "data": [p.name for p in data], "format": "gpt2",
        "job": "python -m workbench.probe " + shlex.join(flags), "job_args": flags})
    return ExportedSeed(out, models, data, out / "trait.json", out / "prompts.jsonl", out / "distillation.json")
