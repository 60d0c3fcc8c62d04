"""Checks of a backbone against the data it is trained on: does its tokenizer split the
synthetic vocabulary into many pieces, do the task's answers fit its generation budget."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from components.lamp.tasks import TaskSpec

log = logging.getLogger(__name__)

# Above this many tokens per word a prompt of the synthetic data is mostly word pieces:
# longer, slower, and a word no longer sits in one position the marker can point at.
SPLIT_WARNING = 1.5
# Answers longer than the generation budget can never be produced whole; a few outliers in
# real data are tolerated (with a warning), more than this share is an error.
LONG_ANSWER_SHARE = 0.05


class AnswerTooLongError(ValueError):
    pass


def tokens_per_word(tokenize: Callable[[str], list[int]], words: Iterable[str]) -> float:
    """Mean number of tokens the tokenizer spends on one word (each word alone)."""
    counts = [len(tokenize(w)) for w in words]
    return sum(counts) / max(len(counts), 1)


def synthetic_vocabulary_split(tokenize: Callable[[str], list[int]], model: str) -> float:
    """Tokens per word of the synthetic generator's vocabulary; warns above `SPLIT_WARNING`."""
    from components.lamp.words import FILLERS, STYLES, THEMES

    ratio = tokens_per_word(tokenize, [w for theme in THEMES for w in theme] + list(FILLERS) + list(STYLES))
    if ratio > SPLIT_WARNING:
        log.warning("the tokenizer of %s splits the synthetic vocabulary into %.2f tokens per word "
                    "(components/lamp/words.py): prompts are longer and words span several positions",
                    model, ratio)
    return ratio


def check_answer_budget(spec: TaskSpec, golds: Mapping[str, str], tokenize: Callable[[str], list[int]]) -> int:
    """Refuse a task whose gold answers do not fit the generation budget (`max_new_tokens`):
    an error naming the task, the budget and the longest answer when more than
    `LONG_ANSWER_SHARE` of them are longer, a warning for a few. Returns how many are longer."""
    lengths = {qid: len(tokenize(answer)) for qid, answer in golds.items()}
    budget = spec.max_new_tokens
    over = {qid: n for qid, n in lengths.items() if n > budget}
    if not over:
        return 0
    longest = max(over, key=over.get)
    message = (f"{len(over)} of {len(lengths)} answers of {spec.name} are longer than its generation budget "
               f"of {budget} tokens (max_new_tokens); the longest, question {longest}, has {over[longest]}")
    if len(over) > LONG_ANSWER_SHARE * len(lengths):
        raise AnswerTooLongError(message + ": raise the task's max_new_tokens or use a tokenizer that "
                                           "writes these answers in fewer tokens")
    log.warning("%s: they are cut when generated", message)
    return len(over)
