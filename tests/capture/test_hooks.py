"""The default hook lists: one canonical list, and each analysis's subset is exactly what it read
before the lists were merged."""

from workbench.capture.hooks import patching_hooks, probe_hooks, residual_hooks, stream_hooks


def _per_layer(n_layers, kinds):
    return [f"blocks.{i}.{k}" for i in range(n_layers) for k in kinds]


def test_each_default_list_is_a_named_subset_of_the_canonical_one():
    n = 2
    full = stream_hooks(n)
    for subset in (residual_hooks(n), patching_hooks(n), probe_hooks(n)):
        assert [h for h in full if h in subset] == subset  # same order as the canonical list
    assert residual_hooks(n) == ["blocks.0.hook_resid_pre", *_per_layer(n, ["hook_resid_mid", "hook_resid_post"])]
    writers = ["hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"]
    assert patching_hooks(n) == ["hook_embed", "hook_pos_embed", *_per_layer(n, writers)]
    assert probe_hooks(n) == ["hook_embed", *_per_layer(n, writers)]
    assert stream_hooks(0) == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
