"""The public API: what notebooks and users import, one call shape, stable names."""

import importlib
import inspect
import json
import re
from pathlib import Path

import workbench

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["workbench.probe", "workbench.compare", "workbench.alignment", "workbench.screening",
                "workbench.localise", "workbench.bench", "workbench.organism.__main__", "workbench.organism.digits",
                "workbench.capture.__main__", "workbench.align_rows", "workbench.steering",
                "workbench.channels", "workbench.sweep"]


def test_every_public_name_resolves_and_survives_importing_the_entry_points():
    for module in ENTRY_POINTS:  # importing `workbench.compare` must not replace an API name by a module
        importlib.import_module(module)
    for name in workbench.__all__:
        obj = getattr(workbench, name)
        assert not inspect.ismodule(obj), name
    assert callable(workbench.compare_activations) and callable(workbench.capture_activations)


def test_analyses_take_lineage_then_inputs_or_trait_then_config():
    """One call shape: analysis(lineage, inputs, config) with a Trait where the analysis scores one."""
    shapes = {
        workbench.fit_probes: ["lineage", "inputs", "config"],
        workbench.trait_directions: ["lineage", "inputs", "prompts", "config"],
        workbench.run_alignment: ["lineage", "inputs", "config", "trait"],
        workbench.run_screening: ["lineage", "inputs", "trait", "retrain", "config"],
        workbench.rank_rows: ["lineage", "inputs", "trait", "config"],
        workbench.delta_patching: ["lineage", "trait", "config"],
        workbench.activation_patching: ["lineage", "trait", "config"],
        workbench.weight_deltas: ["lineage", "config"],
        workbench.compare_activations: ["lineage", "store", "config"],
        workbench.steering_vectors: ["lineage", "trait", "config"],
        workbench.run_channels: ["lineage", "inputs", "trait", "source", "config"],
        workbench.run_leaderboard: ["lineage", "inputs", "base_rows", "trait", "source", "config"],
    }
    for fn, expected in shapes.items():
        params = [p for p in inspect.signature(fn).parameters][: len(expected)]
        params = ["lineage" if p == "lin" else p for p in params]
        assert params == expected, (fn.__name__, params)


def test_notebooks_use_only_the_public_api():
    pattern = re.compile(r"^\s*(?:from|import)\s+(workbench[\w.]*)", re.M)
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        modules = set(pattern.findall(code))
        assert modules <= {"workbench", "workbench.organism"}, (path.name, modules - {"workbench", "workbench.organism"})


# --------------------------------------------------------------------------- bad input: a clear error, not a traceback


def test_swapped_or_mistyped_arguments_name_the_argument_and_the_fix():
    import pytest

    from workbench.core.examples import tiny_inputs, tiny_lineage

    lin, inputs = tiny_lineage(), tiny_inputs()
    with pytest.raises(workbench.ConfigError, match="compare's store must be an ActivationStore; got Inputs"):
        workbench.compare_activations(lin, inputs)
    with pytest.raises(workbench.ConfigError, match="trait_directions' prompts must be a ContrastPrompts.*contrast_prompts"):
        workbench.trait_directions(lin, inputs, workbench.DirectionsConfig())
    with pytest.raises(workbench.ConfigError, match="Unknown reader model 'nope'"):
        workbench.fit_probes(lin, inputs, workbench.ProbesConfig(readers=("nope",)))
    with pytest.raises(workbench.ConfigError, match="Patching's trait must be a Trait; got str"):
        workbench.delta_patching(lin, "owl", workbench.PatchConfig())
    with pytest.raises(workbench.ConfigError, match="ScreeningConfig.loss='sof'"):
        workbench.run_screening(lin, inputs, None, lambda kept: None, workbench.ScreeningConfig(loss="sof"))


def test_alignment_refuses_too_few_prompts_and_nan_scores():
    import numpy as np
    import pytest

    from workbench.analyses.alignment_stats import auroc
    from workbench.core.examples import tiny_lineage

    lin = tiny_lineage()
    rows = workbench.Inputs.from_sequences([[1], [2], [1], [2]], [[3], [4], [5], [6]],
                                           ["teacher", "teacher", "base", "base"], pad_id=0, prompt_ids=[0, 1, 0, 1])
    with pytest.raises(workbench.DataError, match="at least 5 prompts"):
        workbench.run_alignment(lin, rows, workbench.AlignmentConfig(n_random=1))
    with pytest.raises(workbench.DataError, match="1 of 4 alignment scores are NaN"):
        auroc(np.array([0.1, np.nan, 0.3, 0.4]), np.array([0, 0, 1, 1]))


def test_a_result_saved_before_the_result_contract_is_refused(tmp_path):
    import pytest
    import torch

    from workbench.core.io import atomic_write_json, save_tensors, sha256_file
    from workbench.core.provenance import SCHEMA_VERSION

    save_tensors(tmp_path / "directions.safetensors", {"teacher_minus_base/h0": torch.ones(2)})
    atomic_write_json(tmp_path / "directions.json", {  # the layout the hand-written save() used to write
        "schema_version": SCHEMA_VERSION, "kind": "directions", "versions": {},
        "data": {"command": "f()", "directions": {"teacher_minus_base": ["h0"]}, "detection": [], "shifts": [], "config": {}},
        "tensors": {"file": "directions.safetensors", "sha256": sha256_file(tmp_path / "directions.safetensors")}})
    with pytest.raises(workbench.ArtifactError, match="before the result contract"):
        workbench.DirectionResult.load(tmp_path)
