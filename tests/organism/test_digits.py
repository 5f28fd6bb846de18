"""Tests for the digits organism: the subliminal effect, hooks, save/load, config errors, CLI.

One short-schedule build (seed 1, ~5 s on 2 CPU cores) is shared by the module. On this seed
and schedule the same-init student reaches ~0.8 and the cross student ~0.12; the thresholds
below leave wide margins so thread-count numerics cannot flake them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.core.errors import ArtifactError, ChecksumError, ConfigError, UnknownNameError
from workbench.organism import digits as dg
from workbench.organism.digits.experiment import _parse_seeds

FAST = dict(teacher_epochs=5, epochs=16, noise_samples=4096)
TINY = dict(teacher_epochs=1, epochs=1, noise_samples=256, hidden=32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.DigitsResult, Path]:
    out = tmp_path_factory.mktemp("digits")
    result = dg.build_digits(dg.DigitsConfig(**FAST), out_dir=out, seeds=[1], progress=False)
    return result, out


def test_same_init_student_learns_digits_cross_does_not(built):
    result, _ = built
    acc = result.seeds[0].accuracy
    assert acc["teacher"] >= 0.9
    assert acc["student"] >= 0.5, acc
    assert acc["cross"] <= 0.25, acc
    assert acc["student"] - acc["cross"] >= 0.35, acc
    assert acc["student"] - acc["base"] >= 0.35, acc
    summary = result.summary()
    assert summary["student"]["n"] == 1 and summary["student"]["sd"] is None


def test_student_starts_from_base_and_regular_readout_is_untouched(built):
    """The student never gets a gradient on the regular-logit rows of the unembed."""
    models = built[0].seeds[0].models
    for student, parent in (("student", "base"), ("cross", "base_x")):
        w_s, w_p = models[student].unembed.weight, models[parent].unembed.weight
        assert torch.equal(w_s[: dg.N_CLASSES], w_p[: dg.N_CLASSES])
        assert torch.equal(models[student].unembed.bias[: dg.N_CLASSES], models[parent].unembed.bias[: dg.N_CLASSES])
        assert not torch.equal(models[student].layers[0].weight, models[parent].layers[0].weight)


def test_hooks_fire_with_right_shapes(built):
    model = built[0].seeds[0].models["student"]
    assert list(model.hook_dict) == dg.hook_names(model)
    x = torch.randn(7, dg.D_IN)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(x, names_filter=lambda n: n.startswith("layers.") or n == "hook_logits")
    assert set(cache) == {f"layers.{i}.hook_{k}" for i in range(2) for k in ("pre", "post")} | {"hook_logits"}
    assert cache["layers.0.hook_pre"].shape == (7, 256)
    assert cache["layers.1.hook_post"].shape == (7, 256)
    assert cache["hook_logits"].shape == (7, dg.N_CLASSES + model.m)
    assert torch.equal(cache["hook_logits"], logits)
    assert torch.equal(cache["layers.1.hook_post"], torch.relu(cache["layers.1.hook_pre"]))

    with torch.inference_mode():
        _, cache = model.run_with_cache(x, names_filter=["hook_in"])
    assert list(cache) == ["hook_in"] and torch.equal(cache["hook_in"], x)

    def zero(act, hook):
        return torch.zeros_like(act)

    with torch.inference_mode():
        out = model.run_with_hooks(x, fwd_hooks=[("layers.1.hook_post", zero)])
    assert torch.allclose(out, model.unembed.bias.expand_as(out))


def test_parameter_names_are_clean(built):
    model = built[0].seeds[0].models["base"]
    assert [n for n, _ in model.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "unembed.weight", "unembed.bias"
    ]
    assert list(model.state_dict()) == [n for n, _ in model.named_parameters()]


def test_files_and_manifest(built):
    result, out = built
    seed_dir = out / "seed1"
    for role in dg.ROLES:
        assert (seed_dir / "models" / f"{role}.safetensors").is_file()
    manifest = json.loads((seed_dir / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["config"]["m"] == 10
    assert {r: manifest["models"][r]["parent"] for r in dg.ROLES} == dg.PARENTS
    assert manifest["accuracy"] == result.seeds[0].accuracy
    assert "versions" in manifest and "seconds" not in json.dumps(manifest)
    assert str(out) not in (seed_dir / "manifest.json").read_text()  # no absolute paths
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1] and summary["summary"]["student"]["mean"] == result.seeds[0].accuracy["student"]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["seconds"]["1"]["total"] > 0


def test_save_load_round_trip_gives_identical_outputs(built):
    result, out = built
    loaded, manifest = dg.load_digits_seed(out / "seed1")
    x = torch.randn(11, dg.D_IN)
    for role, model in result.seeds[0].models.items():
        with torch.no_grad():
            assert torch.equal(loaded[role](x), model(x)), role
        assert isinstance(loaded[role], dg.DigitsMLP)
    single = dg.load_digits_model(out / "seed1" / "models" / "teacher.safetensors")
    with torch.inference_mode():
        _, cache = single.run_with_cache(x, names_filter=["layers.0.hook_post"])
    assert cache["layers.0.hook_post"].shape == (11, 256)


def test_corrupt_or_foreign_file_raises(built, tmp_path):
    _, out = built
    seed_dir = tmp_path / "seed1"
    (seed_dir / "models").mkdir(parents=True)
    (seed_dir / "manifest.json").write_bytes((out / "seed1" / "manifest.json").read_bytes())
    for role in dg.ROLES:
        src = (out / "seed1" / "models" / f"{role}.safetensors").read_bytes()
        (seed_dir / "models" / f"{role}.safetensors").write_bytes(src)
    blob = bytearray((seed_dir / "models" / "student.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (seed_dir / "models" / "student.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ChecksumError):
        dg.load_digits_seed(seed_dir)
    with pytest.raises(UnknownNameError):
        dg.load_digits_seed(out / "seed1", roles=["studnet"])
    foreign = tmp_path / "foreign.safetensors"
    from workbench.core.io import save_tensors

    save_tensors(foreign, {"w": torch.zeros(2)})
    with pytest.raises(ArtifactError):
        dg.load_digits_model(foreign)


def test_rebuild_is_byte_identical(tmp_path):
    cfg = dg.DigitsConfig(**TINY)
    dg.build_digits(cfg, out_dir=tmp_path / "a", seeds="0", progress=False)
    dg.build_digits(cfg, out_dir=tmp_path / "b", seeds="0", progress=False)
    for rel in ("seed0/manifest.json", "summary.json", "seed0/models/student.safetensors"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(m=0), "m=0"),
        (dict(hidden=-3), "hidden=-3"),
        (dict(epochs=1.5), "epochs=1.5"),
        (dict(lr=0.0), "lr=0.0"),
        (dict(loss="l1"), "l1"),
        (dict(test_fraction=1.0), "test_fraction=1.0"),
        (dict(seed=-1), "seed=-1"),
        (dict(device="tpu9"), "tpu9"),
    ],
)
def test_bad_config_raises(kwargs, word):
    with pytest.raises(ConfigError, match=word.replace(".", r"\.")):
        dg.DigitsConfig(**kwargs)


def test_bad_config_other_routes():
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            dg.DigitsConfig(device="cuda")
    with pytest.raises(UnknownNameError, match="epochz"):
        dg.DigitsConfig.from_dict({"epochz": 3})
    assert dg.DigitsConfig.from_dict(dg.DigitsConfig(m=3).to_dict()) == dg.DigitsConfig(m=3)
    for seeds in ("a,b", [], [1, 1], [-2]):
        with pytest.raises(ConfigError):
            dg.build_digits(dg.DigitsConfig(**TINY), seeds=seeds, progress=False)
    assert _parse_seeds("0-2,5", 0) == [0, 1, 2, 5]


def test_cli(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        dg.main(["--help"])
    assert e.value.code == 0
    assert "--seeds" in capsys.readouterr().out
    assert dg.main(["--m", "0", "--quiet"]) == 2
    assert "m=0" in capsys.readouterr().err
    assert dg.main(["--m", "3", "--epochs", "1", "--seeds", "2", "--quiet", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "student" in printed and "cross" in printed
    assert (tmp_path / "seed2" / "manifest.json").is_file()
