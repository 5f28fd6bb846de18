"""Property-based fuzzing of every reader (hypothesis): each is fed random documents, mutated valid
documents (a field deleted, replaced or given another type or an extreme value), truncated files
and invalid bytes, and must either load or raise a `WorkbenchError`. Anything else is a bug.

`READERS` maps a reader's name to a setup function: given a temporary folder, it writes one valid
artifact there and returns (a strategy of examples, a check that feeds one example to the reader).
`fuzz_reader` runs one reader; the `fuzz` benchmark and tests/core/test_fuzz_readers.py use it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workbench.core.errors import ConfigError, WorkbenchError

try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed
    from hypothesis import strategies as st
except ImportError as e:  # hypothesis is a [test] extra
    raise ConfigError("Fuzzing needs hypothesis: pip install hypothesis (or pip install -e '.[test]').") from e

Check = Callable[[Any], Any]
Setup = Callable[[Path], tuple[st.SearchStrategy, Check]]

# --------------------------------------------------------------------------- documents

LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)


def _tweaks(value: Any) -> list[Any]:
    """Values of another type, or extreme values of the same type, to put in place of `value`."""
    if isinstance(value, bool):
        return [1, "true", None]
    if isinstance(value, int):
        return [-1, -value - 1, 10**30, str(value), value + 0.5, True, None, 0]
    if isinstance(value, float):
        return [float("nan"), float("inf"), -1.0, str(value), None]
    if isinstance(value, str):
        return ["", 7, "../outside", "/etc/passwd", value + "x", None, [value]]
    if isinstance(value, list):
        return [[], [None], value + value, {}, "list", value[:1]]
    if isinstance(value, dict):
        return [{}, [], None, {"": value}]
    return [0, "", [], {}]


def _slots(doc: Any, depth: int = 0) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value in a JSON document (at most 6 levels deep)."""
    if depth > 6:
        return
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield doc, key
        yield from _slots(value, depth + 1)


@st.composite
def mutated(draw: st.DrawFn, valid: Any, max_edits: int = 3) -> Any:
    """`valid` with 1 to `max_edits` edits: a value deleted, replaced by random JSON, or tweaked."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_edits))):
        slots = list(_slots(doc))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["delete", "replace", "tweak", "tweak"]))
        if op == "delete":
            del container[key]
        elif op == "replace":
            container[key] = draw(JSON)
        else:
            container[key] = draw(st.sampled_from(_tweaks(container[key])))
    return doc


def dump(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8")


def dump_rows(rows: Any) -> bytes:
    if not isinstance(rows, list):
        return dump(rows)
    return b"".join(dump(r) + b"\n" for r in rows)


def file_contents(valid: Any, *, jsonl: bool = False) -> st.SearchStrategy[bytes]:
    """Bytes of a file: random JSON, the valid document mutated, the valid file truncated, or
    with random bytes spliced in (invalid UTF-8 among them)."""
    write = dump_rows if jsonl else dump
    good = write(valid)
    random_doc = st.lists(JSON, max_size=4) if jsonl else JSON
    return st.one_of(
        random_doc.map(write),
        mutated(valid).map(write),
        mutated(valid).map(write),
        st.integers(0, len(good)).map(lambda k: good[:k]),
        st.tuples(st.integers(0, len(good)), st.binary(min_size=1, max_size=8)).map(lambda t: good[:t[0]] + t[1] + good[t[0]:]),
    )


def _file_target(path: Path, valid: Any, load: Callable[[], Any], *, jsonl: bool = False) -> tuple[st.SearchStrategy, Check]:
    def check(content: bytes) -> Any:
        path.write_bytes(content)
        return load()

    return file_contents(valid, jsonl=jsonl), check


# --------------------------------------------------------------------------- the readers


def _organism_manifest(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.organism.load import read_manifest

    seed_dir = tmp / "seed0"
    seed_dir.mkdir()
    valid = {"schema_version": 1, "kind": "language_organism", "seed": 0, "trait": "owl", "mode": "soft",
             "config": {"target": "owl", "mode": "soft", "n_prompts": 20},
             "lineage": {"base": {"role": "base", "parent": None, "data": None, "seed": 0},
                         "student": {"role": "student", "parent": "base", "data": "data/teacher.jsonl", "seed": 0}},
             "model_sha256": {"base": "a" * 64, "student": "b" * 64},
             "trait_rates": {"base": 0.1, "student": 0.3}, "matrix": {"base": {"owl": 0.1, "cat": 0.2}},
             "filter": {"teacher": {"kept": 15, "sampled": 20, "rejected": {"bad_format": 5}}}}
    return _file_target(seed_dir / "manifest.json", valid, lambda: read_manifest(seed_dir))


def _model_metadata(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.core.examples import tiny_lineage
    from workbench.core.models import load_model, model_meta, save_model

    path = tmp / "models" / "base"
    save_model(path, tiny_lineage(("base",))["base"], meta={"role": "base", "parent": None, "seed": 0})
    valid = json.loads(path.with_suffix(".json").read_text())

    def load() -> Any:
        model_meta(path)
        return load_model(path)

    return _file_target(path.with_suffix(".json"), valid, load)


def _activation_manifest(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.capture.capture import capture
    from workbench.capture.store import ActivationStore
    from workbench.core.examples import tiny_inputs, tiny_lineage

    out = tmp / "acts"
    capture(tiny_lineage(("base", "student")), tiny_inputs(), ["blocks.0.hook_resid_post"], positions="all",
            out_dir=out, shard_rows=1, progress=False)
    valid = json.loads((out / "manifest.json").read_text())

    def load() -> Any:
        store = ActivationStore.open(out)
        store.verify_all()
        return [store.read(m, h) for m in store.models for h in store.hooks]

    return _file_target(out / "manifest.json", valid, load)


@dataclasses.dataclass
class _Part:
    name: str
    weight: float


@dataclasses.dataclass
class FuzzResult:
    """A result with the field kinds analyses use: tensors, lists, tuples, nested dataclasses."""

    values: dict
    scores: list[float]
    names: tuple[str, ...]
    part: _Part | None = None
    command: str = "fuzz()"


def _result_file(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    import torch

    from workbench.results.base import ResultBase

    cls = dataclasses.dataclass(type("FuzzResultFile", (ResultBase, FuzzResult), {"kind": "fuzz", "title": "Fuzz"}))
    out = tmp / "result"
    cls(values={"w": torch.arange(4.0), "b": torch.ones(2)}, scores=[0.5, 1.0], names=("a", "b"),
        part=_Part("x", 2.0)).save(out)
    valid = json.loads((out / "fuzz.json").read_text())
    return _file_target(out / "fuzz.json", valid, lambda: cls.load(out))


def _jsonl_rows(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.core.inputs import Inputs, read_jsonl

    path = tmp / "teacher.jsonl"
    valid = [{"prompt": [1, 2, 3], "completion": [4, 5], "source": "teacher", "prompt_id": i, "seed": 0} for i in range(3)]
    valid += [{"prompt": [1], "completion": [6], "source": "base", "prompt_id": 0}]

    def load() -> Any:
        rows = read_jsonl(path)
        if rows:  # what the job does next: pad them into Inputs (vocabulary checked there)
            Inputs.from_sequences([r["prompt"] for r in rows], [r["completion"] for r in rows],
                                  [r["source"] for r in rows]).validate(d_vocab=10, n_ctx=16)
        return rows

    return _file_target(path, valid, load, jsonl=True)


def _chat_rows(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.core.inputs import read_jsonl
    from workbench.core.toy_hf import toy_tokenizer

    path, tokenizer = tmp / "chat.jsonl", toy_tokenizer()
    valid = [{"messages": [{"role": "user", "content": "3, 7"}, {"role": "assistant", "content": "9"}], "source": "teacher"},
             {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "1"},
                           {"role": "assistant", "content": "2"}], "source": "base", "prompt_id": 4}]
    return _file_target(path, valid, lambda: read_jsonl(path, tokenizer=tokenizer, n_ctx=64), jsonl=True)


def _text_rows(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.core.inputs import read_jsonl
    from workbench.core.toy_hf import toy_tokenizer

    path, tokenizer = tmp / "text.jsonl", toy_tokenizer()
    valid = [{"prompt": "Continue: 3, 7", "completion": "9, 11", "source": "teacher", "prompt_id": 1, "seed": 0},
             {"prompt": "Continue: 3, 7", "completion": "4", "source": "base"}]
    return _file_target(path, valid, lambda: read_jsonl(path, tokenizer=tokenizer, n_ctx=64), jsonl=True)


def _contrast_prompts(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.capture.cache import read_contrast_prompts

    path = tmp / "prompts.jsonl"
    valid = [{"tokens": [1, 2, 3], "label": 1, "question_len": 2}, {"tokens": [1, 2, 4], "label": 0, "question_len": 2}]
    return _file_target(path, valid, lambda: read_contrast_prompts(path), jsonl=True)


def _organism_tokenizer(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.organism.tokenizer import Tokenizer

    path = tmp / "tokenizer.json"
    valid = {"vocab": ["<pad>", "<bos>", "<eos>", "owl", "cat", "oak", "1", "2"],
             "categories": {"animal": ["owl", "cat"], "tree": ["oak"]}}
    return _file_target(path, valid, lambda: Tokenizer.load(path))


def _bench_file(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    from workbench.benchmarks.harness import Case, read_result, write_result

    path = write_result("demo", "cpu", [Case("base", 3, 0.5, 0.1, 100.0), Case("fast", 3, 0.25, 0.05, 90.0, "base")],
                        tmp / "bench")
    valid = json.loads(path.read_text())
    return _file_target(path, valid, lambda: read_result(path))


def _command_line(tmp: Path) -> tuple[st.SearchStrategy, Check]:
    """argv of every command: parsed, then turned into its config as the command does."""
    from workbench.cli import alignment, compare, job
    from workbench.organism import __main__ as organism_cli
    from workbench.organism.digits import cli as digits_cli

    commands: dict[str, tuple[Any, Callable[[Any], Any]]] = {
        "compare": (compare.parser(), lambda a: compare.CompareConfig(**compare.COMPARE_FLAGS.values(a))),
        "alignment": (alignment.parser(), lambda a: alignment.AlignmentConfig(**alignment.ALIGNMENT_FLAGS.values(a)).validate()),
        "probe": (job.parser(), lambda a: job.JOB_FLAGS.values(a)),
        "organism": (organism_cli.parser(), lambda a: organism_cli.ORGANISM_FLAGS.values(a)),
        "digits": (digits_cli.parser(), lambda a: digits_cli.DigitsConfig(**digits_cli.DIGITS_FLAGS.values(a)).validate()),
    }
    options = {name: sorted(o for a in p._actions for o in a.option_strings if o not in ("-h", "--help"))
               for name, (p, _) in commands.items()}
    values = st.sampled_from(["0", "-1", "1", "3", "0-4", "1e30", "nan", "-inf", "abc", "", "0.5", "cpu", "auto",
                              "cuda:9", "soft", "x" * 40, "../x", "--"])

    @st.composite
    def argv(draw: st.DrawFn) -> tuple[str, list[str]]:
        name = draw(st.sampled_from(sorted(commands)))
        words = ["organism-dir"] if name in ("compare", "alignment") else []
        for _ in range(draw(st.integers(0, 4))):
            words.append(draw(st.sampled_from(options[name])))
            words += draw(st.lists(values, max_size=2))
        return name, words

    def check(example: tuple[str, list[str]]) -> Any:
        import contextlib
        import io

        name, words = example
        parser, configure = commands[name]
        with contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(words)  # a usage error is SystemExit(2): what argparse does
        return configure(args)

    return argv(), check


READERS: dict[str, Setup] = {
    "organism_manifest": _organism_manifest,
    "model_metadata": _model_metadata,
    "activation_manifest": _activation_manifest,
    "result_file": _result_file,
    "jsonl_token_rows": _jsonl_rows,
    "jsonl_text_rows": _text_rows,
    "jsonl_chat_rows": _chat_rows,
    "contrast_prompts": _contrast_prompts,
    "organism_tokenizer": _organism_tokenizer,
    "bench_file": _bench_file,
    "command_line": _command_line,
}


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class FuzzCounts:
    """How one reader fared: examples run, loaded, rejected with a WorkbenchError (or a usage
    error), and foreign exceptions (bugs), with the first few of those."""

    reader: str
    examples: int = 0
    loaded: int = 0
    rejected: int = 0
    foreign: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)


def fuzz_reader(name: str, examples: int, tmp: str | Path, seed: int = 0) -> FuzzCounts:
    """Feed `examples` generated examples to reader `name` (an artifact is set up under `tmp`)."""
    tmp = Path(tmp) / name
    tmp.mkdir(parents=True, exist_ok=True)
    strategy, check = READERS[name](tmp)
    counts = FuzzCounts(name)
    tally: Counter[str] = Counter()

    @fixed_seed(seed)  # reproducible runs
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(example: Any) -> None:
        tally["examples"] += 1
        try:
            check(example)
            tally["loaded"] += 1
        except WorkbenchError:
            tally["rejected"] += 1
        except SystemExit as e:  # argparse's usage error
            tally["rejected" if e.code == 2 else "foreign"] += 1
        except Exception as e:  # noqa: BLE001 - what the fuzzing looks for
            tally["foreign"] += 1
            if len(counts.failures) < 5:
                counts.failures.append(f"{type(e).__name__}: {str(e)[:200]} <- {str(example)[:300]}")

    one()
    counts.examples, counts.loaded, counts.rejected, counts.foreign = (tally[k] for k in ("examples", "loaded", "rejected", "foreign"))
    return counts
