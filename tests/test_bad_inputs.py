"""The bad-input matrix: each class of bad input (wrong type, out of range, wrong shape after a
checksum update, file instead of folder, read-only folder, full disk, invalid UTF-8, future schema
version, a path out of the artifact) at each reader, writer and command gives its named error
(type + message fragment), and nothing outside the artifact changes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.core.errors import ArtifactError, DataError, SchemaError, WorkbenchError
from workbench.core.examples import tiny_inputs, tiny_lineage
from workbench.core.io import atomic_write_json, load_tensors, save_tensors

ORGANISM_MANIFEST = {"schema_version": 1, "kind": "language_organism", "seed": 0, "trait": "owl", "mode": "soft",
                     "config": {"target": "owl", "mode": "soft"}, "trait_rates": {"base": 0.1},
                     "filter": {"teacher": {"kept": 15, "sampled": 20, "rejected": {"bad_format": 5}}}}
TOKEN_ROWS = [{"prompt": [1, 2], "completion": [3], "source": "teacher", "prompt_id": 0},
              {"prompt": [1], "completion": [4, 5], "source": "base", "prompt_id": 0}]


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under `root` (outside `skip`): what must not change."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (skip is None or not p.is_relative_to(skip)):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def bystander(tmp_path: Path) -> Path:
    """Files beside every artifact, which no failure may touch."""
    other = tmp_path / "bystander"
    other.mkdir()
    (other / "keep.safetensors").write_bytes(b"not yours")
    (other / "notes.json").write_text('{"a": 1}')
    return other


# --------------------------------------------------------------------------- the artifacts


def organism_seed(tmp: Path, edit: Callable[[dict], Any] | None = None) -> Path:
    seed = tmp / "org" / "seed0"
    (seed / "models").mkdir(parents=True)
    (seed / "data").mkdir()
    for name in ("teacher", "base"):
        (seed / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TOKEN_ROWS))
    manifest = json.loads(json.dumps(ORGANISM_MANIFEST))
    if edit is not None:
        edit(manifest)
    atomic_write_json(seed / "manifest.json", manifest)
    return seed


def saved_model(tmp: Path) -> Path:
    from workbench.core.models import save_model

    path = tmp / "model" / "base"
    save_model(path, tiny_lineage(("base",))["base"], meta={"role": "base"})
    return path


def edit_json(path: Path, edit: Callable[[dict], Any]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def activation_store(tmp: Path) -> Path:
    from workbench.capture.capture import capture

    out = tmp / "acts"
    capture(tiny_lineage(("base", "student")), tiny_inputs(), ["blocks.0.hook_resid_post"], positions="all",
            out_dir=out, shard_rows=1, progress=False)
    return out


def write_rows(tmp: Path, rows: list[Any] | bytes) -> Path:
    path = tmp / "rows.jsonl"
    path.write_bytes(rows if isinstance(rows, bytes) else b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    return path


# --------------------------------------------------------------------------- readers


def _read_rows(tmp: Path, rows: list[Any] | bytes) -> Any:
    from workbench.core.inputs import read_jsonl

    return read_jsonl(write_rows(tmp, rows))


def _wrong_shape_model(tmp: Path) -> Any:
    """Weights of another shape, the sidecar's sha256 updated to match: caught before booting."""
    from workbench.core.models import load_model

    path = saved_model(tmp)
    weights = load_tensors(path.with_suffix(".safetensors"))
    weights["embed.weight"] = torch.zeros(12, 8)
    sha = save_tensors(path.with_suffix(".safetensors"), weights)
    edit_json(path.with_suffix(".json"), lambda d: d.update(sha256=sha))
    return load_model(path)


def _model_edit(edit: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from workbench.core.models import load_model

        path = saved_model(tmp)
        edit_json(path.with_suffix(".json"), edit)
        return load_model(path)

    return run


def _store_edit(edit: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from workbench.capture.store import ActivationStore

        out = activation_store(tmp)
        edit_json(out / "manifest.json", edit)
        return ActivationStore.open(out).read("student", "blocks.0.hook_resid_post")

    return run


def _manifest_edit(edit: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from workbench.organism.load import read_manifest

        return read_manifest(organism_seed(tmp, edit))

    return run


def _result_edit(edit: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from workbench.results.base import read_result_files, write_result_files

        write_result_files(tmp / "res", "demo", {"x": [1.0, 2.0]}, {"w": torch.ones(2)}, tensor_fields=["w"])
        edit_json(tmp / "res" / "demo.json", edit)
        return read_result_files(tmp / "res", "demo")

    return run


def _bench_edit(edit: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from workbench.benchmarks.harness import Case, read_result, write_result

        path = write_result("demo", "cpu", [Case("a", 3, 0.5, 0.1, 10.0)], tmp / "bench")
        edit_json(path, edit)
        return read_result(path)

    return run


def _digits_outside(tmp: Path) -> Any:
    """A digits manifest naming ../ is refused before any model file is read."""
    from workbench.organism.digits import files

    seed = tmp / "digits" / "seed0"
    seed.mkdir(parents=True)
    (tmp / "digits" / "secret.safetensors").write_bytes(b"x")
    atomic_write_json(seed / "manifest.json", {"kind": "workbench.digits.seed", "schema_version": 1, "seed": 0,
                                               "models": {"base": {"file": "../secret.safetensors", "sha256": "0" * 64}}})
    reads: list[Any] = []
    original = files.load_tensors
    files.load_tensors = lambda *a, **k: reads.append(a) or original(*a, **k)  # type: ignore[assignment]
    try:
        return files.load_digits_seed(seed, roles=["base"])
    finally:
        files.load_tensors = original  # type: ignore[assignment]
        assert reads == [], "the model file was read before its path was refused"


def _read_prompts(tmp: Path, content: bytes) -> Any:
    from workbench.capture.cache import read_contrast_prompts

    (tmp / "prompts.jsonl").write_bytes(content)
    return read_contrast_prompts(tmp / "prompts.jsonl")


def _bad_tokenizer(tmp: Path) -> Any:
    from workbench.organism.tokenizer import Tokenizer

    atomic_write_json(tmp / "tokenizer.json", {"vocab": ["<pad>", "owl"], "categories": {"animal": ["owl", "elk"]}})
    return Tokenizer.load(tmp / "tokenizer.json")


def _utf8_manifest(tmp: Path) -> Any:
    from workbench.organism.load import read_manifest

    seed = organism_seed(tmp)
    (seed / "manifest.json").write_bytes(b'{"seed": 0, "trait": "\xff\xfe"}')
    return read_manifest(seed)


READ_CASES: dict[str, tuple[Callable[[Path], Any], type[Exception], str]] = {
    # wrong type / out of range (JSONL rows)
    "jsonl prompt: 7": (lambda t: _read_rows(t, [{"prompt": 7, "completion": [1], "source": "teacher"}]),
                        SchemaError, "rows.jsonl:1: field prompt = 7"),
    "jsonl prompt_id 'abc'": (lambda t: _read_rows(t, [{**TOKEN_ROWS[0], "prompt_id": "abc"}]),
                              SchemaError, "field prompt_id = 'abc'"),
    "jsonl token id 10**30": (lambda t: _read_rows(t, [{**TOKEN_ROWS[0], "completion": [10**30]}]),
                              SchemaError, "field completion.0 = 1000000000000000000000000000000"),
    "jsonl negative token id": (lambda t: _read_rows(t, [{**TOKEN_ROWS[0], "prompt": [-3]}]),
                                SchemaError, "field prompt.0 = -3"),
    "jsonl chat content 5": (lambda t: _read_rows(t, [{"messages": [{"role": "user", "content": 5},
                                                                    {"role": "assistant", "content": "x"}],
                                                       "source": "teacher"}]),
                             SchemaError, "field messages.0.content = 5"),
    "jsonl invalid utf-8": (lambda t: _read_rows(t, b'{"prompt": [1], "completion": [2], "source": "t"}\n{"x": "\xff"}\n'),
                            DataError, "rows.jsonl:2 is not valid UTF-8"),
    # organism manifest
    "manifest negative count": (_manifest_edit(lambda m: m["filter"]["teacher"].update(kept=-5)),
                                SchemaError, "field filter.teacher.kept = -5"),
    "manifest seed '0'": (_manifest_edit(lambda m: m.update(seed="0")), SchemaError, "field seed = '0'"),
    "manifest future version": (_manifest_edit(lambda m: m.update(schema_version=7)),
                                SchemaError, "organism manifest schema version 7; this workbench reads version 1"),
    "manifest invalid utf-8": (_utf8_manifest, ArtifactError, "is not valid UTF-8"),
    # model metadata
    "model d_model '8'": (_model_edit(lambda d: d["native_config"].update(d_model="8")),
                          SchemaError, "field native_config.d_model = '8'"),
    "model no native_config": (_model_edit(lambda d: d.pop("native_config")),
                               SchemaError, "field native_config is missing"),
    "model future version": (_model_edit(lambda d: d.update(schema_version=2)),
                             SchemaError, "model sidecar schema version 2"),
    "model wrong shape, checksum updated": (_wrong_shape_model, SchemaError, "embed.weight has shape (12, 8)"),
    # activation manifest
    "store model without shards": (_store_edit(lambda m: m.update(shards=[s for s in m["shards"] if s["model"] != "student"])),
                                   SchemaError, "shards of model 'student' at hook 'blocks.0.hook_resid_post' cover rows [0, 0)"),
    "store n_rows '2'": (_store_edit(lambda m: m.update(n_rows="2")), SchemaError, "field n_rows = '2'"),
    "store future version": (_store_edit(lambda m: m.update(store_schema_version=3)),
                             SchemaError, "activation-store schema version 3"),
    "store shard path ../": (_store_edit(lambda m: m["shards"][0].update(path="../x.safetensors")),
                             SchemaError, "points outside the artifact directory"),
    # results and benchmarks
    "result data a list": (_result_edit(lambda r: r.update(data=[1])), SchemaError, "field data = [1]"),
    "result future version": (_result_edit(lambda r: r.update(schema_version=5)), SchemaError, "result schema version 5"),
    "result tensor file ../": (_result_edit(lambda r: r["tensors"].update(file="../w.safetensors")),
                               SchemaError, "field tensors.file = '../w.safetensors'"),
    "bench runs -1": (_bench_edit(lambda b: b["cases"][0].update(runs=-1)), SchemaError, "field cases.0.runs = -1"),
    "bench future version": (_bench_edit(lambda b: b.update(schema_version=9)), SchemaError, "benchmark file schema version 9"),
    # contrastive prompts (--prompts) and the organism tokenizer
    "prompts label 'abc'": (lambda t: _read_prompts(t, b'{"tokens": [1, 2], "label": "abc"}\n'),
                            SchemaError, "prompts.jsonl:1: field label = 'abc'"),
    "prompts invalid utf-8": (lambda t: _read_prompts(t, b'{"tokens": [1], "label": 1}\n\xff\n'),
                              DataError, "prompts.jsonl:2 is not valid UTF-8"),
    "tokenizer category word not in vocab": (_bad_tokenizer, SchemaError, "categories name words not in vocab: ['elk']"),
    # digits manifest
    "digits model path ../": (_digits_outside, SchemaError, "field models.base.file = '../secret.safetensors'"),
}


@pytest.mark.parametrize("case", list(READ_CASES))
def test_bad_input_gives_its_named_error_and_changes_nothing(case, tmp_path, bystander):
    make, error, fragment = READ_CASES[case]
    before = tree_digest(bystander)
    with pytest.raises(error, match=None) as info:
        make(tmp_path)
    assert fragment in str(info.value), str(info.value)
    assert isinstance(info.value, WorkbenchError)
    assert tree_digest(bystander) == before


# --------------------------------------------------------------------------- writers


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _eacces(*args: Any, **kwargs: Any) -> None:
    raise PermissionError(errno.EACCES, "Permission denied")


WRITERS: dict[str, Callable[[Path], Any]] = {
    "result": lambda d: __import__("workbench.results.base", fromlist=["x"]).write_result_files(
        d, "demo", {"x": [3.0]}, {"w": torch.zeros(3)}, tensor_fields=["w"]),
    "json": lambda d: atomic_write_json(d / "demo.json", {"x": 3}),
    "bench": lambda d: __import__("workbench.benchmarks.harness", fromlist=["x"]).write_result(
        "demo", "cpu", [], d),
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("fault", ["full disk on write", "full disk on mkdir", "read-only (mocked)", "read-only folder",
                                   "file instead of folder"])
def test_a_failed_write_names_the_path_and_leaves_the_previous_artifact(writer, fault, tmp_path, bystander,
                                                                          monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    WRITERS[writer](out)  # the previous artifact
    previous = tree_digest(out)
    before = tree_digest(bystander)
    target, fragment = out, "Cannot"
    if fault == "full disk on write":
        monkeypatch.setattr(os, "fsync", _enospc)
        fragment = "the disk is full"
    elif fault == "full disk on mkdir":
        target = out / "new"
        monkeypatch.setattr(Path, "mkdir", _enospc)
        fragment = f"Cannot create directory {target}: No space left on device (the disk is full"
    elif fault == "read-only (mocked)":
        monkeypatch.setattr(os, "fsync", _eacces)
        fragment = "the folder is not writable"
    elif fault == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root ignores folder permissions")
        out.chmod(0o555)
        fragment = "the folder is not writable"
    else:
        (tmp_path / "a-file").write_text("I am a file")
        target = tmp_path / "a-file" / "sub"
        fragment = "a-file"
    try:
        with pytest.raises(ArtifactError) as info:
            WRITERS[writer](target)
    finally:
        out.chmod(0o755)
    assert fragment in str(info.value), str(info.value)
    assert tree_digest(out) == previous  # the previous artifact intact, no temp file left
    assert tree_digest(bystander) == before


# --------------------------------------------------------------------------- commands


COMMANDS = {
    "compare": lambda org: ["--organism", str(org), "--seeds", "0"],
    "localise": lambda org: [str(org)],
    "alignment": lambda org: ["--organism", str(org), "--seeds", "0"],
    "screening": lambda org: ["--organism", str(org), "--seeds", "0"],
    "probe": lambda org: ["--organism", str(org), "--seed", "0", "--quiet"],
}


def _main(name: str) -> Callable[[list[str]], int]:
    module = {"compare": "workbench.cli.compare", "localise": "workbench.cli.localise", "alignment": "workbench.cli.alignment",
              "screening": "workbench.cli.screening", "probe": "workbench.cli.job"}[name]
    return __import__(module, fromlist=["main"]).main


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("bad", ["wrong type", "future version", "invalid utf-8"])
def test_every_command_answers_a_bad_manifest_with_one_line_and_exit_2(command, bad, tmp_path, bystander, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)  # default --out folders land here
    edit = {"wrong type": lambda m: m.update(seed="zero"), "future version": lambda m: m.update(schema_version=99),
            "invalid utf-8": None}[bad]
    seed = organism_seed(tmp_path, edit)
    if bad == "invalid utf-8":
        (seed / "manifest.json").write_bytes(b'{"seed": "\xff"}')
    before = tree_digest(bystander)
    assert _main(command)(COMMANDS[command](seed.parent)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert {"wrong type": "field seed = 'zero'", "future version": "schema version 99",
            "invalid utf-8": "not valid UTF-8"}[bad] in err
    assert str(seed / "manifest.json") in err
    assert tree_digest(bystander) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_out_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    """`--out` naming a folder under a file is an error before any model loads: the seed's models
    (absent here) are never read, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    seed = organism_seed(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = tree_digest(tmp_path)
    assert _main(command)([*COMMANDS[command](seed.parent), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and str(blocker) in err
    assert tree_digest(tmp_path) == before


def test_a_mistyped_organism_writes_no_out_folder(tmp_path, capsys, monkeypatch):
    """The organism is checked before --out is made: a typo leaves no empty result folder behind."""
    monkeypatch.chdir(tmp_path)
    assert _main("compare")(["--organism", str(tmp_path / "typo"), "--seeds", "0"]) == 2
    assert "No organism" in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists()
