"""Activation patching patches what flows on: for every hook activation patching offers, on the
organism's models and on Hugging Face GPT-2, Qwen2 and Llama bridges, the patched value is what
the stream carries next (a residual hook: the next step reads it and the next residual is it plus
the block's update; attn_out / mlp_out: the residual after is the residual before plus the
patched output); unpatched positions are untouched; other hooks are refused."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.patching import PatchConfig, activation_patching, patched_logits
from workbench.analyses.patching.stream_patch import default_patch_hooks, faithful_hooks
from workbench.core.errors import ConfigError, UnknownNameError
from workbench.core.lineage import Lineage
from workbench.organism.load import load_seed

transformers = pytest.importorskip("transformers")
ATOL = 1e-5
TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])


@pytest.fixture(scope="module")
def organism(tiny_organism):
    return load_seed(tiny_organism.directory, roles=["base", "student", "control"], target="owl")


@pytest.fixture(scope="module")
def models(organism, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    common = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    hf = {"gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100,
                                                                       n_positions=32)),
          "qwen2": transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)),
          "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))}
    out = {"organism": organism.lineage["base"]}
    for name, model in hf.items():
        model.save_pretrained(root / name)
        out[name] = Lineage.from_hf_dirs({"base": str(root / name)})["base"]
    return out


def _watch(model) -> list[str]:
    n = int(model.cfg.n_layers)
    per_block = ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "ln2.hook_in", "hook_mlp_out", "hook_resid_post"]
    pos = ["hook_pos_embed"] if "hook_pos_embed" in faithful_hooks(model) else []
    return ["hook_embed", *pos, *[f"blocks.{i}.{k}" for i in range(n) for k in per_block], "ln_final.hook_in"]


def _run(model, hook: str | None, value: torch.Tensor | None = None, positions=None) -> dict[str, torch.Tensor]:
    """Every watched activation of a run of `model` on TOKENS patched through `patched_logits`."""
    store: dict[str, torch.Tensor] = {}

    def keep(name):
        def f(act, hook):
            store[name] = act.detach().clone()
        return f

    with torch.inference_mode(), model.hooks(fwd_hooks=[(w, keep(w)) for w in _watch(model)]):
        if hook is None:
            model(TOKENS)
        else:
            patched_logits(model, TOKENS, hook, value, positions)
    return store


def _expected(model, hook: str, v: torch.Tensor, run: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """(watched hook, the value it must hold in the patched run) for a patch `v` at `hook`."""
    n = int(model.cfg.n_layers)
    pos = run.get("hook_pos_embed", 0.0)
    if hook == "hook_embed":
        return [("blocks.0.hook_resid_pre", v + pos)]
    if hook == "hook_pos_embed":
        return [("blocks.0.hook_resid_pre", run["hook_embed"] + v)]
    i, kind = int(hook.split(".")[1]), hook.rsplit(".", 1)[1]
    b = f"blocks.{i}"
    nxt = f"blocks.{i + 1}.hook_resid_pre" if i + 1 < n else "ln_final.hook_in"
    if kind == "hook_resid_pre":  # the block reads it: its attention input and its residual
        return [(f"{b}.hook_resid_mid", v + run[f"{b}.hook_attn_out"])]
    if kind == "hook_attn_out":
        return [(f"{b}.hook_resid_mid", run[f"{b}.hook_resid_pre"] + v)]
    if kind == "hook_resid_mid":  # the MLP reads it, and so does the residual add
        return [(f"{b}.hook_resid_mid", v), (f"{b}.ln2.hook_in", v),
                (f"{b}.hook_resid_post", v + run[f"{b}.hook_mlp_out"]), (nxt, v + run[f"{b}.hook_mlp_out"])]
    if kind == "hook_mlp_out":
        return [(f"{b}.hook_resid_post", run[f"{b}.hook_resid_mid"] + v)]
    assert kind == "hook_resid_post"
    return [(nxt, v)]


FAMILIES = ("organism", "gpt2", "qwen2", "llama")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_offered_hook_patches_what_flows_on(models, family):
    model = models[family]
    clean = _run(model, None)
    hooks = default_patch_hooks(model)
    n = int(model.cfg.n_layers)
    assert hooks[-1] == f"blocks.{n - 1}.hook_resid_post" and f"blocks.{n - 1}.hook_resid_mid" in hooks
    assert ("hook_pos_embed" in hooks) == (family in ("organism", "gpt2"))  # rotary models have no such write
    for hook in [*hooks, *[f"blocks.{i}.hook_resid_pre" for i in range(n)]]:
        act = clean["blocks.0.hook_resid_pre" if hook == "hook_embed" else hook]
        v = torch.randn_like(act) * act.std() + 0.5
        run = _run(model, hook, v)
        for name, want in _expected(model, hook, v, run):
            err = float((run[name] - want).abs().max())
            assert err <= ATOL, f"{family}: patching {hook}: {name} is off by {err:.3g}"
            assert not torch.allclose(run[name], clean[name], atol=1e-3), f"{family}: {hook} did not reach {name}"


@pytest.mark.parametrize("family", FAMILIES)
def test_resid_mid_patch_at_one_position_leaves_the_others_bit_for_bit(models, family):
    """Per-position patches (offset before the answer) move the stream at that position only."""
    model = models[family]
    clean = _run(model, None)
    hook, positions = "blocks.0.hook_resid_mid", torch.tensor([3, -1])  # row 1 is left alone
    v = torch.randn_like(clean[hook])
    run = _run(model, hook, v, positions)
    post, mlp = run["blocks.0.hook_resid_post"], run["blocks.0.hook_mlp_out"]
    torch.testing.assert_close(post[0, 3], v[0, 3] + mlp[0, 3], atol=ATOL, rtol=0)
    for name in ("blocks.0.hook_attn_out", "blocks.0.hook_resid_post"):
        assert torch.equal(run[name][1], clean[name][1]) and torch.equal(run[name][0, :3], clean[name][0, :3])


def test_the_old_resid_mid_patch_kept_the_base_residual(models):
    """What the bridge's hook_resid_mid alone does (it is the MLP norm's input): the residual add
    keeps the recipient's value, so resid_post = recipient resid_mid + MLP output. The fix differs."""
    model = models["organism"]
    clean = _run(model, None)
    v = torch.randn_like(clean["blocks.0.hook_resid_mid"])
    store = {}
    with torch.inference_mode():
        model.run_with_hooks(TOKENS, fwd_hooks=[
            ("blocks.0.hook_resid_mid", lambda a, hook: v),
            ("blocks.0.hook_mlp_out", lambda a, hook: store.__setitem__("mlp", a.clone())),
            ("blocks.0.hook_resid_post", lambda a, hook: store.__setitem__("post", a.clone()))])
    torch.testing.assert_close(store["post"], clean["blocks.0.hook_resid_mid"] + store["mlp"], atol=ATOL, rtol=0)
    fixed = _run(model, "blocks.0.hook_resid_mid", v)
    torch.testing.assert_close(fixed["blocks.0.hook_resid_post"], v + store["mlp"], atol=ATOL, rtol=0)


def test_hooks_that_cannot_be_patched_faithfully_are_refused(organism, models):
    lin, trait = organism.lineage, organism.trait
    with pytest.raises(ConfigError, match=r"'blocks.0.attn.hook_z' faithfully.*Patchable hooks: hook_embed, "
                                          r"hook_pos_embed, and per block i: blocks.i.hook_resid_pre"):
        activation_patching(lin, trait, PatchConfig(hooks=("blocks.0.attn.hook_z",)))
    with pytest.raises(UnknownNameError, match="blocks.9.hook_resid_mid"):
        activation_patching(lin, trait, PatchConfig(hooks=("blocks.9.hook_resid_mid",)))
    from workbench.analyses.patching.stream_patch import check_patch_hooks

    with pytest.raises(ConfigError, match="positions are rotary: hook_pos_embed never fires"):
        check_patch_hooks(models["qwen2"], ["hook_pos_embed"])
    check_patch_hooks(models["llama"], default_patch_hooks(models["llama"]))
