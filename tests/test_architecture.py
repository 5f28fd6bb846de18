"""The package's data flows one way: the organism is a source that no analysis imports, and
analyses never load a model themselves (DESIGN.md section 2). Checked on the source with `ast`,
so an import inside a function counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
MODULES = sorted(PACKAGE.rglob("*.py"))

MAY_IMPORT_ORGANISM = ("organism/", "cli/", "benchmarks/")
"""Sources, the commands that compose them with analyses, and the benchmarks (which time the organism)."""
ENTRY_POINTS = {f"{name}.py" for name in ("probe", "compare", "alignment", "align_rows", "screening", "localise", "bench")}
"""Top-level `python -m workbench.X` shims."""

ANALYSIS = ("analyses/", "capture/", "results/", "trait.py", "report.py")
LOADERS = {"load_model", "load_lineage", "load_seed", "boot_transformers", "from_pretrained", "from_hf_dirs",
           "from_organism", "from_jsonl_dir", "safe_load"}
"""Functions that load a model from disk; `Lineage.from_*` constructors count too."""


def rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the tree, relative imports resolved against `module`."""
    out = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]  # `from workbench import organism`
    return out


def module_name(path: Path) -> str:
    parts = ["workbench", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def organism_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{rel(path)}:{line} imports {name}" for line, name in imported_modules(tree, module_name(path))
            if name == "workbench.organism" or name.startswith("workbench.organism.")]


def loader_calls(source: str, label: str) -> list[str]:
    """`label:line calls f` for every call of a model loader in `source`."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        lineage_ctor = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "Lineage" \
            and f.attr.startswith("from_")
        if name in LOADERS or lineage_ctor:
            found.append(f"{label}:{node.lineno} calls {ast.unparse(f)}")
    return found


def test_the_package_has_modules_to_check():
    names = {rel(p) for p in MODULES}
    assert {"trait.py", "analyses/patching/__init__.py", "organism/trait.py", "cli/organism_runs.py"} <= names


def test_nothing_outside_sources_and_commands_imports_the_organism():
    bad = [hit for p in MODULES if not rel(p).startswith(MAY_IMPORT_ORGANISM) and rel(p) not in ENTRY_POINTS
           for hit in organism_imports(p)]
    assert not bad, "modules outside organism/, cli/ and benchmarks/ import the organism:\n" + "\n".join(bad)


def test_analyses_never_load_models():
    bad = [hit for p in MODULES if rel(p).startswith(ANALYSIS)
           for hit in loader_calls(p.read_text(encoding="utf-8"), rel(p))]
    assert not bad, "analysis modules load models (a source or a command should):\n" + "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("import workbench.organism.tokenizer", 1),
    ("def f():\n    from workbench.organism.training import distill_student", 1),
    ("from workbench import organism", 1),
    ("from ..organism import corpus", 1),
    ("from workbench.trait import Trait", 0),
])
def test_the_import_check_sees_every_form(source, expected):
    path = PACKAGE / "analyses" / "_probe_module.py"  # resolved as workbench.analyses._probe_module
    tree = ast.parse(source)
    hits = [n for _, n in imported_modules(tree, module_name(path)) if n.startswith("workbench.organism")]
    assert bool(hits) == bool(expected)


@pytest.mark.parametrize("source, expected", [
    ("Lineage.from_hf_dirs(dirs)", True),
    ("load_model(path)", True),
    ("TransformerBridge.boot_transformers(p)", True),
    ("AutoModelForCausalLM.from_pretrained(p)", True),
    ("AlignmentConfig.from_dict(d)", False),
    ("copy_model(lin['base'])", False),
])
def test_the_loader_check_sees_calls(source, expected):
    assert bool(loader_calls(source, "m.py")) == expected
