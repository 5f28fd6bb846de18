"""`python -m workbench.organism export`: an organism seed as GPT-2 Hugging Face directories. The
exported models compute the organism's logits (through `Lineage.from_hf_dirs`), the tokenizer keeps
every token id, the chat template renders the organism's trait prompts, and the main job gives
the same report numbers through either door (two doors, same numbers)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from workbench.core.hf_trait import hf_trait  # noqa: E402
from workbench.core.lineage import Lineage  # noqa: E402
from workbench.core.trait_spec import read_channel_ids, read_trait_spec  # noqa: E402
from workbench.organism.__main__ import main as organism_main  # noqa: E402
from workbench.organism.export import ExportError, gpt2_config, gpt2_state_dict, organism_questions  # noqa: E402
from workbench.organism.load import load_seed  # noqa: E402

COMPARED = {"probes", "directions", "compare", "weights", "delta_patching", "activation_patching", "alignment"}


@pytest.fixture(scope="module")
def exported(tiny_organism, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert organism_main(["export", str(tiny_organism.directory), str(out)]) == 0
    return tiny_organism.directory, out


def test_exported_models_give_the_organisms_logits(exported):
    seed_dir, out = exported
    seed = load_seed(seed_dir)
    names = seed.lineage.names
    assert {"base", "teacher", "student", "control"} <= set(names)
    hf = Lineage.from_hf_dirs({n: out / n for n in names})
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, len(seed.tokenizer), (3, seed.lineage.n_ctx), generator=gen)
    for name in names:
        config = json.loads((out / name / "config.json").read_text())
        native = seed.lineage[name].cfg
        assert config["activation_function"] == native.act_fn and config["layer_norm_epsilon"] == native.eps
        assert config["tie_word_embeddings"] is False
        with torch.no_grad():
            for x in (tokens, seed.trait.tokens):
                assert (hf[name](x) - seed.lineage[name](x)).abs().max().item() < 1e-5, name


def test_tokenizer_chat_template_and_trait_reproduce_the_organism(exported):
    from transformers import AutoTokenizer

    seed_dir, out = exported
    seed = load_seed(seed_dir)
    tok = AutoTokenizer.from_pretrained(str(out / "base"), local_files_only=True)
    row = json.loads((out / "data" / "teacher.jsonl").read_text().splitlines()[0])
    ids = [*row["prompt"], *row["completion"]]
    assert tok(seed.tokenizer.decode(ids), add_special_tokens=False)["input_ids"] == ids
    assert tok.pad_token_id == seed.tokenizer.pad_id and tok.bos_token_id == seed.tokenizer.bos_id
    trait = seed.trait
    spec = read_trait_spec(out / "trait.json")  # what --trait reads: the organism's trait exactly
    assert spec == trait
    # the Hugging Face route: the organism's questions through the exported chat template
    rebuilt = hf_trait(tok, trait.target, category=trait.category, questions=organism_questions(trait.category),
                       answers=list(seed.tokenizer.categories[trait.category]))
    assert rebuilt.prompts == trait.prompts and rebuilt.answers == trait.answers and rebuilt.single_token
    assert read_channel_ids(out / "distillation.json") == seed.channel_ids


def test_export_refuses_what_gpt2_cannot_express(tiny_organism):
    seed = load_seed(tiny_organism.directory, ["base"])
    bridge = seed.lineage["base"]
    native = dict(bridge.workbench_native_config)
    for bad, field in ((dict(normalization_type="RMS"), "normalization_type"), (dict(act_fn="silu"), "act_fn"),
                       (dict(d_head=native["d_head"] + 1), "d_head"), (dict(gated_mlp=True), "gated_mlp")):
        with pytest.raises(ExportError, match=field):
            gpt2_config({**native, **bad}, 1e-5, seed.tokenizer)
    sd = dict(bridge.state_dict())
    with pytest.raises(ExportError, match="unembed.bias"):
        gpt2_state_dict({**sd, "unembed.bias": torch.ones_like(sd["unembed.bias"])}, native["n_layers"])
    with pytest.raises(ExportError, match="no place for"):
        gpt2_state_dict({**sd, "blocks.0.mlp.gate.weight": torch.zeros(2, 2)}, native["n_layers"])
    assert organism_main(["export", str(tiny_organism.directory), str(tiny_organism.directory / "x")]) == 2


def test_job_takes_trait_and_channel_only_with_hf_directories(tiny_organism, tmp_path, capsys):
    from workbench.cli.job import main as job

    code = job(["--organism", str(tiny_organism.directory.parent), "--out", str(tmp_path), "--quiet",
                "--trait", str(tmp_path / "trait.json")])
    assert code == 2 and "--trait and --channel-ids are for Hugging Face directories" in capsys.readouterr().err


def test_two_doors_same_numbers(exported, tmp_path, capsys):
    """The main job through --organism and through the exported directories: every number both
    reports carry agrees within 1e-5, section by section, except the random-direction controls, which
    depend on how the weights are stored (see workbench.organism.two_doors). Screening differs by
    design: the organism door retrains students, the Hugging Face door only ranks rows."""
    from workbench.cli.job import main as job
    from workbench.organism.two_doors import compare_reports

    seed_dir, out = exported
    common = ["--max-rows", "60", "--quiet", "--fresh"]
    both = ["--sections", *sorted(COMPARED)]  # screening: retraining (organism) vs ranking (HF), not the same numbers
    assert job(["--organism", str(seed_dir.parent), "--seed", seed_dir.name.removeprefix("seed"),
                "--out", str(tmp_path / "org"), *common, *both]) == 0
    export = json.loads((out / "export.json").read_text())
    assert job([*export["job_args"], "--out", str(tmp_path / "hf"), *common, *both]) == 0
    capsys.readouterr()
    doors = compare_reports(tmp_path / "org", tmp_path / "hf")
    print(doors.format())
    assert set(doors.sections) == COMPARED
    for name, d in doors.sections.items():
        assert d.n_numbers > 0 and d.max_abs_diff < 1e-5, (name, d.max_abs_diff, d.worst)
        assert not d.flag_mismatches, d.flag_mismatches
    assert not doors.only_hf
    # rows of the organism's other-target student, which the job's four HF flags do not take
    assert doors.only_organism and all(k.split(" | ")[0] in ("probes", "directions") and " other" in k
                                       for k in doors.only_organism)
    assert json.loads((tmp_path / "hf" / "report.json").read_text())["missing"] == []
