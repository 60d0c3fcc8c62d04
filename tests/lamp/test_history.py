"""Profile items turned into training questions keep the user they came from."""

from components.lamp.history import history_examples
from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import get_task


def _question(qid: str, user: str | None, n_items: int) -> Question:
    items = [ProfileItem(id=f"{qid}-{i}", fields={"description": f"orbit planet {i}", "tag": "comedy"},
                         date=f"2020-01-{i + 1:02d}") for i in range(n_items)]
    return Question(id=qid, input="description: orbit", profile=items, user_id=user, date="2020-02-01")


def test_derived_examples_keep_every_user_id_whatever_its_shape():
    """A user id that starts with "q" (as the keys of id-less files do) is still a user id."""
    spec = get_task("LaMP-2")
    questions = [_question("1", "quinn1", 3), _question("2", "u000001", 3), _question("3", "q", 2)]
    users = {q.user_id for q, _ in history_examples(spec, questions)}
    assert users == {"quinn1", "u000001", "q"}
    assert all(q.user_key in {"quinn1", "u000001", "q"} for q, _ in history_examples(spec, questions))


def test_files_without_user_ids_give_examples_without_one():
    spec = get_task("LaMP-2")
    examples = list(history_examples(spec, [_question("7", None, 3)]))
    assert len(examples) == 2 and all(q.user_id is None for q, _ in examples)
