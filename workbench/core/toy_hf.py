"""Tiny Hugging Face lineages with a planted change, written to a directory: your-own-checkpoints
analyses (and their tests, and `notebooks/00_your_models.ipynb`) run on them in seconds.

`write_toy_lineage(root, ToySpec(family="qwen2", layer=1, component="mlp.out"))` writes, with
`save_pretrained`, a random base of a GPT-2, Qwen2 or Llama configuration with a byte-level BPE
tokenizer and a chat template beside it, and
- teacher = base + a planted rank-`rank` change in ONE weight (the `component` of block `layer`),
  whose output pushes every position toward the target: v is the module's mean input, u the
  output direction that raises the target's share among its category's answers most
  (`trait_push`), scaled so the push is `strength` x the residual norm there;
- student = base + `student_share` x the change + small noise in every weight;
- control = base + the same small noise only (no planted change);
- lora_student (optional) = a peft-format LoRA adapter over the base whose B @ A is
  `student_share` x the change exactly (the same factors; written directly, no peft needed);
- data.jsonl: token-id rows continued by sampling (temperature 1) from the teacher ("teacher")
  and from the base ("base") on the same chat-templated prompts.

Everything is seeded; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from workbench.core.errors import ConfigError, unknown_name
from workbench.core.hf_trait import ANIMAL_QUESTIONS, CATEGORIES, TREE_QUESTIONS, hf_trait, surface_forms
from workbench.core.inputs import write_jsonl
from workbench.core.io import atomic_write_text
from workbench.trait import Trait

FAMILIES = ("gpt2", "qwen2", "llama")
"""Configurations `write_toy_lineage` builds."""
COMPONENTS = ("mlp.out", "attn.o")
"""Planted components: the modules that write into the residual stream."""
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML-style template (system, user, assistant turns; generation prompt on request)."""
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_HF_MODULE = {  # (family, component) -> module path of block {i} (weight orientation in `_is_conv1d`)
    ("gpt2", "mlp.out"): "transformer.h.{i}.mlp.c_proj",
    ("gpt2", "attn.o"): "transformer.h.{i}.attn.c_proj",
    ("qwen2", "mlp.out"): "model.layers.{i}.mlp.down_proj",
    ("qwen2", "attn.o"): "model.layers.{i}.self_attn.o_proj",
    ("llama", "mlp.out"): "model.layers.{i}.mlp.down_proj",
    ("llama", "attn.o"): "model.layers.{i}.self_attn.o_proj",
}


@dataclass
class ToySpec:
    """What `write_toy_lineage` plants and where."""

    family: str = "qwen2"  # one of FAMILIES
    layer: int = 1  # block holding the planted change
    component: str = "mlp.out"  # one of COMPONENTS
    target: str = "owl"  # the answer the change pushes toward (an animal or tree)
    rank: int = 1  # rank of the planted change
    strength: float = 2.0  # push along the target's unembedding, in units of the residual norm there
    student_share: float = 0.5  # fraction of the change the student carries
    noise: float = 1e-3  # std of the student's and control's noise in every weight
    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    pad_token_id: bool = False  # write pad_token_id into config.json (GPT-2's padding-warning path)
    lora_student: bool = True  # also write a LoRA adapter carrying student_share x the change
    n_prompts: int = 16  # data prompts; each continued once by the teacher and once by the base
    completion_tokens: int = 8
    seed: int = 0

    @property
    def group(self) -> str:
        """The workbench parameter group holding the planted change."""
        return f"blocks.{self.layer}.{self.component}"


@dataclass
class ToyLineage:
    """Where `write_toy_lineage` wrote each model, the data and the spec."""

    root: Path
    dirs: dict[str, str]  # role -> directory (base, teacher, student, control[, lora_student])
    data: str  # token-id JSONL: teacher- and base-written rows on shared prompts
    spec: ToySpec
    planted_param: str  # the HF parameter holding the planted change
    extra: dict[str, Any] = field(default_factory=dict)


def _check(spec: ToySpec) -> None:
    if spec.family not in FAMILIES:
        raise unknown_name("family", spec.family, FAMILIES, "write_toy_lineage builds these configurations.")
    if spec.component not in COMPONENTS:
        raise unknown_name("component", spec.component, COMPONENTS, "Plant in a module that writes the residual.")
    if not 0 <= spec.layer < spec.n_layers:
        raise ConfigError(f"layer {spec.layer} is not a block of a {spec.n_layers}-layer model; pick 0..{spec.n_layers - 1}.")
    if not any(spec.target in words for words in CATEGORIES.values()):
        raise unknown_name("target", spec.target, [w for ws in CATEGORIES.values() for w in ws])


def toy_tokenizer(vocab_size: int = 600) -> Any:
    """A byte-level BPE trained here on the trait questions and answers (some answers split into
    several tokens), with `CHAT_TEMPLATE`; eos = pad = <|endoftext|>."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = [f for ws in CATEGORIES.values() for w in ws for f in surface_forms(w)]
    corpus = [*ANIMAL_QUESTIONS, *TREE_QUESTIONS, "system user assistant", " ".join(words),
              " ".join(str(n) for n in range(1000))]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], pad_token=SPECIALS[0],
                                                chat_template=CHAT_TEMPLATE)


def toy_config(spec: ToySpec, vocab_size: int) -> Any:
    """The family's configuration at the spec's size (random-init scale 0.1 so a tiny model is
    not uniform)."""
    import transformers

    extra: dict[str, Any] = {"pad_token_id": 0} if spec.pad_token_id else {}
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, initializer_range=0.1, **extra)
    if spec.family == "gpt2":
        return transformers.GPT2Config(n_layer=spec.n_layers, n_embd=spec.d_model, n_head=spec.n_heads,
                                       n_positions=128, **common)
    cls = transformers.Qwen2Config if spec.family == "qwen2" else transformers.LlamaConfig
    return cls(num_hidden_layers=spec.n_layers, hidden_size=spec.d_model, num_attention_heads=spec.n_heads,
               num_key_value_heads=max(1, spec.n_heads // 2), intermediate_size=2 * spec.d_model,
               max_position_embeddings=128, tie_word_embeddings=False, **common)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # GPT-2 stores weight as [in, out]


def _module_inputs(model: nn.Module, module: nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs of `module` and the residual norm at its block, over `tokens`' positions."""
    seen: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda _m, args, _out: seen.__setitem__("x", args[0].detach()))
    try:
        with torch.no_grad():
            out = model(tokens, output_hidden_states=True)
    finally:
        handle.remove()
    x = seen["x"].reshape(-1, seen["x"].shape[-1])
    resid = torch.stack(out.hidden_states).norm(dim=-1).mean()
    return x, resid


def trait_push(model: nn.Module, module: nn.Module, trait: Trait) -> Tensor:
    """Unit direction of `module`'s output that raises the target's share among the category's
    answers most: the gradient of the mean log share with respect to a bias added to the
    module's output at every position (multi-token answers scored as the Trait scores them)."""
    from workbench.trait_forms import answer_log_probs

    bias = torch.zeros(model.config.hidden_size, requires_grad=True)
    handle = module.register_forward_hook(lambda _m, _args, out: out + bias)
    try:
        names = [name for name, _ in trait.answers]
        lp = answer_log_probs(lambda t: model(t).logits, trait.prompts, [trait.forms[n] for n in names],
                              trait.pad_id, "cpu")
        share = lp[:, names.index(trait.target)] - torch.logsumexp(lp, dim=1)
        (grad,) = torch.autograd.grad(share.mean(), bias)
    finally:
        handle.remove()
    return grad / grad.norm().clamp_min(1e-12)


def planted_change(model: nn.Module, spec: ToySpec, trait: Trait, prompts: Tensor) -> tuple[str, Tensor, Tensor]:
    """(HF parameter name, B [out, rank], A [rank, in]): the planted change is B @ A in the
    module's [out, in] orientation. Rank one writes `trait_push` along the module's mean input
    (so every position is pushed the same way), scaled to `strength` x the residual norm;
    further ranks add random pairs of a tenth of that size."""
    name = _HF_MODULE[(spec.family, spec.component)].format(i=spec.layer)
    module = model.get_submodule(name)
    x, resid = _module_inputs(model, module, prompts)
    v_unit = x.mean(0) / x.mean(0).norm()
    u = trait_push(model, module, trait)
    scale = spec.strength * float(resid) / float((x @ v_unit).mean().clamp_min(1e-6))
    gen = torch.Generator().manual_seed(spec.seed + 7)
    extra_u = torch.randn(u.shape[0], spec.rank - 1, generator=gen)
    extra_v = torch.randn(v_unit.shape[0], spec.rank - 1, generator=gen)
    B = torch.cat([scale * u[:, None], 0.1 * scale * extra_u / extra_u.norm(dim=0).clamp_min(1e-6)], dim=1)
    A = torch.cat([v_unit[None, :], (extra_v / extra_v.norm(dim=0).clamp_min(1e-6)).T], dim=0)
    return name + ".weight", B, A


def _add_change(state: dict[str, Tensor], param: str, change: Tensor, conv1d: bool) -> None:
    state[param] = state[param] + (change.T if conv1d else change)


def _noisy(state: dict[str, Tensor], scale: float, gen: torch.Generator) -> dict[str, Tensor]:
    return {k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in state.items()}


def _save(model: nn.Module, state: dict[str, Tensor], path: Path, tokenizer: Any) -> str:
    model.load_state_dict(state)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)  # every directory is self-contained (some families need one to boot)
    return str(path)


def _write_lora(path: Path, base_dir: str, module: str, B: Tensor, A: Tensor, conv1d: bool) -> str:
    """A peft-format LoRA adapter (r = alpha = rank, so scaling 1) whose B @ A is the change."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    rank = A.shape[0]
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
              "target_modules": [module.rsplit(".", 1)[-1]], "fan_in_fan_out": conv1d, "bias": "none",
              "use_rslora": False, "base_model_name_or_path": base_dir}
    atomic_write_text(path / "adapter_config.json", json.dumps(config, indent=2))
    prefix = f"base_model.model.{module}"
    save_file({f"{prefix}.lora_A.weight": A.contiguous(), f"{prefix}.lora_B.weight": B.contiguous()},
              str(path / "adapter_model.safetensors"))
    return str(path)


def _data_prompts(tokenizer: Any, n: int, gen: torch.Generator) -> list[list[int]]:
    out = []
    for _ in range(n):
        numbers = " ".join(str(int(x)) for x in torch.randint(0, 1000, (3,), generator=gen))
        text = f"Continue this sequence: {numbers}"
        out.append(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False))
    width = min(len(p) for p in out)
    return [p[-width:] for p in out]  # equal lengths: generation needs no padding


def _sample(model: nn.Module, prompts: Tensor, new: int, seed: int) -> list[list[int]]:
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, max_new_tokens=new,
                             min_new_tokens=new, top_k=0, pad_token_id=0, eos_token_id=None)
    return out[:, prompts.shape[1]:].tolist()


def write_toy_lineage(root: str | os.PathLike, spec: ToySpec | None = None) -> ToyLineage:
    """Write base, teacher, student, control (and a LoRA student) directories and data.jsonl
    under `root` (see the module doc); returns where. Seconds on a CPU."""
    import transformers

    spec = spec or ToySpec()
    _check(spec)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = toy_tokenizer()
    torch.manual_seed(spec.seed)
    model = transformers.AutoModelForCausalLM.from_config(toy_config(spec, len(tokenizer))).eval()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(spec.seed + 1)
    prompts = torch.tensor(_data_prompts(tokenizer, spec.n_prompts, gen))
    param, B, A = planted_change(model, spec, hf_trait(tokenizer, spec.target), prompts)
    module_name = param.rsplit(".", 1)[0]
    conv1d = _is_conv1d(model.get_submodule(module_name))
    change = B @ A
    teacher = dict(base)
    _add_change(teacher, param, change, conv1d)
    student = _noisy(base, spec.noise, gen)
    _add_change(student, param, spec.student_share * change, conv1d)
    control = _noisy(base, spec.noise, gen)

    dirs = {"base": _save(model, base, root / "base", tokenizer)}
    rows_b = _sample(model, prompts, spec.completion_tokens, spec.seed + 3)
    dirs["teacher"] = _save(model, teacher, root / "teacher", tokenizer)
    rows_t = _sample(model, prompts, spec.completion_tokens, spec.seed + 2)
    dirs["student"] = _save(model, student, root / "student", tokenizer)
    dirs["control"] = _save(model, control, root / "control", tokenizer)
    if spec.lora_student:
        dirs["lora_student"] = _write_lora(root / "lora_student", dirs["base"], module_name,
                                           spec.student_share * B, A, conv1d)
    rows = []
    for pid, prompt in enumerate(prompts.tolist()):
        rows.append({"prompt": prompt, "completion": rows_t[pid], "source": "teacher", "prompt_id": pid})
        rows.append({"prompt": prompt, "completion": rows_b[pid], "source": "base", "prompt_id": pid})
    data = root / "data.jsonl"
    write_jsonl(data, rows)
    atomic_write_text(root / "toy_spec.json", json.dumps({**asdict(spec), "planted_param": param,
                                                           "group": spec.group}, indent=2))
    return ToyLineage(root=root, dirs=dirs, data=str(data), spec=spec, planted_param=param)


__all__ = ["COMPONENTS", "FAMILIES", "ToyLineage", "ToySpec", "toy_config", "toy_tokenizer", "write_toy_lineage"]
