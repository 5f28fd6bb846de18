"""Benchmark `gpu` (`python -m workbench.bench --suite gpu --device cuda`): the prepared check a
developer with a lent GPU runs in a few minutes. Qwen2-family models at the shapes of Qwen2.5-0.5B and
Qwen2.5-1.5B (24 x 896 and 28 x 1536, 14 and 12 query heads over 2 key/value heads, SwiGLU 4864
and 8960, 151936 tied embedding rows), built on the GPU with random weights and loaded in bf16
(`qwen2.qwen2_lineage`: base and teacher = base + noise; a small byte-level tokenizer, so token ids
stay below 512). Per size, groups of cases timed in interleaved rounds, each a ratio against its
baseline in the same run and an absolute median:

- `SIZE/capture/*`: `hf_sdpa` the plain Hugging Face forward of the same rows (SDPA attention,
  the baseline) vs `bridge_forward` (the TransformerBridge, eager attention) and
  `capture/last|mean|all` (resid_post of every layer of the base, written to disk);
- `SIZE/alignment/*`: a_i = -<grad L_i, d> of a batch, full-vocabulary hard loss: `loop` one
  forward + backward of the bridge per row (the naive baseline), `func` one `torch.func.jvp`
  through the bridge (what a Hugging Face model gets), `forward` one batched forward (the floor);
  `rows_per_s` in extra, agreement with the loop (`max_rel_err_vs_loop`);
- `native-SIZE/alignment/*`: the same at the same width and depth for a workbench-native model
  (LayerNorm, GELU), where the hand-written forward mode applies: `loop` (per-row backward of the
  fused functional model), `explicit` (`engines.tangent`), `func` (`torch.func.jvp`);
- `SIZE/trait/*`: the trait's prompts forward (baseline), P(answer) over every surface form,
  sampled answers (`qwen2._trait_cases`).

Every case records in extra the peak memory one call added (`peak_bytes`: CUDA allocator peak over
what was allocated before; on a CPU the growth of resident memory, coarse), the parameters, the
dtype and the load average. `--quick` is the reduced mode: one tiny shape in float32 on the CPU
(seconds), run by the test suite so the script cannot rot. A group that fails is reported on
stderr and the others still run.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.benchmarks.harness import Case, scratch, time_interleaved
from workbench.benchmarks.qwen2 import _inputs, _loop, _trait_cases, peak_bytes, qwen2_lineage, tiny_tokenizer
from workbench.core.errors import ConfigError

_QWEN = dict(kv_heads=2, vocab=512, vocab_size=151936, tie=True, seq=64, rows=64, align_rows=16)
SIZES: dict[str, dict[str, Any]] = {
    "0.5b": dict(layers=24, d_model=896, heads=14, d_mlp=4864, **_QWEN),  # Qwen2.5-0.5B's config.json
    "1.5b": dict(layers=28, d_model=1536, heads=12, d_mlp=8960, **_QWEN),  # Qwen2.5-1.5B's config.json
}
REDUCED: dict[str, dict[str, Any]] = {
    "tiny": dict(layers=2, d_model=32, heads=4, kv_heads=2, d_mlp=64, vocab=300, vocab_size=300, tie=True, seq=12,
                 rows=8, align_rows=4),
}
GROUPS = ("capture", "alignment", "trait", "native")
CASES = {
    "capture": ("hf_sdpa", "bridge_forward", "capture/last", "capture/mean", "capture/all"),
    "alignment": ("loop", "func", "forward"),
    "native": ("loop", "explicit", "func"),
    "trait": ("forward", "p_answers", "sampled"),
}
"""The case names of each group (labels are SIZE/GROUP/NAME, native-SIZE/alignment/NAME for native)."""


def expected_labels(sizes: dict[str, dict[str, Any]]) -> list[str]:
    """Every label a run over `sizes` writes (what the suite's test checks)."""
    out = []
    for size in sizes:
        for group in GROUPS:
            prefix = f"native-{size}/alignment" if group == "native" else f"{size}/{group}"
            out += [f"{prefix}/{name}" for name in CASES[group]]
    return out


def _measured(fns: dict[str, Callable[[], Any]], baseline: str, device: torch.device, runs: int, warmup: int,
              ref: Callable[[Any], dict[str, Any]] | None = None) -> list[Case]:
    """One untimed call per case (its peak memory and, with `ref`, its agreement), then interleaved rounds."""
    extra: dict[str, dict[str, Any]] = {}
    for label, fn in fns.items():
        value, peak = peak_bytes(fn, device)
        extra[label] = {"peak_bytes": peak, **(ref(value) if ref is not None and label != baseline else {})}
    cases = time_interleaved(fns, baseline=baseline, runs=runs, warmup=warmup, device=device)
    for c in cases:
        c.extra = {**extra[c.label], **(c.extra or {})}
    return cases


def _capture_group(lin: Any, hf_dir: str, inputs: Any, device: torch.device, dtype: torch.dtype, runs: int,
                   warmup: int, n_layers: int, prefix: str) -> list[Case]:
    from transformers import AutoModelForCausalLM

    from workbench.capture.capture import capture

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    batch = len(inputs)
    tmp = Path(hf_dir).parent / "captures"

    def hf_forward() -> None:
        with torch.inference_mode():
            for b in inputs.batches(batch):
                hf(input_ids=b.tokens.to(device), attention_mask=b.attention_mask.to(device))

    def bridge_forward() -> None:
        with torch.inference_mode():
            for b in inputs.batches(batch):
                lin["base"](b.tokens.to(device))

    def capture_fn(positions: str) -> Callable[[], None]:
        def go() -> None:
            out = tmp / positions
            capture(lin, inputs, hooks, positions=positions, roles=["base"], out_dir=out, batch_size=batch,
                    device=device, progress=False)
            shutil.rmtree(out)
        return go

    fns = {f"{prefix}/hf_sdpa": hf_forward, f"{prefix}/bridge_forward": bridge_forward,
           **{f"{prefix}/capture/{p}": capture_fn(p) for p in ("last", "mean", "all")}}
    try:
        return _measured(fns, f"{prefix}/hf_sdpa", device, runs, warmup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _agreement(ref: torch.Tensor) -> Callable[[Any], dict[str, Any]]:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, torch.Tensor):
            return {}
        return {"max_rel_err_vs_loop": float((value.double().cpu() - ref).abs().max() / ref.abs().max())}
    return check


def _alignment_group(lin: Any, inputs: Any, device: torch.device, runs: int, warmup: int, prefix: str) -> list[Case]:
    from workbench.analyses.param_directions import random_direction
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective, iter_batches, per_token_losses
    from workbench.engines.per_example import alignment_scores

    model = AlignmentModel(lin, backend="bridge")
    hard = Objective("hard")
    direction = random_direction(model.params, seed=1, scale=1.0)
    n = len(inputs)
    (batch,) = iter_batches(model, hard, inputs, n)

    def forward() -> None:
        with torch.no_grad():
            per_token_losses(model, model.params, hard, batch)

    ref = _loop(lin, direction, inputs, device)
    fns = {f"{prefix}/loop": lambda: _loop(lin, direction, inputs, device),
           f"{prefix}/func": lambda: alignment_scores(model, inputs, direction, hard, batch_size=n, method="func").total,
           f"{prefix}/forward": forward}
    return _measured(fns, f"{prefix}/loop", device, runs, warmup, _agreement(ref))


def _native_group(shape: dict[str, Any], inputs: Any, device: torch.device, dtype: torch.dtype, runs: int,
                  warmup: int, prefix: str) -> list[Case]:
    from workbench.analyses.param_directions import random_direction
    from workbench.benchmarks.gradients import _loop as fused_loop
    from workbench.core.lineage import Lineage
    from workbench.core.models import boot_native
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective
    from workbench.engines.per_example import alignment_scores

    d_head = shape["d_model"] // shape["heads"]
    config = dict(n_layers=shape["layers"], d_model=shape["d_model"], n_heads=shape["heads"], d_head=d_head,
                  d_mlp=shape["d_mlp"], n_ctx=256, act_fn="gelu", normalization_type="LN",
                  d_vocab=shape["vocab_size"], seed=0)
    lin = Lineage.from_models({"base": boot_native(config, device=device, dtype=dtype)})
    model = AlignmentModel(lin)
    hard = Objective("hard")
    direction = random_direction(model.params, seed=1, scale=1.0)
    n = len(inputs)
    ref = fused_loop(lin, direction, inputs).double()
    fns = {f"{prefix}/loop": lambda: fused_loop(lin, direction, inputs),
           f"{prefix}/explicit": lambda: alignment_scores(model, inputs, direction, hard, batch_size=n,
                                                          method="explicit").total,
           f"{prefix}/func": lambda: alignment_scores(model, inputs, direction, hard, batch_size=n, method="func").total}
    cases = _measured(fns, f"{prefix}/loop", device, runs, warmup, _agreement(ref))
    for c in cases:
        c.extra = {**(c.extra or {}), "n_params": sum(p.numel() for p in model.params.values())}
    return cases


def _prefixed(cases: list[Case], prefix: str) -> list[Case]:
    for c in cases:
        c.label = f"{prefix}/{c.label}"
        c.baseline = None if c.baseline is None else f"{prefix}/{c.baseline}"
    return cases


def _group(name: str, fn: Callable[[], list[Case]], failed: list[str]) -> list[Case]:
    """A group's cases; a failure is printed on stderr and recorded, the other groups still run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one failing group must not lose the others' minutes
        failed.append(f"{name}: {type(e).__name__}: {e}")
        print(f"gpu suite: group {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def _qwen_groups(size: str, shape: dict[str, Any], inputs: Any, align_rows: Any, device: torch.device,
                 dtype: torch.dtype, runs: int, warmup: int, quick: bool, failed: list[str]) -> list[Case]:
    """The capture, alignment and trait groups of one Qwen2 size (its models freed on return)."""
    cases: list[Case] = []
    with scratch(device, f"bench-gpu-{size}-") as root:
        tokenizer = tiny_tokenizer(shape["vocab"])
        lin = qwen2_lineage(root, shape, tokenizer, device, dtype)
        n_params = sum(p.numel() for p in lin.params("base").values())
        cases += _group(f"{size}/capture", lambda: _capture_group(
            lin, str(root / "base"), inputs, device, dtype, runs, warmup, shape["layers"], f"{size}/capture"), failed)
        cases += _group(f"{size}/alignment", lambda: _alignment_group(
            lin, align_rows, device, runs, warmup, f"{size}/alignment"), failed)
        cases += _group(f"{size}/trait", lambda: _prefixed(
            _trait_cases(lin, tokenizer, device, runs, warmup, quick), size), failed)
    for c in cases:
        c.extra = {**(c.extra or {}), "n_params": n_params}
    return cases


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Every group at every size (see the module doc); `quick`: the reduced CPU mode."""
    if not quick and device.type != "cuda":
        raise ConfigError(f"The gpu suite's full mode runs 0.5B and 1.5B models in bf16 on a GPU; --device is {device}. "
                          "Pass --device cuda, or --quick for the reduced mode (tiny float32 shapes, seconds on a CPU).")
    sizes, dtype = (REDUCED, torch.float32) if quick else (SIZES, torch.bfloat16)
    runs, warmup = (1, 0) if quick else (3, 1)
    cases: list[Case] = []
    failed: list[str] = []
    for size, shape in sizes.items():
        inputs = _inputs(shape["rows"], shape["seq"], shape["vocab"])
        align_rows = inputs.select(list(range(shape["align_rows"])))
        cases += _qwen_groups(size, shape, inputs, align_rows, device, dtype, runs, warmup, quick, failed)
        cases += _group(f"native-{size}", lambda: _native_group(
            shape, align_rows, device, dtype, runs, warmup, f"native-{size}/alignment"), failed)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for c in cases:
        rows = (c.extra or {}).get("prompts") if "/trait/" in c.label else shape_rows(c.label, sizes)
        c.extra = {**(c.extra or {}), "dtype": str(dtype).removeprefix("torch."), "rows": rows,
                   "rows_per_s": rows / c.median_s if rows and c.median_s > 0 else None, "loadavg_1m": os.getloadavg()[0],
                   "threads": torch.get_num_threads()}
    if failed:
        print("gpu suite: failed groups: " + "; ".join(failed), file=sys.stderr)
    return cases


def shape_rows(label: str, sizes: dict[str, dict[str, Any]]) -> int:
    """The rows a case's call processes: alignment cases score `align_rows`, capture cases every row."""
    size = label.split("/")[0].removeprefix("native-")
    shape = sizes[size]
    return shape["align_rows"] if "/alignment/" in label else shape["rows"]


__all__ = ["CASES", "GROUPS", "REDUCED", "SIZES", "expected_labels", "run"]
