"""Models larger than one device: the fit check before any weight loads, device maps (auto and
explicit) and models dispatched by accelerate, on tiny Qwen2 directories. On a CPU every map names
the cpu: the code path (accelerate's hooks, the bridge's multi-device branches, the lineage's
placement rules) runs; layers on two real devices need two GPUs and are not exercised here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from workbench.core import hf as hf_mod  # noqa: E402
from workbench.core.errors import ConfigError  # noqa: E402
from workbench.core.hf import device_map_of, hf_offline  # noqa: E402
from workbench.core.hf_memory import (  # noqa: E402
    ModelsDoNotFitError,
    check_device_map,
    checkpoint_params,
    device_bytes,
    memory_budget,
)
from workbench.core.inputs import Inputs  # noqa: E402
from workbench.core.lineage import Lineage  # noqa: E402
from workbench.core.toy_hf import ToySpec, write_toy_lineage  # noqa: E402

CPU_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
           "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_lineage(tmp_path_factory.mktemp("toy_mem"), ToySpec(n_prompts=4))


def _dirs(toy) -> dict[str, str]:
    return {"base": toy.dirs["base"], "teacher": toy.dirs["teacher"]}


def _n_params(path: str) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())


def test_checkpoint_params_from_headers_equal_the_loaded_model(toy, tmp_path):
    from transformers import AutoModelForCausalLM

    n = _n_params(toy.dirs["base"])
    assert checkpoint_params(toy.dirs["base"]) == n
    model = AutoModelForCausalLM.from_pretrained(toy.dirs["base"])
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")  # several files + an index
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert checkpoint_params(tmp_path / "sharded") == n
    (tmp_path / "sharded" / "model.safetensors.index.json").unlink()  # no safetensors index: the meta model counts
    for f in (tmp_path / "sharded").glob("*.safetensors"):
        f.unlink()
    assert checkpoint_params(tmp_path / "sharded") == n


def test_a_lineage_that_does_not_fit_fails_before_loading_naming_the_bytes(toy, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a weight was loaded before the fit check")

    monkeypatch.setattr(hf_mod, "boot_hf_dir", boom)
    need = 2 * _n_params(toy.dirs["base"]) * 4  # two float32 models
    for device_map in (None, "auto"):
        with pytest.raises(ModelsDoNotFitError) as e:
            Lineage.from_hf_dirs(_dirs(toy), device_map=device_map, max_memory={"cpu": need - 1})
        msg = str(e.value)
        assert f"{need} bytes" in msg and f"{need - 1} bytes" in msg and "cpu" in msg
        assert "device map" in msg and "bfloat16" in msg and "fewer models" in msg
    with pytest.raises(ModelsDoNotFitError, match=f"{need // 2} bytes"):  # bf16 halves it; a 1-byte budget still fails
        Lineage.from_hf_dirs(_dirs(toy), dtype=torch.bfloat16, max_memory={"cpu": 1})
    # an adapter's model is a full copy of its parent's: it counts
    with pytest.raises(ModelsDoNotFitError, match=f"{need + need // 2} bytes"):
        Lineage.from_hf_dirs({**_dirs(toy), "student": toy.dirs["lora_student"]}, max_memory={"cpu": need})


def test_the_budget_fits_in_bfloat16_not_float32(toy):
    need32 = 2 * _n_params(toy.dirs["base"]) * 4
    with pytest.raises(ModelsDoNotFitError):
        Lineage.from_hf_dirs(_dirs(toy), max_memory={"cpu": need32 // 2 + 64})
    lin = Lineage.from_hf_dirs(_dirs(toy), dtype=torch.bfloat16, max_memory={"cpu": need32 // 2 + 64})
    assert lin.dtype == torch.bfloat16
    assert sum(device_bytes(lin["base"].original_model).values()) >= need32 // 4


def test_max_memory_must_name_the_device_without_a_map():
    with pytest.raises(ConfigError, match="cuda:0|0=SIZE|device map"):
        memory_budget(torch.device("cpu"), None, {0: 10**9})
    assert memory_budget(torch.device("cpu"), None, {"cpu": 123}) == {"cpu": 123}
    assert memory_budget(torch.device("cpu"), "auto", {"cpu": 5}) == {"cpu": 5}
    assert memory_budget(torch.device("cpu"), None, None)["cpu"] > 0  # psutil's available RAM


def test_device_maps_name_real_devices_only():
    for bad in ({"": "disk"}, {"model.layers.0": "meta"}, {"": "tpu"}, {}):
        with pytest.raises(ConfigError):
            check_device_map(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="GPU 0 but this machine has 0"):
            check_device_map({"": 0})
    with pytest.raises(ConfigError, match="mixes the cpu with GPUs"):
        check_device_map({"model.layers.0": "cpu", "lm_head": "cuda:0"})
    assert check_device_map({"a": "cpu", "b": "cpu"}) == {"a": "cpu", "b": "cpu"}


def test_auto_and_explicit_maps_load_the_same_models(toy):
    tokens = torch.randint(3, 500, (2, 7), generator=torch.Generator().manual_seed(0))
    ref = Lineage.from_hf_dirs(_dirs(toy))
    for device_map in ("auto", CPU_MAP):
        lin = Lineage.from_hf_dirs(_dirs(toy), device_map=device_map, max_memory={"cpu": 10**9})
        assert lin.device == torch.device("cpu")
        with torch.inference_mode():
            for name in ("base", "teacher"):
                assert torch.equal(lin[name](tokens), ref[name](tokens))


def _dispatched_lineage(toy) -> Lineage:
    """base and teacher loaded by transformers, dispatched by accelerate over CPU_MAP with its hooks
    on every module (as a multi-GPU map installs them), then wrapped by the bridge."""
    from accelerate import dispatch_model
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    models = {}
    for name, path in _dirs(toy).items():
        hf = dispatch_model(AutoModelForCausalLM.from_pretrained(path), device_map=CPU_MAP, main_device="cpu",
                            force_hooks=True)
        with hf_offline():
            models[name] = TransformerBridge.boot_transformers(path, hf_model=hf, dtype=torch.float32)
    return Lineage.from_models(models, meta={n: {"hf_dir": p} for n, p in _dirs(toy).items()})


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_capture_and_alignment_through_accelerate_hooks_equal_the_plain_lineage(toy, tmp_path):
    from workbench.capture.capture import capture
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective
    from workbench.engines.per_example import alignment_scores

    ref, lin = Lineage.from_hf_dirs(_dirs(toy)), _dispatched_lineage(toy)
    assert device_map_of(lin["base"]) == CPU_MAP and device_map_of(ref["base"]) is None
    assert any(hasattr(m, "_hf_hook") for m in lin["base"].original_model.modules())
    inputs = Inputs.from_jsonl(toy.data)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    for i, x in enumerate((ref, lin)):
        capture(x, inputs, hooks, "mean", out_dir=tmp_path / f"cap{i}", batch_size=8, progress=False)
    assert _digest(tmp_path / "cap0") == _digest(tmp_path / "cap1")  # byte for byte
    scores = []
    for x in (ref, lin):
        model = AlignmentModel(x, "base")
        direction = {k: x.delta_of("teacher", k) for k in x.keys}
        scores.append(alignment_scores(model, inputs, direction, Objective("hard"), batch_size=8, method="func"))
    assert torch.equal(scores[0].per_token, scores[1].per_token)
    copy = lin.copy_model("base")  # booted again with the same map, weights loaded
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), lin["base"].state_dict().values()))


def test_a_spread_lineage_refuses_to_move(toy):
    lin = Lineage.from_hf_dirs(_dirs(toy))
    lin.to("cpu")  # one device: moves as before
    lin["teacher"].original_model.hf_device_map = {"model.embed_tokens": 0, "lm_head": 1}  # as two GPUs would leave it
    with pytest.raises(ConfigError, match="teacher are spread over devices by a device map"):
        lin.to("cpu")
