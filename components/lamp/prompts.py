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
    # per item kept: (index into the items given, start char, end char) of its text in `text`
    item_spans: list[tuple[int, int, int]] = field(default_factory=list)

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


def label_follows_text(spec: TaskSpec) -> bool:
    """Whether an item's label comes after its text in the prompt (LaMP-2's tags), so that
    it can be read from the text and the items before it; LaMP-3's scores and LaMP-5's
    titles come first."""
    parts = _item_parts(spec, ProfileItem(id="0", fields={}), "\0")
    labels = [i for i, (_, is_label) in enumerate(parts) if is_label]
    text = next(i for i, (segment, _) in enumerate(parts) if "\0" in segment)
    return bool(labels) and labels[0] > text


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
                 tokenize: Tokenize, detokenize: Detokenize, marked: Sequence[bool] | None = None) -> Prompt:
    """LaMP's prompt for `task_input` with `items` (in the order given) fitted to `max_tokens`.

    Items are kept from the end of the list (the end sits next to the task input); if the
    template's overhead was underestimated, the first items are dropped until it fits.
    `marked` (one flag per item) wraps the flagged items in `MARK_START` … `MARK_END`
    (Attn-GS's compression prompt).
    """
    items = list(items)
    marks = list(marked) if marked is not None else [False] * len(items)
    offset = 0
    while True:
        prompt = _assemble(spec, task_input, items, max_tokens, tokenize, detokenize, marks)
        total = len(tokenize(prompt.text))
        if total <= max_tokens or not items:
            if total > max_tokens:
                raise PromptTooLongError(f"prompt of {total} tokens exceeds the limit of {max_tokens}")
            prompt.context_tokens = max(total - len(tokenize(task_input)), 0) if prompt.n_items else 0
            prompt.item_spans = [(i + offset, a, b) for i, a, b in prompt.item_spans]
            return prompt
        items, marks, offset = items[1:], marks[1:], offset + 1


def _assemble(spec: TaskSpec, task_input: str, items: list[ProfileItem], max_tokens: int,
              tokenize: Tokenize, detokenize: Detokenize, marks: list[bool]) -> Prompt:
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
    first = len(items) - n_fit
    items, marks = items[first:], marks[first:]
    per_item = profile_budget // len(items) - OVERHEAD_PER_ITEM
    saved, parts = 0, []
    for item, mark in zip(items, marks):
        budget = per_item + saved
        if budget <= 0:
            break
        text, used = _truncate(_item_source_text(spec, item), budget, tokenize, detokenize)
        saved = budget - used
        item_parts = _item_parts(spec, item, text)
        if mark:
            item_parts = [(MARK_START + " ", False), *item_parts, (" " + MARK_END, False)]
        parts.append(item_parts)
    n_used = len(parts)
    segments: list[tuple[str, bool]] = []
    spans, pos = [], 0
    for i, item_parts in enumerate(parts):
        if i:
            segments.append((", and ", False))
            pos += len(", and ")
        length = sum(len(s) for s, _ in item_parts)
        spans.append((first + i, pos, pos + length))
        pos += length
        segments.extend(item_parts)
    if spec.name == "LaMP-1":
        cut = task_input.find("title") + len("title")
        joined = "".join(s for s, _ in segments)
        shift = cut + len(", and ")
        return Prompt([(task_input[:cut] + ", and " + joined + task_input[cut:], False)], n_used,
                      item_spans=[(i, a + shift, b + shift) for i, a, b in spans])
    if spec.name == "LaMP-5":
        segments.append((f". Following the given patterns {task_input}", False))
    elif spec.name == "LaMP-7":
        segments.append((f" are written by a person. Following the given patterns {task_input}", False))
    else:
        segments.append((f". {task_input}", False))
    return Prompt(segments, n_used, item_spans=spans)


# --- compact items: Attn-GS's compressed contexts and the equal-budget baselines ----------

MARK_START, MARK_END = "<start_important>", "<end_important>"

# An item reduced to what answers the task (the user's past output), in words the
# backbone reads in LaMP's own templates; measured on the demo LaMP-2/3 backbones, these
# carry nearly all of an item's value at a sixth of its tokens (docs/attn-gs.md). LaMP-3
# keeps LaMP's whole frame with one word of the review: the demo backbone reads
# `4 is the score for "nagibi"` (ground-truth item: MAE 0.497) but hardly `4 is the score`
# (0.733); which word matters little (a word shared with the input: 0.490).
_COMPACT = {"LaMP-1": '"{title}"', "LaMP-2": '"{tag}"', "LaMP-2N": '"{category}"',
            "LaMP-3": '{score} is the score for "{first_word}"',
            "LaMP-4": '"{title}"', "LaMP-5": '"{title}"', "LaMP-6": '"{title}"', "LaMP-7": '"{text}"'}
COMPACT_SEPARATOR = ", and "


def compact_item(spec: TaskSpec, item: ProfileItem) -> str:
    template = _COMPACT.get(spec.name, '"{text}"')
    words = _item_source_text(spec, item).split()
    try:
        return template.format(**item.fields, first_word=words[0] if words else "")
    except KeyError:
        return f'"{_item_source_text(spec, item)}"'


def fit_compact(units: Sequence[str], budget: int, tokenize: Tokenize, detokenize: Detokenize) -> str:
    """Join compact items (most important first) while the whole stays within `budget`
    tokens; a first item longer than the budget is cut to it."""
    out = ""
    for unit in units:
        candidate = unit if not out else out + COMPACT_SEPARATOR + unit
        if len(tokenize(candidate)) <= budget:
            out = candidate
        elif not out:
            return detokenize(tokenize(unit)[:budget])
        else:
            break
    return out


def prompt_with_context(spec: TaskSpec, task_input: str, context: str) -> str:
    """The downstream prompt with a (compressed) user context in place of the profile items."""
    if not context:
        return task_input
    if spec.name == "LaMP-1":
        cut = task_input.find("title") + len("title")
        return task_input[:cut] + ", and " + context + task_input[cut:]
    if spec.name == "LaMP-5":
        return f"{context}. Following the given patterns {task_input}"
    if spec.name == "LaMP-7":
        return f"{context} are written by a person. Following the given patterns {task_input}"
    return f"{context}. {task_input}"
