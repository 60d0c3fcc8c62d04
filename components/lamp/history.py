"""Turn profile items into training examples (OPPU / TAP-PER style): each history item
becomes a question whose visible history is the items before it.

Works for the tasks whose profile items hold an (input, output) pair: LaMP-2/2N (text ->
tag/category), LaMP-3 (review -> score), LaMP-4 (article -> headline), LaMP-5 (abstract ->
title), LaMP-6 (email -> subject). LaMP-1 and LaMP-7 items hold no pair and yield none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import TaskSpec

_INPUT_FIELD = {"LaMP-2": ("description", "description"), "LaMP-2N": ("text", "text"),
                "LaMP-3": ("text", "text"), "LaMP-4": ("text", "article"),
                "LaMP-5": ("abstract", "abstract"), "LaMP-6": ("text", "content")}


def supports_history_examples(spec: TaskSpec) -> bool:
    return spec.name in _INPUT_FIELD and spec.label_field is not None


def item_as_question(spec: TaskSpec, item: ProfileItem, history: list[ProfileItem], user_id: str | None,
                     qid: str) -> tuple[Question, str]:
    field, slot = _INPUT_FIELD[spec.name]
    text = spec.input_template.format(**{slot: item.fields[field]})
    return Question(id=qid, input=text, profile=history, user_id=user_id, date=item.date), item.fields[spec.label_field]


def latest_profile_per_user(questions: Iterable[Question]) -> dict[str, list[ProfileItem]]:
    """Each user's longest visible history (their latest question's profile), by user key."""
    return {key: profile for key, (_, profile) in _latest_questions(questions).items()}


def _latest_questions(questions: Iterable[Question]) -> dict[str, tuple[str | None, list[ProfileItem]]]:
    """user key -> (the file's user id, or None where the file has none; longest profile)."""
    best: dict[str, tuple[str | None, list[ProfileItem]]] = {}
    for q in questions:
        if len(q.profile) > len(best.get(q.user_key, (None, []))[1]):
            best[q.user_key] = (q.user_id, q.profile)
    return best


def history_examples(spec: TaskSpec, questions: Iterable[Question], min_history: int = 1
                     ) -> Iterator[tuple[Question, str]]:
    """(question, gold) for every profile item with at least `min_history` items before it."""
    if not supports_history_examples(spec):
        return
    for user_id, profile in _latest_questions(questions).values():
        items = sorted(profile, key=lambda p: p.date or "") if all(p.date for p in profile) else profile
        for i in range(min_history, len(items)):
            yield item_as_question(spec, items[i], items[:i], user_id, f"h-{items[i].id}")
