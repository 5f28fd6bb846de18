"""Weights that cannot be verified or hold NaN/inf are refused at load, naming the model and the
parameter group (issue 16): a missing checksum is an error, not a skip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from workbench.core.errors import ChecksumError, NumericsError
from workbench.core.io import sha256_file
from workbench.core.models import boot_native, load_model, save_model

CFG = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=12, n_ctx=6, act_fn="gelu",
           normalization_type="LN", seed=3)


@pytest.fixture(scope="module")
def model():
    return boot_native(CFG)


@pytest.mark.parametrize("sha", ["<missing>", None, "", 7, "abc"])
def test_model_json_without_a_valid_sha256_is_refused(model, tmp_path, sha):
    save_model(tmp_path / "m", model)
    info = json.loads((tmp_path / "m.json").read_text())
    if sha == "<missing>":
        del info["sha256"]
    else:
        info["sha256"] = sha
    (tmp_path / "m.json").write_text(json.dumps(info))
    with pytest.raises(ChecksumError, match=r'records no valid "sha256" for m.safetensors.*Rebuild'):
        load_model(tmp_path / "m")


def test_nan_weight_with_an_updated_checksum_names_model_and_group(model, tmp_path):
    save_model(tmp_path / "student", model)
    path = tmp_path / "student.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if k.startswith("blocks.0.mlp.in"))
    state[key].view(-1)[3] = float("nan")
    save_file(state, str(path))
    info = json.loads((tmp_path / "student.json").read_text())
    info["sha256"] = sha256_file(path)  # the tamperer also updated the checksum
    (tmp_path / "student.json").write_text(json.dumps(info))
    with pytest.raises(NumericsError, match=r"student has NaN or inf weights in parameter group blocks\.0\.mlp\.in"):
        load_model(tmp_path / "student")


def test_inf_in_hf_checkpoint_weights_names_model_and_group(tmp_path):
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel

    from workbench.core.hf import boot_hf_dirs

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_fc.weight[0, 0] = float("inf")
    hf.save_pretrained(tmp_path / "bad")
    with pytest.raises(NumericsError, match=r"'student' .* NaN or inf weights in parameter group blocks\.0\.mlp"):
        boot_hf_dirs({"student": tmp_path / "bad"})
