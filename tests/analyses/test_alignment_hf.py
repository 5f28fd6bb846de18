"""run_alignment on tiny random Hugging Face models (GPT-2, Qwen2) written with save_pretrained:
end to end in bfloat16 beside float32, and a GPT-2 config with `pad_token_id` under vmap.

The teacher is the base plus a planted rank-one delta in one MLP weight; rows are sampled from
the teacher ("teacher") and from the base ("base") on the same prompts."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.alignment import AlignmentConfig, run_alignment
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective, iter_batches, per_token_losses
from workbench.engines.per_example import per_example_grads

SMALL = dict(student=None, max_rows_per_source=24, n_random=2, path_points=(1, 4), path_group_points=2,
             prediction_batches=0, batch_size=16, grad_batch_size=16)

SCALE = 3.0  # norm of the planted rank-one delta
PLANTED = {"gpt2": "transformer.h.1.mlp.c_proj.weight", "qwen2": "model.layers.0.mlp.down_proj.weight"}
PLANTED_GROUP = {"gpt2": "blocks.1.mlp.out", "qwen2": "blocks.0.mlp.out"}

def _config(arch: str, pad: bool):
    from transformers import GPT2Config, Qwen2Config

    extra = {"pad_token_id": 0} if pad else {}
    if arch == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32, **extra)
    return Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=64, vocab_size=64, max_position_embeddings=64, **extra)

def _sample(model, prompts: torch.Tensor, new: int, seed: int) -> list[list[int]]:
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, max_new_tokens=new,
                             min_new_tokens=new, top_k=0, pad_token_id=0, eos_token_id=None)
    return out[:, prompts.shape[1]:].tolist()

def make_lineage_dirs(root, arch: str, pad: bool = False) -> tuple[dict[str, str], Inputs]:
    """base and teacher (= base + a planted rank-one delta) directories, and rows sampled from each."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_config(arch, pad))
    dirs = {"base": str(root / f"{arch}-base"), "teacher": str(root / f"{arch}-teacher")}
    base.save_pretrained(dirs["base"])
    teacher = AutoModelForCausalLM.from_config(_config(arch, pad))
    teacher.load_state_dict(base.state_dict())
    w = dict(teacher.named_parameters())[PLANTED[arch]]
    gen = torch.Generator().manual_seed(1)
    u, v = torch.randn(w.shape[0], 1, generator=gen), torch.randn(1, w.shape[1], generator=gen)
    with torch.no_grad():
        w.add_(SCALE * (u @ v) / (u.norm() * v.norm()))
    teacher.save_pretrained(dirs["teacher"])
    prompts = torch.randint(1, 64, (12, 3), generator=gen)
    rows_t, rows_b = _sample(teacher.eval(), prompts, 8, 2), _sample(base.eval(), prompts, 8, 3)
    p = prompts.tolist()
    rows = [r[: 4 + i % 5] for i, r in enumerate(rows_t + rows_b)]  # ragged: right-padded with the pad id 0
    inputs = Inputs.from_sequences(p + p, rows, ["teacher"] * 12 + ["base"] * 12)
    return dirs, inputs

@pytest.fixture(scope="module", params=["gpt2", "qwen2"])
def arch_dirs(request, tmp_path_factory):
    dirs, inputs = make_lineage_dirs(tmp_path_factory.mktemp("hf"), request.param)
    return request.param, dirs, inputs

def test_alignment_runs_in_bfloat16_and_matches_float32(arch_dirs):
    arch, dirs, inputs = arch_dirs
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        lin = Lineage.from_hf_dirs(dirs, dtype=dtype)
        assert lin.dtype == dtype
        results[dtype] = run_alignment(lin, inputs, AlignmentConfig(**SMALL))
    r32, r16 = results[torch.float32], results[torch.bfloat16]
    for r in (r32, r16):
        for name, v in r.scores.items():
            if name != "labels":
                assert v.dtype in (torch.float32, torch.float64) and torch.isfinite(v).all(), name
        # the planted delta lives in one group: its per-group scores are zero elsewhere
        diff = dict(zip(r.groups, r.group_diff["delta_T"]))
        assert all(v == 0.0 for g, v in diff.items() if g != PLANTED_GROUP[arch])
        assert diff[PLANTED_GROUP[arch]] != 0.0
    # the hard path integral of the teacher delta is the exact log-likelihood ratio
    assert r32.path["completeness_rel_error"][-1] < 0.01
    assert r16.path["completeness_rel_error"][-1] < 0.05  # bf16 forward passes: ~3 significant digits
    # bf16 scores track float32 ones
    for name in ("oracle_log_ratio", "a/delta_T", "path/delta_T/K4"):
        a, b = r32.scores[name].double(), r16.scores[name].double()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95, name

def test_gpt2_with_pad_token_id_runs_under_vmap(tmp_path):
    """transformers' GPT-2 checks for padding with `.item()` when no attention mask is given and the
    config has `pad_token_id`; vmap (per-example gradients) cannot run it, so the functional call
    switches the check off, and restores it afterwards."""
    dirs, inputs = make_lineage_dirs(tmp_path, "gpt2", pad=True)
    lin = Lineage.from_hf_dirs(dirs)
    assert lin["base"].original_model.config.pad_token_id == 0
    assert (inputs.tokens[:, -1] == 0).any()  # padded rows end in the pad id: the check would fire
    model = AlignmentModel(lin)
    hard = Objective("hard")
    batch = next(iter(iter_batches(model, hard, inputs.select(list(range(6))), 6, False, "")))
    grads = per_example_grads(model, hard, batch, model.params)
    # equal to a plain loop of one backward per row
    key = "blocks.1.mlp.out.weight"
    for i in range(len(batch.tokens)):
        p = {k: v.clone().requires_grad_(k == key) for k, v in model.params.items()}
        one = type(batch)(batch.tokens[i : i + 1], batch.mask[i : i + 1], None, slice(0, 1))
        per_token_losses(model, p, hard, one).sum().backward()
        torch.testing.assert_close(grads[key][i], p[key].grad, atol=1e-5, rtol=1e-4)
    hf = [m for m in lin["base"].original_model.modules() if hasattr(m, "warn_if_padding_and_no_attention_mask")]
    assert hf and all("warn_if_padding_and_no_attention_mask" not in m.__dict__ for m in hf)  # restored
    r = run_alignment(lin, inputs, AlignmentConfig(**SMALL))
    assert r.path["completeness_rel_error"][-1] < 0.01
