"""LaMP's prompt templates with k profile items (`LaMP/prompts/prompts.py`).

Every item's text is truncated to a per-item token budget so that the whole prompt fits
the model's limit, as LaMP's own code does: the input keeps at most 60 % of the budget,
the rest is shared equally among the items, and tokens an item does not use carry over
to the next one. A prompt is a list of segments so that training can put loss on the
labels that appear inside the profile (e.g. past tags) as well as on the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from components.lamp.records import ProfileItem
from components.lamp.tasks import TaskSpec

INPUT_SHARE = 0.6          # LaMP: the task input keeps at most 60 % of the prompt budget
OVERHEAD_PER_ITEM = 8      # template words around an item ("the tag for the movie: ... is ...")
MIN_ITEM_TOKENS = 4        # an item squeezed below this is dropped rather than kept as a stub

Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[list[int]], str]


class PromptTooLongError(ValueError):
    pass


@dataclass
class Prompt:
    """A prompt as segments; `label` segments are the user's past outputs inside the profile."""

    segments: list[tuple[str, bool]] = field(default_factory=list)
    n_items: int = 0
    context_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(s for s, _ in self.segments)


def _item_parts(spec: TaskSpec, item: ProfileItem, text: str) -> list[tuple[str, bool]]:
    f = item.fields
    name = spec.name
    if name == "LaMP-1":
        return [(f'"{text}"', False)]
    if name == "LaMP-2":
        return [(f'the tag for the movie: "{text}" is "', False), (f.get("tag", ""), True), ('" ', False)]
    if name == "LaMP-2N":
        return [(f'the category for the article: "{text}" is "', False), (f.get("category", ""), True),
                ('" ', False)]
    if name == "LaMP-3":
        return [(f.get("score", ""), True), (f' is the score for "{text}" ', False)]
    if name in ("LaMP-4", "LaMP-6"):
        return [('"', False), (f.get("title", ""), True), (f'" is the title for "{text}" ', False)]
    if name == "LaMP-5":
        return [('"', False), (f.get("title", ""), True), (f'" is a title for "{text}" ', False)]
    return [(f'"{text}" ', False)]                                   # LaMP-7: past tweets


def _item_source_text(spec: TaskSpec, item: ProfileItem) -> str:
    f = item.fields
    if spec.name == "LaMP-1":
        return f.get("title", "")
    if spec.name in ("LaMP-2", "LaMP-3", "LaMP-7", "LaMP-2N", "LaMP-4", "LaMP-6"):
        return f.get("description") or f.get("text", "")
    return f.get("abstract", "")                                      # LaMP-5


def _truncate(text: str, budget: int, tokenize: Tokenize, detokenize: Detokenize) -> tuple[str, int]:
    ids = tokenize(text)
    if len(ids) <= budget:
        return text, len(ids)
    budget = max(budget, 0)
    return detokenize(ids[:budget]), budget


def build_prompt(spec: TaskSpec, task_input: str, items: Sequence[ProfileItem], max_tokens: int,
                 tokenize: Tokenize, detokenize: Detokenize) -> Prompt:
    """LaMP's prompt for `task_input` with `items` (in the order given) fitted to `max_tokens`.

    Items are kept from the end of the list (the end sits next to the task input); if the
    template's overhead was underestimated, the first items are dropped until it fits.
    """
    items = list(items)
    while True:
        prompt = _assemble(spec, task_input, items, max_tokens, tokenize, detokenize)
        total = len(tokenize(prompt.text))
        if total <= max_tokens or not items:
            if total > max_tokens:
                raise PromptTooLongError(f"prompt of {total} tokens exceeds the limit of {max_tokens}")
            prompt.context_tokens = max(total - len(tokenize(task_input)), 0) if prompt.n_items else 0
            return prompt
        items = items[1:]


def _assemble(spec: TaskSpec, task_input: str, items: list[ProfileItem], max_tokens: int,
              tokenize: Tokenize, detokenize: Detokenize) -> Prompt:
    input_ids = tokenize(task_input)
    if not items:
        if len(input_ids) > max_tokens:
            raise PromptTooLongError(
                f"the task input alone has {len(input_ids)} tokens, more than the model's limit "
                f"of {max_tokens}; raise the backbone's max length or shorten the input")
        return Prompt([(task_input, False)], 0, 0)
    input_budget = min(len(input_ids), int(INPUT_SHARE * max_tokens))
    if input_budget < len(input_ids):
        task_input, _ = _truncate(task_input, input_budget, tokenize, detokenize)
    profile_budget = max_tokens - input_budget - 8
    # keep only as many items (from the end, next to the input) as get a useful budget each
    n_fit = min(len(items), max(profile_budget, 0) // (MIN_ITEM_TOKENS + OVERHEAD_PER_ITEM))
    if n_fit == 0:
        return Prompt([(task_input, False)], 0)
    items = items[len(items) - n_fit:]
    per_item = profile_budget // len(items) - OVERHEAD_PER_ITEM
    saved, parts = 0, []
    for item in items:
        budget = per_item + saved
        if budget <= 0:
            break
        text, used = _truncate(_item_source_text(spec, item), budget, tokenize, detokenize)
        saved = budget - used
        parts.append(_item_parts(spec, item, text))
    n_used = len(parts)
    segments: list[tuple[str, bool]] = []
    for i, item_parts in enumerate(parts):
        if i:
            segments.append((", and ", False))
        segments.extend(item_parts)
    if spec.name == "LaMP-1":
        cut = task_input.find("title") + len("title")
        joined = "".join(s for s, _ in segments)
        return Prompt([(task_input[:cut] + ", and " + joined + task_input[cut:], False)], n_used)
    if spec.name == "LaMP-5":
        segments.append((f". Following the given patterns {task_input}", False))
    elif spec.name == "LaMP-7":
        segments.append((f" are written by a person. Following the given patterns {task_input}", False))
    else:
        segments.append((f". {task_input}", False))
    return Prompt(segments, n_used)
