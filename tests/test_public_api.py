"""The public API: what notebooks and users import, one call shape, stable names."""

import importlib
import inspect
import json
import re
from pathlib import Path

import workbench

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["workbench.probe", "workbench.compare", "workbench.alignment", "workbench.screening",
                "workbench.localise", "workbench.bench", "workbench.organism.__main__", "workbench.organism.digits"]


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
        workbench.delta_patching: ["lineage", "trait", "config"],
        workbench.activation_patching: ["lineage", "trait", "config"],
        workbench.weight_deltas: ["lineage", "config"],
        workbench.compare_activations: ["lineage", "store", "config"],
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
