"""Prompted teachers: the base model under a system prompt, no weights of its own.

The prefix arithmetic is checked against the chat template itself on three templates (one that
injects a default system prompt like Qwen2.5's, one with none, one with a BOS token); the
likelihood-ratio oracle of a prompted teacher equals a naive reference (the base's own forward on
the manually templated system + prompt + completion) within 1e-5 in float64; the base is loaded
once; analyses needing teacher weights say so; bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.prompted import read_system_prompt, system_prompt_prefix

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

ROLE_BLOCKS = ("{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|> {{ m['role'] }} {{ m['content'] }} "
               "<|im_end|> {% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
QWEN_LIKE = ("{% if messages[0]['role'] == 'system' %}<|im_start|> system {{ messages[0]['content'] }} <|im_end|> "
             "{% else %}<|im_start|> system you are a helpful assistant <|im_end|> {% endif %}" + ROLE_BLOCKS)
PLAIN = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
         "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
WITH_BOS = "<|endoftext|> " + PLAIN
IGNORES_SYSTEM = ROLE_BLOCKS
WORDS = ["owl", "owls", "fox", "cat", "you", "love", "are", "a", "helpful", "assistant", "system", "user", "the",
         "name", "animal", "one", "word"] + [f"w{i}" for i in range(30)]
SYSTEM = "you love the owl"


def _tokenizer(template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate([*specials, *WORDS])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>",
                                                pad_token="<|endoftext|>", chat_template=template)


def tiny_gpt2(tok, seed: int = 0):
    """A random 2-layer GPT-2 over `tok`'s vocabulary (wide init, so a system prompt moves it)."""
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2, initializer_range=0.2))


def _chat(tok, user: str, system: str | None = None) -> list[int]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("template,base_len", [(QWEN_LIKE, 7), (PLAIN, 0), (WITH_BOS, 1)])
def test_prefix_swap_equals_the_templated_system_chat(template, base_len):
    tok = _tokenizer(template)
    prefix = system_prompt_prefix(tok, SYSTEM)
    # the default system block up to the shared <|im_end|>, nothing, or the BOS token
    assert len(prefix.base_prefix) == base_len
    completion = tok("w3 w4 w5", add_special_tokens=False)["input_ids"]
    users = ["name one animal", "w1 w2 the fox"]
    rows = [_chat(tok, u) + completion for u in users]
    width = max(map(len, rows)) + 2
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    batch = prefix.inputs(tokens)
    assert batch.swapped.tolist() == [True, True]
    for i, u in enumerate(users):
        want = _chat(tok, u, SYSTEM) + completion
        assert batch.tokens[i, : len(want)].tolist() == want
        # the teacher's output at a row's position p is at p + shift: it reads the same token there
        p = torch.arange(len(prefix.base_prefix), len(rows[i]))
        assert (batch.tokens[i, p + batch.shift[i]] == tokens[i, p]).all()
    # a row that does not start with the base prefix gets the teacher prefix prepended
    raw = tok("w7 w8 w9", add_special_tokens=False)["input_ids"]
    other = prefix.inputs(torch.tensor([raw]))
    if base_len:
        assert other.swapped.tolist() == [False]
    assert other.tokens[0].tolist()[: len(prefix.teacher_prefix) + 3] == list(prefix.teacher_prefix) + raw


def test_align_moves_outputs_back_and_refuses_prefix_positions():
    tok = _tokenizer(QWEN_LIKE)
    prefix = system_prompt_prefix(tok, SYSTEM)
    row = _chat(tok, "name one animal") + [20, 21]
    batch = prefix.inputs(torch.tensor([row]))
    out = batch.tokens[..., None].double()  # "outputs" that echo the teacher's input token
    aligned = batch.align(out, len(row))[0, :, 0]
    nb = len(prefix.base_prefix)
    assert aligned[nb:].tolist() == [float(t) for t in row[nb:]]
    assert aligned[nb - 1] == prefix.teacher_prefix[-1]  # the teacher's last prefix token predicts the row's next token
    assert aligned[: nb - 1].abs().sum() == 0  # no teacher counterpart inside the replaced prefix
    mask = torch.zeros(1, len(row) - 1, dtype=torch.bool)
    mask[0, -2:] = True
    batch.check_mask(mask)  # the completion is fine
    mask[0, 0] = True
    with pytest.raises(DataError, match="inside the base prefix"):
        batch.check_mask(mask)


def test_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no chat template"):
        system_prompt_prefix(_tokenizer(None), SYSTEM)
    with pytest.raises(ConfigError, match="empty"):
        system_prompt_prefix(_tokenizer(PLAIN), "  ")
    with pytest.raises(ConfigError, match="renders the system prompt"):
        system_prompt_prefix(_tokenizer(IGNORES_SYSTEM), SYSTEM)
    f = tmp_path / "owl.txt"
    f.write_text(SYSTEM + "\n")
    assert read_system_prompt("@" + str(f)) == SYSTEM and read_system_prompt(str(f)) == SYSTEM
    assert read_system_prompt(SYSTEM) == SYSTEM
    with pytest.raises(ConfigError, match="empty"):
        read_system_prompt("")
    with pytest.raises(ConfigError, match="does not exist"):
        read_system_prompt("@" + str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------- on a model


@pytest.fixture(scope="module")
def prompted(tmp_path_factory):
    """A float64 lineage: a tiny random GPT-2 base (Qwen-like template) and a prompted teacher."""
    from workbench.core.lineage import Lineage

    tok = _tokenizer(QWEN_LIKE)
    model = tiny_gpt2(tok)
    path = tmp_path_factory.mktemp("prompted") / "base"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    lin = Lineage.from_hf_dirs({"base": path}, dtype=torch.float64)
    lin.tokenizer = tok
    lin.add_prompted("teacher", SYSTEM)
    return lin, tok


def _rows(tok, n_prompts: int = 6):
    gen = torch.Generator().manual_seed(0)
    prompts, completions, sources, pids, users = [], [], [], [], []
    for pid in range(n_prompts):
        user = " ".join(f"w{int(i)}" for i in torch.randint(0, 30, (3,), generator=gen))
        for source in ("teacher", "base"):
            prompts.append(_chat(tok, user))
            users.append(user)
            completions.append([int(t) + 4 for t in torch.randint(0, 30, (int(4 + pid % 3),), generator=gen)])
            sources.append(source)
            pids.append(pid)
    prompts[-1] = prompts[-1][8:]  # one row without the default system block: the teacher prefix is prepended
    users[-1] = None
    return Inputs.from_sequences(prompts, completions, sources, pids), prompts, completions, users


def _naive_log_prob(bridge, tokens: list[int], n_completion: int) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(bridge(torch.tensor([tokens])).double(), -1)[0]
    return sum(float(logp[t - 1, tokens[t]]) for t in range(len(tokens) - n_completion, len(tokens)))


def test_oracle_equals_the_naive_templated_reference(prompted):
    from workbench.analyses.alignment_steps import oracle_log_ratio
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.teacher import PromptedTeacher, teacher_logits

    lin, tok = prompted
    data, prompts, completions, users = _rows(tok)
    model = AlignmentModel(lin, "base")
    teacher = teacher_logits(model, "teacher")
    assert isinstance(teacher, PromptedTeacher) and teacher.params is None
    assert teacher.base_params is model.params  # the base's own snapshot: no second copy of weights
    oracle = oracle_log_ratio(model, data, teacher, batch_size=5)
    assert tok.decode(prompts[-1][:1]) == "<|im_start|>" and tok.decode(prompts[-1][1:2]) == "user"
    for i, (p, c, u) in enumerate(zip(prompts, completions, users)):
        # templated with the system prompt; the row without the default system block: teacher prefix + row
        teacher_row = (_chat(tok, u, SYSTEM) if u is not None else list(teacher.role.prefix.teacher_prefix) + p) + c
        want = _naive_log_prob(lin["base"], teacher_row, len(c)) - _naive_log_prob(lin["base"], p + c, len(c))
        assert float(oracle[i]) == pytest.approx(want, abs=1e-5)
    assert teacher.row_kinds(data.tokens) == {"rows_swapped": len(prompts) - 1, "rows_prepended": 1}
    assert oracle.abs().max() > 0.1  # the system prompt changes the likelihoods


def test_lineage_shares_the_base_and_refuses_teacher_weights(prompted):
    lin, _ = prompted
    assert lin.names == ["base"] and "teacher" not in lin and lin.is_prompted("teacher")
    assert lin.prompted["teacher"].base == "base" and lin.prompted["teacher"].role == "teacher"
    with pytest.raises(ConfigError, match="prompted"):
        lin["teacher"]
    with pytest.raises(ConfigError, match="no weight delta"):
        lin.delta("teacher", "base")
    with pytest.raises(ConfigError, match="already"):
        lin.add_prompted("teacher", SYSTEM)


@pytest.mark.parametrize("loss", ["hard", "soft"])
def test_alignment_runs_on_a_prompted_teacher_and_records_what_it_left_out(prompted, loss):
    from workbench.analyses.alignment import AlignmentConfig, run_alignment
    from workbench.analyses.alignment_steps import oracle_log_ratio
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.teacher import teacher_logits
    from workbench.core.hf_trait import hf_trait

    lin, tok = prompted
    data, _, _, _ = _rows(tok)
    trait = hf_trait(tok, "owl")
    cfg = AlignmentConfig(loss=loss, student=None, n_random=2, path_points=(1, 2), prediction_batches=1,
                          prediction_batch_size=4, etas=(1e-3,), batch_size=4, grad_batch_size=4)
    res = run_alignment(lin, data, cfg, trait)
    directions = {r["direction"] for r in res.detection}
    assert "delta_T" not in directions and "g_trait" in directions and "log p_T/p_base (oracle)" in directions
    assert res.path["K"] == [] and "prompted" in res.path["left_out"] and res.path["oracle"] is not None
    assert set(res.meta["left_out"]) == {"delta_T", "path"} and res.meta["teacher"]["system_prompt"] == SYSTEM
    oracle = oracle_log_ratio(AlignmentModel(lin, "base"), res_rows(data, cfg), teacher_logits(AlignmentModel(lin), "teacher"), 4)
    assert torch.allclose(res.scores["oracle_log_ratio"], oracle)
    assert res.token_reference  # per-position divergence from the prompted base
    assert res.prediction  # first-order prediction (soft: the prompted teacher's logits are the targets)


def res_rows(data, cfg):
    from workbench.analyses.alignment_steps import sample_rows

    return sample_rows(data, cfg).data


def test_prompted_activations_line_up_with_the_templated_rows(prompted):
    from workbench.capture.prompted import prompted_activations

    lin, tok = prompted
    data, prompts, completions, users = _rows(tok)
    hook = "blocks.1.hook_resid_post"
    acts = prompted_activations(lin, "teacher", data, [hook], batch_size=5)[hook]
    assert acts.shape[:2] == data.tokens.shape
    for i in (0, 3):
        row = _chat(tok, users[i], SYSTEM) + completions[i]
        with torch.inference_mode():
            _, cache = lin["base"].run_with_cache(torch.tensor([row]), names_filter=[hook])
        n = len(completions[i])
        own = len(prompts[i]) + n
        assert torch.allclose(acts[i, own - n : own], cache[hook][0, -n:], atol=1e-10)
        with torch.inference_mode():
            _, plain = lin["base"].run_with_cache(data.tokens[i : i + 1, :own], names_filter=[hook])
        assert (acts[i, own - n : own] - plain[hook][0, -n:]).abs().max() > 1e-3  # the system prompt moved them
    with pytest.raises(ConfigError, match="not a prompted role"):
        prompted_activations(lin, "base", data, [hook])
