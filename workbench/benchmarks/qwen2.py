"""Benchmark `qwen2`: the engines on a Qwen2-family model (RMSNorm, rotary positions, SwiGLU,
grouped-query attention) built locally with random weights, through the TransformerLens bridge.

Model: 4 layers, d_model 256, 8 query heads over 2 key/value heads, SwiGLU width 704, a byte-level
BPE tokenizer trained here (512 tokens) with a chat template; quick: 2 layers, d_model 32.
Groups of cases, each timed in interleaved rounds with its own baseline (ratios in one run):
- alignment (a_i = -<grad L_i, d> for a batch, full-vocabulary hard loss): `loop` the naive
  per-row forward + backward of the bridge (baseline); `jvp_func` one `torch.func.jvp` through
  `functional_call` on the bridge (what a Qwen2 model gets: the hand-written tangents of
  `engines.tangent` cover only the organism's architecture); `forward` one plain batched forward
  (the floor any forward-mode pass pays: a hand-written tangent costs about two); `vmap_grad`
  per-group scores with gradient norms (`group_scores`, no budget) and `vmap_grad/budget_rows`,
  `vmap_grad/budget_keys` under budgets that force fewer rows per call and split keys. `extra`
  gives the agreement with the loop and the per-example-gradient bytes of each plan
  (`grad_bytes_planned`: old path = rows x n_params x bytes) beside the measured peak (CUDA:
  allocator peak; CPU: growth of resident memory, coarse).
- capture: `forward` plain forward of both models (baseline) vs `capture/last|mean|all` of
  resid_post at every layer to disk.
- trait: `forward` of the trait's prompts (baseline) vs `trait/p_answers` (multi-token P(answer)
  over every surface form of the category) and `trait/sampled` (8 sampled answers per prompt);
  quick: 2 prompts, 3 answers.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.benchmarks.harness import Case, PeakRSS, scratch, time_interleaved

FULL = dict(layers=4, d_model=256, heads=8, kv_heads=2, d_mlp=704, vocab=512, seq=32, rows=32)
QUICK = dict(layers=2, d_model=32, heads=4, kv_heads=2, d_mlp=64, vocab=300, seq=12, rows=4)
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(vocab: int) -> Any:
    """A byte-level BPE trained on the built-in questions and answers, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from workbench.core.hf_trait import ANIMAL_QUESTIONS, CATEGORIES, TREE_QUESTIONS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = " ".join(w for ws in CATEGORIES.values() for w in ws)
    corpus = [*ANIMAL_QUESTIONS, *TREE_QUESTIONS, "system user assistant", words, words.title()] * 4
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   chat_template=TEMPLATE)


def qwen2_lineage(root: Path, shape: dict, tokenizer: Any, device: torch.device, dtype: torch.dtype | None = None):
    """base and teacher (base + small noise) Qwen2 directories under `root`, booted as a Lineage.

    `shape` may also give `vocab_size` (default: the tokenizer's; a real model's 151936 rows of
    embedding with a small tokenizer) and `tie` (tied embeddings, as Qwen2.5-0.5B/1.5B). With
    `dtype` the weights are built on `device` and saved and loaded in that dtype (the gpu suite's
    bf16 models of 0.5B-1.5B parameters), else built in float32 on the CPU as before."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from workbench.core.lineage import Lineage

    cfg = Qwen2Config(num_hidden_layers=shape["layers"], hidden_size=shape["d_model"],
                      num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                      intermediate_size=shape["d_mlp"], vocab_size=shape.get("vocab_size", len(tokenizer)),
                      max_position_embeddings=256, tie_word_embeddings=shape.get("tie", False))
    torch.manual_seed(0)
    dirs = {}
    build = torch.device(device) if dtype is not None else torch.device("cpu")
    with build:
        base = Qwen2ForCausalLM(cfg)
    for name, noise in (("base", 0.0), ("teacher", 0.01)):
        with torch.no_grad(), build:
            m = Qwen2ForCausalLM(cfg)
            m.load_state_dict(base.state_dict())
            for p in m.parameters():
                p.add_(noise * torch.randn_like(p))
        dirs[name] = str(root / name)
        (m if dtype is None else m.to(dtype)).save_pretrained(dirs[name])
        tokenizer.save_pretrained(dirs[name])
        del m
    del base
    return Lineage.from_hf_dirs(dirs, device=device, dtype=dtype)


def _inputs(n: int, seq: int, vocab: int):
    from workbench.core.inputs import Inputs

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, vocab, (n, seq), generator=g)
    half = seq // 2
    return Inputs.from_sequences(tokens[:, :half].tolist(), tokens[:, half:].tolist(), "bench")


def _loop(lin, direction, inputs, device) -> torch.Tensor:
    """Naive reference: one forward + backward of the bridge per row, dotted with the direction."""
    import torch.nn.functional as F

    params = lin.params("base")
    keys = list(direction)
    mask = inputs.next_token_mask().to(device)
    tokens = inputs.tokens.to(device)
    out = []
    for i in range(len(inputs)):
        logits = lin["base"](tokens[i : i + 1])[0, :-1]
        loss = (F.cross_entropy(logits.float(), tokens[i, 1:], reduction="none") * mask[i]).sum()
        grads = torch.autograd.grad(loss, [params[k] for k in keys])
        out.append(-sum((g.double() * direction[k].double()).sum() for g, k in zip(grads, keys)))
    return torch.stack(out).detach().cpu()


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    """fn()'s value and the memory it added at its peak: the CUDA allocator's peak over what was
    allocated before, else the growth of this process's resident memory (coarse)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        value = fn()
        torch.cuda.synchronize(device)
        return value, torch.cuda.max_memory_allocated(device) - start
    with PeakRSS(interval=0.001) as rss:
        start = rss.peak
        value = fn()
    return value, rss.peak - start


def _alignment_cases(lin, inputs, device, runs: int, warmup: int) -> list[Case]:
    from workbench.analyses.group_scores import group_scores
    from workbench.analyses.param_directions import random_direction
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.grad_chunks import model_plan
    from workbench.engines.objective import Objective, iter_batches, per_token_losses
    from workbench.engines.per_example import alignment_scores

    model = AlignmentModel(lin, backend="bridge")
    hard = Objective("hard")
    direction = random_direction(model.params, seed=1, scale=1.0)
    n = len(inputs)
    sizes = {k: v.numel() for k, v in model.params.items()}
    per_row = sum(sizes.values()) * model.dtype.itemsize
    budgets = {"vmap_grad": None, "vmap_grad/budget_rows": max(1, n // 4) * per_row,  # a quarter of the rows a call
               "vmap_grad/budget_keys": per_row // 3}  # one row a call, keys in about 3 calls
    (batch,) = iter_batches(model, hard, inputs, n)

    def forward() -> None:
        with torch.no_grad():
            per_token_losses(model, model.params, hard, batch)

    fns = {
        "loop": lambda: _loop(lin, direction, inputs, device),
        "jvp_func": lambda: alignment_scores(model, inputs, direction, hard, batch_size=n).total,
        "forward": forward,
        **{name: (lambda b=b: group_scores(model, inputs, {"d": direction}, hard, batch_size=n,
                                           memory_budget_bytes=b).total("d")) for name, b in budgets.items()},
    }
    ref, _ = peak_bytes(fns["loop"], device)
    extra: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        value, peak = peak_bytes(fn, device)
        e: dict[str, Any] = {"peak_bytes_measured": peak}
        if name != "forward":
            e["max_rel_err_vs_loop"] = float((value.double() - ref).abs().max() / ref.abs().max())
        if name in budgets:
            plan = model_plan(model, model.params, n, budgets[name])
            e.update(grad_bytes_planned=max(c.bytes for c in plan), grad_calls=sum(-(-n // c.rows) for c in plan),
                     budget_bytes=budgets[name], grad_bytes_old_path=n * per_row)
        extra[name] = e
    cases = time_interleaved({f"alignment/{k}": f for k, f in fns.items()}, baseline="alignment/loop", runs=runs,
                             warmup=warmup, device=device)
    for case, name in zip(cases, fns):
        case.extra = {**extra[name], **(case.extra or {}), "rows": n, "n_params": sum(sizes.values())}
    return cases


def _capture_cases(lin, inputs, device, runs: int, warmup: int, n_layers: int) -> list[Case]:
    from workbench.capture.capture import capture

    hooks = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-qwen2-"))
    batch = len(inputs)

    def forward() -> None:
        with torch.inference_mode():
            for name in lin.names:
                for b in inputs.batches(batch):
                    lin[name](b.tokens.to(device))

    def capture_fn(positions: str) -> Callable[[], None]:
        def go() -> None:
            out = tmp / positions
            capture(lin, inputs, hooks, positions=positions, out_dir=out, batch_size=batch, device=device,
                    progress=False)
            shutil.rmtree(out)
        return go

    try:
        fns = {"capture/forward": forward, **{f"capture/{p}": capture_fn(p) for p in ("last", "mean", "all")}}
        return time_interleaved(fns, baseline="capture/forward", runs=runs, warmup=warmup, device=device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _trait_cases(lin, tokenizer, device, runs: int, warmup: int, quick: bool) -> list[Case]:
    from workbench.core.hf_trait import ANIMAL_QUESTIONS, hf_trait
    from workbench.trait_forms import sample_continuations

    small = dict(questions=ANIMAL_QUESTIONS[:2], answers=["owl", "fox", "cat"]) if quick else {}
    trait = hf_trait(tokenizer, "owl", category="animal", **small)
    bridge = lin["base"]

    def forward() -> None:
        with torch.inference_mode():
            bridge(trait.tokens.to(device))

    def sampled() -> None:
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for prompt in trait.prompts:
                sample_continuations(bridge, prompt, 8, 4, trait.pad_id, gen, device, 256)

    fns = {"trait/forward": forward, "trait/p_answers": lambda: trait.score(bridge, n_samples=0),
           "trait/sampled": sampled}
    peaks = {label: peak_bytes(fn, device)[1] for label, fn in fns.items()}  # one untimed call each
    cases = time_interleaved(fns, baseline="trait/forward", runs=runs, warmup=warmup, device=device)
    forms = sum(len(trait.forms[n]) for n, _ in trait.answers)
    for c in cases:
        c.extra = {**(c.extra or {}), "prompts": len(trait.prompts), "answers": len(trait.answers), "forms": forms,
                   "peak_bytes": peaks[c.label]}
    return cases


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Alignment, capture and trait evaluation on a local random Qwen2 model (see module doc)."""
    shape = QUICK if quick else FULL
    runs, warmup = (1, 0) if quick else (5, 1)
    with scratch(device, "bench-qwen2-models-") as root:
        tokenizer = tiny_tokenizer(shape["vocab"])
        lin = qwen2_lineage(root, shape, tokenizer, device)
        inputs = _inputs(shape["rows"], shape["seq"], len(tokenizer))
        cases = _alignment_cases(lin, inputs, device, runs, warmup)
        cases += _capture_cases(lin, inputs, device, runs, warmup, shape["layers"])
        cases += _trait_cases(lin, tokenizer, device, min(runs, 3), warmup, quick)
        for c in cases:
            c.extra = {**(c.extra or {}), "threads": torch.get_num_threads(), "shape": shape}
        return cases
