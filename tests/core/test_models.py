"""core.models: booting, copies, and save/load of clean state dicts with checksums."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ArtifactError, ChecksumError, ConfigError
from workbench.core.models import (
    boot_native,
    clean_state_dict,
    copy_model,
    load_model,
    model_meta,
    native_config_of,
    resolve_device,
    save_model,
)

CFG = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=12, n_ctx=6, act_fn="gelu",
           normalization_type="LN", seed=3)
TOKENS = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def model():
    return boot_native(CFG)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in {"cpu", "cuda"}
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("toaster")


def test_boot_native_is_seeded_and_records_its_config(model):
    assert native_config_of(model) == CFG
    assert same_weights(clean_state_dict(model), clean_state_dict(boot_native(CFG)))
    assert not same_weights(clean_state_dict(model), clean_state_dict(boot_native({**CFG, "seed": 4})))


def test_copy_is_independent_and_computes_the_same(model):
    twin = copy_model(model)
    with torch.no_grad():
        assert torch.equal(twin(TOKENS), model(TOKENS))
        next(twin.parameters()).add_(1.0)
    assert not same_weights(clean_state_dict(twin), clean_state_dict(model))


def test_save_load_round_trip_keeps_weights_and_meta(model, tmp_path):
    sha = save_model(tmp_path / "teacher", model, {"role": "teacher"})
    assert (tmp_path / "teacher.safetensors").exists() and (tmp_path / "teacher.json").exists()
    loaded = load_model(tmp_path / "teacher")
    assert same_weights(clean_state_dict(loaded), clean_state_dict(model))
    assert native_config_of(loaded) == CFG
    assert model_meta(tmp_path / "teacher") == {"role": "teacher"}
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS), model(TOKENS))
    assert save_model(tmp_path / "again", model, {"role": "teacher"}) == sha  # deterministic bytes


def test_load_refuses_a_tampered_file(model, tmp_path):
    save_model(tmp_path / "m", model)
    weights = tmp_path / "m.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_model(tmp_path / "m")


def test_load_names_a_missing_model(tmp_path):
    with pytest.raises(ArtifactError, match="No model at"):
        load_model(tmp_path / "never-built")


def test_native_config_of_a_foreign_bridge_raises():
    from transformer_lens.model_bridge import TransformerBridge

    foreign = TransformerBridge.boot_native(dict(CFG))
    with pytest.raises(ConfigError, match="not booted by workbench"):
        native_config_of(foreign)
