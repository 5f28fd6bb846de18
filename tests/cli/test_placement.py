"""`--device-map` and `--max-memory`: parsed before any work, refused for an organism, and a lineage
that does not fit the budget ends the main job with exit 2 and the bytes needed and available."""

from __future__ import annotations

import json

import pytest

from workbench.cli.job import main
from workbench.cli.placement import memory_entry, read_device_map
from workbench.core.errors import ArtifactError, ConfigError

pytest.importorskip("transformers")


def test_memory_entries():
    assert memory_entry("0=70GiB") == (0, 70 * 2**30)
    assert memory_entry("cuda:1=1e9") == (1, 10**9)
    assert memory_entry("cpu=512MiB") == ("cpu", 512 * 2**20)
    for bad in ("70GiB", "=1GiB", "cpu=none", "cpu=lots", "disk=1GiB"):
        with pytest.raises(Exception, match="max-memory|Device|size|disk"):
            memory_entry(bad)


def test_device_map_files(tmp_path):
    assert read_device_map("auto") == "auto"
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"model.layers.0": "cpu", "lm_head": "cpu"}))
    assert read_device_map(str(good)) == {"model.layers.0": "cpu", "lm_head": "cpu"}
    with pytest.raises(ArtifactError, match="neither 'auto' nor a JSON file"):
        read_device_map(str(tmp_path / "missing.json"))
    bad = tmp_path / "disk.json"
    bad.write_text(json.dumps({"": "disk"}))
    with pytest.raises(ConfigError, match="meta device"):
        read_device_map(str(bad))


def test_job_refuses_a_device_map_for_an_organism(tmp_path, capsys):
    assert main(["--organism", str(tmp_path / "none"), "--device-map", "auto", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    assert "--device-map and --max-memory place Hugging Face directories" in capsys.readouterr().err


def test_job_names_the_bytes_when_the_models_do_not_fit(tmp_path, capsys):
    from workbench.core.toy_hf import ToySpec, write_toy_lineage

    toy = write_toy_lineage(tmp_path / "toy", ToySpec(n_prompts=12, lora_student=False))
    code = main(["--base", toy.dirs["base"], "--teacher", toy.dirs["teacher"], "--data", toy.data, "--max-rows", "10",
                 "--max-memory", "cpu=1KiB", "--device-map", "auto", "--quiet", "--out", str(tmp_path / "out"),
                 "--sections", "weights"])
    err = capsys.readouterr().err
    assert code == 2 and "The models do not fit" in err and "(1024 bytes)" in err and "--device-map auto" in err


def test_job_runs_with_an_explicit_device_map(tmp_path, capsys):
    from workbench.core.toy_hf import ToySpec, write_toy_lineage

    toy = write_toy_lineage(tmp_path / "toy", ToySpec(n_prompts=12, lora_student=False))
    cpu_map = tmp_path / "map.json"
    cpu_map.write_text(json.dumps({"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                                   "model.layers.1": "cpu", "model.norm": "cpu", "lm_head": "cpu"}))
    code = main(["--base", toy.dirs["base"], "--teacher", toy.dirs["teacher"], "--data", toy.data, "--max-rows", "10",
                 "--device-map", str(cpu_map), "--max-memory", "cpu=1GiB", "--quiet", "--out", str(tmp_path / "out"),
                 "--readers", "base", "--sections", "weights"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "report.json").is_file()


def test_capture_takes_the_same_placement_flags(tmp_path, capsys):
    """`python -m workbench.capture` places Hugging Face directories with the job's flags: a map over
    the cpu captures the same bytes as no map; an organism with a map is refused before loading."""
    from workbench.capture.store import ActivationStore
    from workbench.cli.capture import main as capture_main
    from workbench.core.toy_hf import ToySpec, write_toy_lineage

    toy = write_toy_lineage(tmp_path / "toy", ToySpec(n_prompts=12, lora_student=False))
    cpu_map = tmp_path / "map.json"
    cpu_map.write_text(json.dumps({"": "cpu"}))
    common = ["--base", toy.dirs["base"], "--data", toy.data, "--max-rows", "8", "--hooks", "blocks.1.hook_resid_post",
              "--quiet"]
    assert capture_main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert capture_main([*common, "--device-map", str(cpu_map), "--max-memory", "cpu=4GiB",
                         "--out", str(tmp_path / "mapped")]) == 0, capsys.readouterr().err
    plain, mapped = ActivationStore.open(tmp_path / "plain"), ActivationStore.open(tmp_path / "mapped")
    a = plain.read("base", "blocks.1.hook_resid_post")
    assert a.shape[0] == 8 and a.equal(mapped.read("base", "blocks.1.hook_resid_post"))
    assert capture_main(["--organism", str(tmp_path), "--data", toy.data, "--hooks", "hook_embed", "--device-map", "auto",
                         "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--device-map and --max-memory place Hugging Face directories" in capsys.readouterr().err
