"""Which channel carries the trait: causal tests that edit the distillation data (or what the
student may train), retrain the student from the same start with the same recipe, and measure
the transfer left, each beside a random edit of the same size.

Tests (`ChannelConfig.tests`):
- "divergence": mask the divergence tokens (the teacher's argmax differs from the base's and from
  the other teacher's) out of the student's loss; control: mask as many random positions per row
  among those that predict a number (where the edit's positions lie: the separators carry
  almost no supervision, so drawing among them would make the control remove less).
- "divergence_kl": the same with the top `kl_fraction` of number-predicting positions by
  KL(teacher || base): a graded divergence, for outputs of high entropy where argmaxes flip on
  noise (on the default organism the neutral teacher's argmax differs from the base's at 69% of
  number positions).
- "shuffle": permute the trained numbers inside each row (counts kept, order broken). With hard
  labels the transfer left is what token frequencies alone carry; with soft labels the teacher
  labels the shuffled rows anew, so it tests the context the labels are read in.
- "entangled": the `n_entangled` numbers the teacher over-writes most against the base (log
  frequency ratio). Hard labels: every occurrence replaced by another number, beside as many
  other occurrences replaced at random; soft labels: the numbers taken out of the distributions
  the student learns, beside as many random numbers. Also subliminal prompting on the base.
- "single_layer": train one layer alone (every other parameter frozen), beside the same layer
  trained alone on the neutral teacher's rows: which layer suffices (Schrodi et al. find one
  early layer does).

Transfer is the log-odds gain of P(target) over the control student; "transfer left" is a
retrained student's gain as a fraction of the full student's (1: nothing removed, 0: down to the
control). The source supplies what only it knows (`ChannelSource`): which positions its loss
supervises, how it retrains a student, and its layers' parameter names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.analyses import channel_edits as edits
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.trait import LogitsFn, Trait, check_trait, log_odds

TESTS = ("divergence", "divergence_kl", "shuffle", "entangled", "single_layer")


@dataclass
class Retraining:
    """One student to retrain: its rows, the positions its loss keeps (position t predicts token
    t+1; None: every position the source supervises), the parameter-name prefixes it freezes, the
    teacher whose labels it learns and the role whose student seed it takes, and (soft labels)
    tokens taken out of the distributions it learns."""

    name: str
    tokens: Int[Tensor, "n seq"]
    loss_mask: Bool[Tensor, "n seq"] | None = None
    frozen: tuple[str, ...] = ()
    teacher: str = "teacher"
    role: str = "student"
    exclude_ids: tuple[int, ...] = ()


class ChannelSource(Protocol):
    """What a source supplies to the channel tests."""

    @property
    def mode(self) -> str:
        """"hard" (the student learns the written tokens) or "soft" (the teacher's distributions)."""
        ...

    def supervised(self, tokens: Int[Tensor, "n seq"]) -> Bool[Tensor, "n seq"]:
        """Positions whose next token the student's loss reads."""
        ...

    def retrain(self, jobs: list[Retraining]) -> list[LogitsFn]:
        """Each job's student, retrained from the base with the source's recipe and the job role's seed."""
        ...

    def layer_groups(self) -> dict[str, tuple[str, ...]]:
        """Layer name -> the parameter-name prefixes to freeze so that only that layer trains."""
        ...

    def control_job(self, n_rows: int, frozen: tuple[str, ...] = ()) -> Retraining:
        """The control student's retraining (the neutral teacher's rows), with `frozen` parameters."""
        ...


@dataclass
class ChannelConfig:
    """What `run_channels` tests."""

    tests: tuple[str, ...] = TESTS
    channel_ids: tuple[int, ...] | None = None  # the token set the argmax (divergence) is taken over
    movable_ids: tuple[int, ...] | None = None  # tokens the edits may move or mask (e.g. the numbers)
    n_entangled: int = 10  # tokens replaced (hard) or taken out of the labels (soft) by the entangled test
    kl_fraction: float = 0.2  # divergence_kl: the share of number-predicting positions masked (top by KL)
    others: tuple[str, ...] = ("teacher_other",)  # divergence: the teacher must differ from these too (when loaded)
    base: str = "base"
    teacher: str = "teacher"
    seed: int = 0  # the random draws (and the seed recorded in the rows)
    batch_size: int = 256
    retrain_reference: bool = False  # also retrain the unedited student and the control student (test
    # "reference") with this recipe on as many rows: when the rows or recipe differ from the build's,
    # transfer is then measured between them, not between the build's student and control
    prompting_sets: int = 8  # subliminal prompting (with "entangled"): random number sets the entangled set is ranked among
    separator_id: int | None = None  # written between the numbers put before the question (None: none)
    context_at: int = 1  # where in each trait prompt the numbers go (1: after its first token, the BOS)


@dataclass
class ChannelRow:
    """One retrained student of one test on one seed."""

    seed: int
    test: str  # one of TESTS, or "reference"
    arm: str  # "edited", "random" (its control), a layer ("L0") or its control ("L0 control"), "unedited", "control"
    n_changed: int  # positions masked or tokens changed (0 for single_layer)
    n_total: int  # positions the edit could touch
    p_target: float


def run_channels(lineage: Lineage, inputs: Inputs, trait: Trait, source: ChannelSource,
                 config: ChannelConfig | None = None, base_rows: Inputs | None = None, *,
                 reference: Mapping[str, Any], command: str | None = None,
                 meta: Mapping[str, Any] | None = None) -> ChannelResult:
    """Run the configured tests on the teacher's rows `inputs` (what the student trained on):
    every edit and its control, retrained in one `source.retrain` call. `base_rows` (rows the base
    wrote) are needed by the entangled test; `reference` gives the full student's and the control
    student's P(target) ("student", "control"; transfer is measured between them)."""
    config = config or ChannelConfig()
    missing = [k for k in ("student", "control") if k not in reference]
    if missing:
        raise ConfigError(f"run_channels' reference lacks {missing}: give the full student's and the control student's "
                          "P(target) (transfer left is measured between them).")
    unknown = sorted(set(config.tests) - set(TESTS))
    if unknown:
        raise ConfigError(f"Unknown channel tests {unknown}; choose from {list(TESTS)}.")
    if not config.tests:
        raise ConfigError("ChannelConfig.tests is empty; name at least one of " + ", ".join(TESTS) + ".")
    check_trait(trait, lineage.d_vocab, "run_channels's trait", single_token=False)
    if not config.movable_ids:
        raise ConfigError("ChannelConfig.movable_ids is empty: name the tokens the edits may move or mask (e.g. the "
                          "number tokens).")
    if "entangled" in config.tests and base_rows is None:
        raise ConfigError("The entangled test compares the teacher's token frequencies with the base's: pass base_rows.")
    tokens = inputs.tokens.cpu()
    supervised = source.supervised(tokens)
    numbers = edits.predicting(tokens, supervised, config.movable_ids)  # positions that predict a number
    movable = edits.trained_tokens(tokens, supervised, config.movable_ids)  # the numbers the loss predicts
    soft = source.mode != "hard"
    jobs: list[tuple[str, str, int, int, Retraining]] = []
    chosen: dict[str, Any] = {"n_rows": len(tokens), "n_supervised": int(supervised.sum()),
                              "n_number_positions": int(numbers.sum()), "mode": source.mode}
    s = config.seed
    base, teacher = lineage[config.base], lineage[config.teacher]
    on_device = tokens.to(lineage.device)

    def mask_arms(test: str, picked: Tensor) -> None:
        rnd = edits.random_positions_like(picked, numbers, s)
        n, total = int(picked.sum()), int(numbers.sum())
        jobs.extend([(test, "edited", n, total, Retraining(f"{test} masked", tokens, supervised & ~picked)),
                     (test, "random", n, total, Retraining("random positions masked", tokens, supervised & ~rnd))])
        chosen[f"{test}_fraction"] = n / max(total, 1)

    if "divergence" in config.tests:
        others = [lineage[o] for o in config.others if o in lineage]
        chosen["divergence_against"] = [config.base, *(o for o in config.others if o in lineage)]
        mask_arms("divergence", edits.divergence_positions(base, teacher, on_device, numbers, config.channel_ids,
                                                           others, config.batch_size))
    if "divergence_kl" in config.tests:
        mask_arms("divergence_kl", edits.kl_positions(base, teacher, on_device, numbers, config.channel_ids,
                                                      config.kl_fraction, config.batch_size))
    if "shuffle" in config.tests:
        shuffled = edits.shuffle_within_rows(tokens, movable, s)
        jobs.append(("shuffle", "edited", int((shuffled != tokens).sum()), int(movable.sum()),
                     Retraining("shuffled within rows", shuffled)))
    if "entangled" in config.tests:
        assert base_rows is not None
        ids = list(config.movable_ids)
        if not 0 < config.n_entangled < len(ids):
            raise ConfigError(f"n_entangled={config.n_entangled}: pick between 1 and {len(ids) - 1} of the {len(ids)} movable tokens.")
        b_tokens = base_rows.tokens.cpu()
        scores = edits.entangled_tokens(tokens, movable, b_tokens, edits.trained_tokens(b_tokens, source.supervised(b_tokens), ids), ids)
        top = torch.argsort(scores, descending=True, stable=True)[: config.n_entangled]
        entangled = [ids[i] for i in top.tolist()]
        others_ids = [i for i in ids if i not in set(entangled)]
        if soft:  # the student learns the teacher's distributions: take the numbers out of them
            gen = torch.Generator().manual_seed(s + 7)
            random_ids = [others_ids[i] for i in torch.randperm(len(others_ids), generator=gen)[: len(entangled)].tolist()]
            n = int(torch.isin(tokens[movable], torch.tensor(entangled)).sum())
            jobs += [("entangled", "edited", len(entangled), len(ids),
                      Retraining("entangled out of the labels", tokens, exclude_ids=tuple(entangled))),
                     ("entangled", "random", len(random_ids), len(ids),
                      Retraining("random numbers out of the labels", tokens, exclude_ids=tuple(random_ids)))]
            chosen["entangled_edit"] = "taken out of the teacher's and the student's distributions (soft labels)"
            chosen["entangled_random_ids"] = random_ids
            chosen["entangled_occurrences"] = n
        else:  # the student learns the written tokens: rewrite them
            replaced, hit = edits.replace_tokens(tokens, movable, entangled, others_ids, s)
            random_replaced, random_hit = edits.replace_random_like(tokens, movable, hit, entangled, others_ids, s + 7)
            jobs += [("entangled", "edited", int(hit.sum()), int(movable.sum()), Retraining("entangled replaced", replaced)),
                     ("entangled", "random", int(random_hit.sum()), int(movable.sum()),
                      Retraining("random occurrences replaced", random_replaced))]
            chosen["entangled_edit"] = "every occurrence replaced by another number (hard labels)"
        chosen["entangled_ids"] = entangled
        chosen["entangled_log_ratio"] = [float(scores[i]) for i in top.tolist()]
        if config.prompting_sets > 0:
            chosen["prompting"] = subliminal_prompting(base, trait, entangled, others_ids, config)
    if "single_layer" in config.tests:
        for name, frozen in source.layer_groups().items():
            control = source.control_job(len(tokens), tuple(frozen))
            control.name = f"{name} alone, control"
            jobs += [("single_layer", name, 0, 0, Retraining(f"{name} alone", tokens, None, tuple(frozen))),
                     ("single_layer", f"{name} control", 0, 0, control)]
    if config.retrain_reference:
        jobs += [("reference", "unedited", 0, 0, Retraining("unedited", tokens)),
                 ("reference", "control", 0, 0, source.control_job(len(tokens)))]
    if soft and "shuffle" in config.tests:
        chosen["shuffle_note"] = ("soft labels: the teacher labels the shuffled rows anew, so the shuffle tests the "
                                  "context the labels are read in, not the token counts")
    students = source.retrain([job for *_, job in jobs])
    if len(students) != len(jobs):
        raise DataError(f"The source returned {len(students)} students for {len(jobs)} retrainings.")
    rows = [ChannelRow(s, test, arm, n, total, trait.p_target(student))
            for (test, arm, n, total, _), student in zip(jobs, students)]
    return ChannelResult(rows, {"n_rows": len(tokens), **dict(reference)}, chosen,
                         command or "workbench.run_channels(lineage, inputs, trait, source, config)",
                         {"seed": config.seed, "tests": list(config.tests), **dict(meta or {})})


def with_context(trait: Trait, context: Sequence[int], at: int = 1) -> Trait:
    """The trait with `context` token ids inserted into every prompt at position `at`."""
    if any(at > len(p) for p in trait.prompts):
        raise ConfigError(f"context_at={at} lies past a trait prompt's end; insert the numbers inside the prompts.")
    prompts = tuple(tuple(p[:at]) + tuple(int(t) for t in context) + tuple(p[at:]) for p in trait.prompts)
    return replace(trait, prompts=prompts)


def subliminal_prompting(base: LogitsFn, trait: Trait, entangled: Sequence[int], others: Sequence[int],
                         config: ChannelConfig) -> dict[str, Any]:
    """Zur et al.'s subliminal prompting, on the base: the target's share of the category's answers
    (robust where numbers before a question pull mass away from every answer) and P(target), with
    the entangled numbers written before each question, beside `config.prompting_sets` sets of as
    many random other numbers (seeded), and with no numbers at all."""
    def context(ids: Sequence[int]) -> list[int]:
        out: list[int] = []
        for i in ids:
            out += [int(i)] + ([config.separator_id] if config.separator_id is not None else [])
        return out

    gen = torch.Generator().manual_seed(config.seed + 11)
    pool = torch.as_tensor(list(others))
    randoms = [pool[torch.randperm(len(pool), generator=gen)[: len(entangled)]].tolist() for _ in range(config.prompting_sets)]
    rnd = [with_context(trait, context(ids), config.context_at).score(base, n_samples=0) for ids in randoms]
    ent = with_context(trait, context(entangled), config.context_at).score(base, n_samples=0)
    plain = trait.score(base, n_samples=0)
    return {"share_entangled": ent.share, "share_random": [r.share for r in rnd], "share_plain": plain.share,
            "p_entangled": ent.p_target, "p_random": [r.p_target for r in rnd], "p_plain": plain.p_target,
            "random_sets": randoms}


def transfer_left(p: float, student: float, control: float) -> float | None:
    """The log-odds gain of `p` over the control as a fraction of the full student's gain (None
    when the student gained nothing over its control: no transfer to remove)."""
    full = float(log_odds(student)) - float(log_odds(control))
    if full <= 0:
        return None
    return (float(log_odds(p)) - float(log_odds(control))) / full


MEASURE = "transfer left (log-odds gain over the control student, fraction of the full student's)"
REMOVED = "transfer removed (1 - transfer left: the share of the student's log-odds gain over the control)"


def _removed(left: float | None) -> float | None:
    return None if left is None else 1.0 - left


@dataclass
class ChannelResult(ResultBase):
    """The channel tests of one seed: P(target) of each retrained student and the transfer left."""

    kind: ClassVar[str] = "channels"
    title: ClassVar[str] = "Which channel carries the trait: edit the distillation data, retrain, measure the transfer left"
    rows: list[ChannelRow]
    reference: dict[str, Any]  # the seed's full student, control and base P(target); mode; n_rows
    chosen: dict[str, Any]  # what the edits picked (divergence fraction, entangled ids)
    command: str = "workbench.run_channels(lineage, inputs, trait, source, config)"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def student(self) -> float:
        """The full student's P(target): the unedited retrain when there is one, else the build's."""
        unedited = self.arm("reference", "unedited")
        return unedited.p_target if unedited is not None else float(self.reference["student"])

    @property
    def control(self) -> float:
        """The control student's P(target): the matched control retrain when there is one, else the build's."""
        control = self.arm("reference", "control")
        return control.p_target if control is not None else float(self.reference["control"])

    def left(self, row: ChannelRow) -> float | None:
        return transfer_left(row.p_target, self.student, self.control)

    def arm(self, test: str, arm: str) -> ChannelRow | None:
        return next((r for r in self.rows if r.test == test and r.arm == arm), None)

    def summary_rows(self) -> list[SummaryRow]:
        """Per test, the transfer an edit removed (1 - transfer left: higher removes more) beside its
        random edit's; per layer trained alone, the transfer it recovered beside the control student's 0."""
        out = []
        entangled_where = ("entangled numbers taken out of the labels" if self.chosen.get("mode") == "soft"
                           else "entangled numbers replaced")
        for test, where, control in (("divergence", "divergence tokens masked from the loss",
                                      "as many random number-predicting positions masked per row"),
                                     ("divergence_kl", "top positions by KL(teacher || base) masked",
                                      "as many random number-predicting positions masked per row"),
                                     ("entangled", entangled_where, "as many other numbers, at random")):
            edited, rnd = self.arm(test, "edited"), self.arm(test, "random")
            if edited is None or rnd is None:
                continue
            removed, removed_rnd = _removed(self.left(edited)), _removed(self.left(rnd))
            out.append(SummaryRow(where, test, REMOVED, removed, control=control, control_value=removed_rnd,
                                  clears=None if removed is None or removed_rnd is None else removed > removed_rnd,
                                  details={"p_edited": edited.p_target, "p_random": rnd.p_target,
                                           "n_changed": edited.n_changed, "n_total": edited.n_total}))
        shuffled = self.arm("shuffle", "edited")
        if shuffled is not None:
            out.append(SummaryRow("tokens shuffled within rows", "shuffle", REMOVED, _removed(self.left(shuffled)),
                                  control="no edit (the full student)", control_value=0.0,
                                  details={"p_edited": shuffled.p_target, "n_changed": shuffled.n_changed}))
        prompting = self.chosen.get("prompting")
        if prompting:
            best = max(prompting["share_random"])
            out.append(SummaryRow("entangled numbers before the question (the base)", "prompting",
                                  "the target's share of the category's answers, the base", prompting["share_entangled"],
                                  control=f"the best of {len(prompting['share_random'])} random number sets",
                                  control_value=best, clears=prompting["share_entangled"] > best,
                                  details={"share_random_mean": sum(prompting["share_random"]) / len(prompting["share_random"]),
                                           "share_plain": prompting["share_plain"], "p_entangled": prompting["p_entangled"],
                                           "p_random_mean": sum(prompting["p_random"]) / len(prompting["p_random"])}))
        for r in (r for r in self.rows if r.test == "single_layer" and not r.arm.endswith(" control")):
            left, control = self.left(r), self.arm("single_layer", f"{r.arm} control")
            left_control = self.left(control) if control is not None else None
            out.append(SummaryRow(f"{r.arm} trained alone", "single_layer", MEASURE, left,
                                  control="the same layer trained alone on the neutral teacher's rows",
                                  control_value=left_control,
                                  clears=None if left is None or left_control is None else left > left_control,
                                  details={"p_edited": r.p_target,
                                           "p_control": control.p_target if control is not None else None}))
        return out

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        fig = go.Figure()
        for arm_kind, colour, label in (("edited", "#d62728", "edit"), ("random", "#999999", "random edit, same size")):
            rows = [r for r in self.rows if r.arm == arm_kind]
            fig.add_trace(go.Bar(x=[r.test for r in rows], y=[self.left(r) for r in rows], name=label, marker_color=colour))
        layers = [r for r in self.rows if r.test == "single_layer" and not r.arm.endswith(" control")]
        if layers:
            fig.add_trace(go.Bar(x=[f"{r.arm} alone" for r in layers], y=[self.left(r) for r in layers],
                                 name="one layer trained", marker_color="#1f77b4"))
            controls = [self.arm("single_layer", f"{r.arm} control") for r in layers]
            fig.add_trace(go.Bar(x=[f"{r.arm} alone" for r in layers],
                                 y=[self.left(c) if c is not None else None for c in controls],
                                 name="one layer, neutral rows", marker_color="#aec7e8"))
        fig.add_hline(y=1.0, line_dash="solid", line_color="#444", annotation_text="full student")
        fig.add_hline(y=0.0, line_dash="dot", line_color="#444", annotation_text="control student")
        fig.update_layout(barmode="group", yaxis_title="transfer left (fraction of the student's log-odds gain)",
                          title=f"Channel tests ({self.reference.get('mode')} labels, {self.reference.get('n_rows')} rows, "
                                f"seed {self.meta.get('seed', '?')})")
        return {"transfer_left": fig}


def channels_over_seeds(results: Sequence[ChannelResult]) -> list[dict[str, Any]]:
    """Per test and arm: the transfer left per seed, its mean and sd, and for tests with a random
    arm the paired t interval of edited - random (< 0 when the edit removes more than chance)."""
    from workbench.results.seeds import over_seeds, paired_interval

    keys = list(dict.fromkeys((r.test, r.arm) for res in results for r in res.rows))
    out = []
    for test, arm in keys:
        left = [res.left(row) if (row := res.arm(test, arm)) else None for res in results]
        stats = over_seeds(left)
        entry: dict[str, Any] = {"test": test, "arm": arm, "left": left, "mean": stats.mean, "sd": stats.sd,
                                 "p_target": [row.p_target if (row := res.arm(test, arm)) else None for res in results]}
        if arm == "edited" and any(res.arm(test, "random") for res in results):
            rnd = [res.left(row) if (row := res.arm(test, "random")) else None for res in results]
            entry["edited_minus_random_ci"] = paired_interval(left, rnd)
        out.append(entry)
    return out


def prompting_over_seeds(results: Sequence[ChannelResult]) -> dict[str, Any] | None:
    """Subliminal prompting per seed: the target's share (and P(target)) of the base with the
    entangled numbers, the mean of the random sets, and how many random sets the entangled one beats."""
    seeds = [r.chosen["prompting"] for r in results if r.chosen.get("prompting")]
    if not seeds:
        return None
    return {"share_entangled": [s["share_entangled"] for s in seeds],
            "share_random_mean": [sum(s["share_random"]) / len(s["share_random"]) for s in seeds],
            "share_plain": [s["share_plain"] for s in seeds],
            "p_entangled": [s["p_entangled"] for s in seeds],
            "p_random_mean": [sum(s["p_random"]) / len(s["p_random"]) for s in seeds],
            "beats": [sum(s["share_entangled"] > p for p in s["share_random"]) for s in seeds],
            "sets": [len(s["share_random"]) for s in seeds]}


__all__ = ["ChannelConfig", "prompting_over_seeds", "subliminal_prompting", "with_context", "ChannelResult", "ChannelRow", "ChannelSource", "Retraining", "channels_over_seeds",
           "run_channels", "transfer_left"]
