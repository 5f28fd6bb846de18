"""Benchmark `memory`: bytes per parameter at peak, per section, on a ~50M-parameter Qwen2 lineage.

Builds a random Qwen2-family model locally (no download; `--quick`: a tiny one) and a lineage
base / teacher / student / control saved as Hugging Face directories: teacher = base + a planted
rank-2 delta in one MLP matrix, student = base + half of it + small noise everywhere, control =
base + small noise only. Each section then runs in a FRESH subprocess that loads the lineage,
takes its memory as the baseline and reports the peak above it while the section runs: on a CPU
the resident set (sampled every millisecond, after returning freed heap to the system, with
glibc's mmap threshold fixed at 128 KiB so that freed large blocks go back to the system at once:
the resident set then tracks live tensors, as CUDA's allocator statistic does, instead of heap
glibc keeps after a free, which inflated alignment's peak from 3.2x to 5.5x), on CUDA
`torch.cuda.max_memory_allocated`. `extra_bytes_per_param` is that peak over one model's
parameter count; `extra_over_model` the peak over one model's bytes (the goal: <= 1.5 for
weights and delta patching, beyond the models themselves); `projection_7.6B_gb` scales it to
Qwen2.5-7B (7.6e9 parameters in bf16: 15.2 GB per model). Sections: weights (every group, both
compared models), delta patching (all tables, random control; the greedy search is off: its
working set is bounded like the rest, only slower), activation patching, capture + compare, and
alignment (teacher- vs base-labelled rows, per-example gradients and each forward-mode tangent
under `memory_budget_bytes` = `ALIGN_BUDGET`, 64 MiB; the default 8 random controls; a reduced
configuration otherwise: few rows and path points).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.benchmarks.harness import Case, PeakRSS

QWEN_7B_PARAMS = 7.6e9
SECTIONS = ("weights", "delta_patching", "activation_patching", "capture_compare", "alignment")
MMAP_THRESHOLD = 128 * 1024
"""glibc's mmap threshold in the measuring subprocess (bytes): larger blocks are mmapped and returned on free."""
ALIGN_BUDGET = 64 * 2**20
"""memory_budget_bytes of the alignment section: most bytes of per-example gradients (or a jvp tangent) at once."""


@dataclass
class MemoryModel:
    """The random Qwen2 model (sizes of a Qwen2Config) and the rows the sections run on."""

    n_layers: int = 6
    d_model: int = 512
    d_mlp: int = 1408
    n_heads: int = 8
    n_kv_heads: int = 2
    vocab: int = 32000
    n_prompts: int = 4  # trait prompts
    n_rows: int = 32  # capture rows
    seq: int = 24
    seed: int = 0


QUICK = MemoryModel(n_layers=2, d_model=64, d_mlp=128, n_heads=4, n_kv_heads=2, vocab=512, n_rows=8, seq=12)


def n_params(m: MemoryModel) -> int:
    """Parameters of the Qwen2 model (untied embeddings, q/k/v biases)."""
    kv = m.d_model // m.n_heads * m.n_kv_heads
    attn = m.d_model * (m.d_model + 2 * kv) + m.d_model + 2 * kv + m.d_model * m.d_model
    return 2 * m.vocab * m.d_model + m.n_layers * (attn + 3 * m.d_model * m.d_mlp + 2 * m.d_model) + m.d_model


@torch.no_grad()
def build_dirs(root: Path, m: MemoryModel) -> dict[str, str]:
    """Save base, teacher, student and control as Hugging Face directories under `root`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(m.seed)
    cfg = Qwen2Config(num_hidden_layers=m.n_layers, hidden_size=m.d_model, intermediate_size=m.d_mlp,
                      num_attention_heads=m.n_heads, num_key_value_heads=m.n_kv_heads, vocab_size=m.vocab,
                      max_position_embeddings=max(64, 2 * m.seq), tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(m.seed + 1)
    target = "model.layers.0.mlp.down_proj.weight"
    w = base[target]
    planted = torch.randn(w.shape[0], 2, generator=gen) @ torch.randn(2, w.shape[1], generator=gen)
    planted *= 0.5 * w.norm() / planted.norm()

    def noisy(scale: float) -> dict[str, torch.Tensor]:
        return {k: v + scale * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=gen) for k, v in base.items()}

    states = {"base": base, "teacher": {**base, target: w + planted}, "student": noisy(0.01), "control": noisy(0.01)}
    states["student"][target] = states["student"][target] + 0.5 * planted
    dirs = {}
    for name, state in states.items():
        model.load_state_dict(state)
        dirs[name] = str(root / name)
        model.save_pretrained(dirs[name])
    return dirs


def _inputs(m: MemoryModel) -> tuple[Any, Any]:
    from workbench.core.inputs import Inputs
    from workbench.trait import Trait

    gen = torch.Generator().manual_seed(m.seed + 2)
    ids = lambda n, length: torch.randint(10, m.vocab, (n, length), generator=gen).tolist()  # noqa: E731
    trait = Trait.from_prompts(ids(m.n_prompts, m.seq // 2), target="a", category="letters",
                               answers={"a": [3], "b": [4], "c": [5], "d": [6]}, vocab_size=m.vocab)
    half = m.seq // 2
    inputs = Inputs.from_sequences(ids(m.n_rows, half), ids(m.n_rows, m.seq - half), "teacher")
    return trait, inputs


def _align_inputs(m: MemoryModel) -> Any:
    """Rows labelled teacher and base alternately (alignment's positive and negative sources)."""
    from workbench.core.inputs import Inputs

    gen = torch.Generator().manual_seed(m.seed + 3)
    half = m.seq // 2
    n = max(16, m.n_rows // 2)
    tokens = torch.randint(10, m.vocab, (n, m.seq), generator=gen)
    return Inputs.from_sequences(tokens[:, :half].tolist(), tokens[:, half:].tolist(),
                                 ["teacher" if i % 2 == 0 else "base" for i in range(n)])


def _section(name: str, lin: Any, trait: Any, inputs: Any, tmp: Path, m: MemoryModel | None = None) -> Callable[[], Any]:
    from workbench.analyses.patching import PatchConfig, activation_patching, delta_patching
    from workbench.analyses.weights import WeightConfig, weight_deltas

    hooks = ("hook_embed", *(f"blocks.{i}.hook_resid_post" for i in range(int(lin.cfg.n_layers))))
    patch = PatchConfig(greedy=False, progress=False, min_effect=0.0, hooks=hooks)
    if name == "weights":
        return lambda: weight_deltas(lin, WeightConfig(models=("student", "control")))
    if name == "delta_patching":
        return lambda: delta_patching(lin, trait, patch)
    if name == "activation_patching":
        return lambda: activation_patching(lin, trait, patch)
    if name == "capture_compare":
        from workbench.analyses.activation_shifts import CompareConfig, compare
        from workbench.capture.capture import capture
        from workbench.capture.hooks import residual_hooks

        def run() -> Any:
            store = capture(lin, inputs, residual_hooks(int(lin.cfg.n_layers)), positions="all",
                            out_dir=tmp / "store", progress=False)
            return compare(lin, store, CompareConfig(n_bootstrap=50), trait=trait)

        return run
    if name == "alignment":
        from workbench.analyses.alignment import AlignmentConfig, run_alignment

        rows = _align_inputs(m or MemoryModel())
        cfg = AlignmentConfig(student="student", max_rows_per_source=None, n_random=8, path_points=(2,),
                              path_group_points=0, prediction_batches=0, batch_size=8, grad_batch_size=8,
                              memory_budget_bytes=ALIGN_BUDGET, device=str(lin.device))
        return lambda: run_alignment(lin, rows, cfg, trait)
    raise ValueError(f"unknown memory section {name!r}; one of {SECTIONS}")


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def measure(section: str, dirs: dict[str, str], device: str, m: MemoryModel) -> dict[str, Any]:
    """In THIS process: load the lineage, then the peak above the post-load baseline while `section` runs."""
    import gc

    import psutil

    from workbench.core.lineage import Lineage

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    lin = Lineage.from_hf_dirs(dirs, device=dev, dtype=dtype)
    trait, inputs = _inputs(m)
    params = lin.params("base")
    count = sum(p.numel() for p in params.values())
    model_bytes = sum(p.numel() * p.element_size() for p in params.values())
    with tempfile.TemporaryDirectory() as tmp:
        fn = _section(section, lin, trait, inputs, Path(tmp), m)
        for name in lin.names:  # fault in every weight page (loaded weights may be file-mapped) before the baseline
            for p in lin.params(name).values():
                float(p.detach().sum())
        gc.collect()
        _trim_heap()
        t0 = time.perf_counter()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            baseline = torch.cuda.memory_allocated(dev)
            fn()
            torch.cuda.synchronize(dev)
            peak = torch.cuda.max_memory_allocated(dev)
            process_peak = peak
        else:
            baseline = psutil.Process().memory_info().rss
            with PeakRSS(interval=0.001) as rss:
                fn()
            peak = process_peak = rss.peak
        seconds = time.perf_counter() - t0
    extra = max(0, peak - baseline)
    return {"section": section, "n_params": count, "model_bytes": model_bytes, "baseline_bytes": baseline,
            "peak_bytes": process_peak, "extra_bytes": extra, "seconds": seconds}


def _child(argv: list[str]) -> None:
    section, dirs, device, model = argv[0], json.loads(argv[1]), argv[2], MemoryModel(**json.loads(argv[3]))
    print("MEMORY_RESULT " + json.dumps(measure(section, dirs, device, model)))


def run_section(section: str, dirs: dict[str, str], device: str, m: MemoryModel) -> dict[str, Any]:
    """`measure` in a fresh Python process (so earlier sections leave nothing behind)."""
    code = "import sys; from workbench.benchmarks.memory import _child; _child(sys.argv[1:])"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}  # RSS tracks live tensors (module doc)
    out = subprocess.run([sys.executable, "-c", code, section, json.dumps(dirs), device, json.dumps(asdict(m))], env=env,
                         capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("MEMORY_RESULT "):
            return json.loads(line[len("MEMORY_RESULT "):])
    raise RuntimeError(f"memory section {section!r} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def table_case(r: dict[str, Any], device: str) -> Case:
    """One section's figures as a benchmark case (timing is informative only)."""
    ratio = r["extra_bytes"] / r["model_bytes"]
    bf16_model = 2 * QWEN_7B_PARAMS
    extra = {
        "n_params": r["n_params"],
        "model_bytes": r["model_bytes"],
        "extra_bytes": r["extra_bytes"],
        "extra_bytes_per_param": r["extra_bytes"] / r["n_params"],
        "extra_over_model": ratio,
        "projection_7.6B_gb": ratio * bf16_model / 1e9,
        "projection_note": "extra_over_model x 15.2 GB (one Qwen2.5-7B in bf16), beyond the models themselves",
        "measured_on": "cuda max_memory_allocated" if device.startswith("cuda") else "process RSS, fresh subprocess",
    }
    if r["section"] == "alignment":
        extra["memory_budget_bytes"] = ALIGN_BUDGET
    return Case(r["section"], 1, r["seconds"], 0.0, r["peak_bytes"] / 2**20, extra=extra)


def run(device: torch.device, quick: bool = False, sections: tuple[str, ...] = SECTIONS) -> list[Case]:
    """Build the lineage once, then measure each section in its own subprocess."""
    m = QUICK if quick else MemoryModel()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = build_dirs(Path(tmp), m)
        results = [run_section(s, dirs, str(device), m) for s in sections]
    cases = [table_case(r, str(device)) for r in results]
    print(format_table(cases))
    return cases


def format_table(cases: list[Case]) -> str:
    """The memory table: per section, bytes per parameter at peak and the 7.6B projection."""
    lines = [f"{'section':<22}{'extra B/param':>14}{'x model bytes':>15}{'7.6B bf16 (GB)':>16}"]
    for c in cases:
        e = c.extra or {}
        note = f"  (memory_budget_bytes {e['memory_budget_bytes'] // 2**20} MiB)" if "memory_budget_bytes" in e else ""
        lines.append(f"{c.label:<22}{e['extra_bytes_per_param']:>14.2f}{e['extra_over_model']:>15.3f}"
                     f"{e['projection_7.6B_gb']:>16.2f}{note}")
    return "\n".join(lines)
