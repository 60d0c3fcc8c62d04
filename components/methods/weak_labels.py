"""A weak relevance label for methods that weigh a user's history items by attention
(TAP-PER's record prefix, PPlug's aggregator).

On a training example the items that matter most are the ones whose past output is the
example's gold output: `gold_output_mask` marks them, `attention_label_loss` is the
-log of the attention mass on them. `lexical_top_mask` narrows the label to the items BM25
ranks highest for the example's input (`label+bm25`, as Attn-GS's marker uses: a user's
outputs repeat, so many items carry the gold output for reasons unrelated to the input).
It uses only the training example itself, never evaluation data or the synthetic data's
`relevance.json`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import TaskSpec


def gold_output_mask(spec: TaskSpec, histories: Sequence[Sequence[ProfileItem]], golds: Sequence[str],
                     width: int) -> torch.Tensor:
    """[B, width] True where history item j of example i carries the gold output of example i.
    `histories[i]` must be the items in the order the attention sees them."""
    mask = torch.zeros(len(histories), width, dtype=torch.bool)
    if spec.label_field is None:            # items without an output (LaMP-1, LaMP-7): no label
        return mask
    for i, (items, gold) in enumerate(zip(histories, golds)):
        for j, item in enumerate(items[:width]):
            mask[i, j] = item.fields.get(spec.label_field) == gold
    return mask


def lexical_top_mask(spec: TaskSpec, questions: Sequence[Question], histories: Sequence[Sequence[ProfileItem]],
                     width: int, top: int = 4) -> torch.Tensor:
    """[B, width] True on the `top` items of `histories[i]` (a subset of question i's profile,
    in the attention's order) that BM25 ranks highest for question i's input."""
    from components.retrieval.rankers import rank_bm25

    mask = torch.zeros(len(histories), width, dtype=torch.bool)
    for i, (q, items) in enumerate(zip(questions, histories)):
        rank = {q.profile[j].id: r for r, j in enumerate(rank_bm25(spec, q))}
        shown = range(min(len(items), width))
        for j in sorted(shown, key=lambda j: rank.get(items[j].id, len(rank)))[:top]:
            mask[i, j] = True
    return mask


def attention_label_loss(weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the examples with at least one labelled item of -log(sum of their weights)."""
    has = target.any(1)
    if not has.any():
        return weights.new_zeros(())
    mass = (weights * target)[has].sum(1)
    return -torch.log(mass.clamp(min=1e-6)).mean()
