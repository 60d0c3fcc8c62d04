"""The baselines: no history, retrieval of k items (random / recency / BM25 / dense),
full context (as many items as fit, newest first), and retrieval at a token budget
(`<ranker>@B`: the ranked items in compact form, fitted to B context tokens; the
equal-budget comparisons of Attn-GS)."""

from __future__ import annotations

from collections.abc import Sequence

from components.backbone.model import Backbone
from components.lamp.prompts import build_prompt, compact_item, fit_compact, prompt_with_context
from components.lamp.records import Question
from components.lamp.tasks import TaskSpec
from components.methods.base import Method, Prediction
from components.retrieval.rankers import RANKERS, DenseRanker, rank_recency, select_items


class PromptMethod(Method):
    """Selects profile items, writes LaMP's prompt, and lets the frozen backbone answer."""

    def __init__(self, name: str, ranker=None, k: int | None = 0, num_beams: int = 1, seed: int = 0):
        self.name, self.ranker, self.k, self.num_beams, self.seed = name, ranker, k, num_beams, seed

    def items_for(self, spec: TaskSpec, q: Question):
        if self.k == 0 or not q.profile:
            return []
        return select_items(q.profile, self.ranker(spec, q, self.seed), self.k)

    def predict(self, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        limit = backbone.max_length - spec.max_new_tokens - 2
        if self.k != 0 and hasattr(self.ranker, "prefetch"):
            self.ranker.prefetch(spec, questions)
        chosen = [self.items_for(spec, q) for q in questions]
        prompts = [build_prompt(spec, q.input, items, limit, backbone.tokenize, backbone.detokenize)
                   for q, items in zip(questions, chosen)]
        texts = [p.text for p in prompts]
        outputs = backbone.generate(texts, spec.max_new_tokens, num_beams=self.num_beams)
        return [Prediction(q.id, out, p.context_tokens, backbone.count_tokens(t), len(items) - p.n_items)
                for q, p, items, t, out in zip(questions, prompts, chosen, texts, outputs)]


class BudgetMethod(PromptMethod):
    """Ranked items in compact form (`compact_item`), best first, fitted to `budget` tokens."""

    def __init__(self, name: str, ranker, budget: int, num_beams: int = 1, seed: int = 0):
        super().__init__(name, ranker, None, num_beams, seed)
        self.budget = budget

    def predict(self, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        if hasattr(self.ranker, "prefetch"):
            self.ranker.prefetch(spec, questions)
        contexts = [fit_compact([compact_item(spec, q.profile[i]) for i in self.ranker(spec, q, self.seed)],
                                self.budget, backbone.tokenize, backbone.detokenize) if q.profile else ""
                    for q in questions]
        texts = [prompt_with_context(spec, q.input, c) for q, c in zip(questions, contexts)]
        outputs = backbone.generate(texts, spec.max_new_tokens, num_beams=self.num_beams)
        return [Prediction(q.id, out, backbone.count_tokens(c), backbone.count_tokens(t))
                for q, c, t, out in zip(questions, contexts, texts, outputs)]


def make_baseline(name: str, num_beams: int = 1, seed: int = 0) -> PromptMethod:
    """`non-personalized`, `full-context`, `<ranker>-<k>` (k items) or `<ranker>@<B>` (a budget
    of B context tokens) with ranker random|recency|bm25|dense."""
    if "@" in name:
        ranker_name, _, budget = name.partition("@")
        if not budget.isdigit() or int(budget) < 1 or ranker_name not in (*RANKERS, "dense"):
            raise ValueError(f"unknown baseline {name!r}: a budgeted baseline is random@B, recency@B, bm25@B "
                             "or dense@B with B >= 1 tokens")
        ranker = DenseRanker() if ranker_name == "dense" else RANKERS[ranker_name]
        return BudgetMethod(name, ranker, int(budget), num_beams, seed)
    if name == "non-personalized":
        return PromptMethod(name, None, 0, num_beams, seed)
    if name == "full-context":
        return PromptMethod(name, rank_recency, None, num_beams, seed)
    ranker_name, _, k = name.rpartition("-")
    if not k.isdigit() or ranker_name not in (*RANKERS, "dense"):
        raise ValueError(f"unknown baseline {name!r}: use non-personalized, full-context or "
                         "random-K, recency-K, bm25-K, dense-K")
    ranker = DenseRanker() if ranker_name == "dense" else RANKERS[ranker_name]
    return PromptMethod(name, ranker, int(k), num_beams, seed)
