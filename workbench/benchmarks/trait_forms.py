"""Benchmark `trait_forms`: multi-token trait scoring, one padded row per prompt x surface form
(the naive layout, baseline) against rows shared along each prompt's trie of forms
(`workbench.trait_forms.form_rows`), on the full built-in trait (22 questions x 20 answers x ~8
forms) through the bridge of a tiny Qwen2 base from `workbench.core.toy_hf.write_toy_lineage`.

Cases, each pair timed interleaved in one run: `trait_forms/naive` vs `trait_forms/trie`
(log P(answer | prompt) for every prompt and answer, no gradients: what `Trait.score` and every
delta patch pay), and `trait_forms/naive_grad` vs `trait_forms/trie_grad` (the differentiable
log P(target) and its backward to the weights: the trait gradient). `extra` gives the rows and
next-token reads of each layout, their ratio, and the largest difference from the naive scores.
Quick: 3 questions, 5 answers.
"""

from __future__ import annotations

import torch

from workbench.benchmarks.harness import Case, scratch, time_interleaved


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Naive vs trie rows for the built-in trait on a tiny Qwen2 (see module doc)."""
    from workbench.core.hf_trait import ANIMAL_QUESTIONS, CATEGORIES, hf_trait
    from workbench.core.lineage import Lineage
    from workbench.core.toy_hf import ToySpec, toy_tokenizer, write_toy_lineage
    from workbench.trait_forms import answer_log_probs, form_rows

    runs, warmup = (1, 0) if quick else (5, 1)
    with scratch(device, "bench-trait-forms-") as root:
        spec = ToySpec(family="qwen2", lora_student=False)
        toy = write_toy_lineage(root, spec)
        bridge = Lineage.from_hf_dirs({"base": toy.dirs["base"]}, device=device)["base"]
        small = dict(questions=ANIMAL_QUESTIONS[:3], answers=CATEGORIES["animal"][:5]) if quick else {}
        trait = hf_trait(toy_tokenizer(), spec.target, category="animal", **small)
        forms = [trait.forms[n] for n, _ in trait.answers]
        plans = {"naive": form_rows(trait.prompts, forms, share=False), "trie": form_rows(trait.prompts, forms)}
        target = [n for n, _ in trait.answers].index(trait.target)
        target_plans = {k: form_rows(trait.prompts, [forms[target]], share=k == "trie") for k in plans}
        params = [p for p in bridge.parameters() if p.requires_grad]

        def scores(kind: str) -> torch.Tensor:  # planning included: what each call pays
            with torch.inference_mode():
                return answer_log_probs(bridge, trait.prompts, forms, trait.pad_id, device, share=kind == "trie")

        def grad(kind: str) -> None:
            lp = answer_log_probs(bridge, trait.prompts, [forms[target]], trait.pad_id, device, share=kind == "trie")
            torch.autograd.grad(lp[:, 0].mean(), params)

        ref = scores("naive")
        cases = time_interleaved({f"trait_forms/{k}": (lambda k=k: scores(k)) for k in plans},
                                 baseline="trait_forms/naive", runs=runs, warmup=warmup, device=device)
        cases += time_interleaved({f"trait_forms/{k}_grad": (lambda k=k: grad(k)) for k in plans},
                                  baseline="trait_forms/naive_grad", runs=runs, warmup=warmup, device=device)
        n_forms = sum(map(len, forms))
        for c in cases:
            kind = c.label.split("/")[1].removesuffix("_grad")
            plan = (target_plans if c.label.endswith("_grad") else plans)[kind]
            naive = (target_plans if c.label.endswith("_grad") else plans)["naive"]
            c.extra = {**(c.extra or {}), "rows": len(plan.rows), "reads": len(plan.reads),
                       "rows_ratio_vs_naive": len(plan.rows) / len(naive.rows), "prompts": len(trait.prompts),
                       "answers": len(forms), "forms": n_forms, "threads": torch.get_num_threads(),
                       "model": f"qwen2 {spec.n_layers} layers d_model {spec.d_model} vocab {bridge.cfg.d_vocab}"}
            if not c.label.endswith("_grad"):
                c.extra["max_abs_diff_vs_naive"] = float((scores(kind) - ref).abs().max())
        return cases
