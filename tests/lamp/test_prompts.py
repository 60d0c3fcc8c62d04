import pytest

from components.lamp.prompts import PromptTooLongError, build_prompt
from components.lamp.records import ProfileItem
from components.lamp.tasks import get_task

tok = str.split


def detok(ids):
    return " ".join(ids)


def items(n, **fields):
    return [ProfileItem(id=str(i), fields={k: f"{v} {i}" for k, v in fields.items()}, date=f"2020-01-{i + 1:02d}")
            for i in range(n)]


def test_lamp2_template_and_label_segments():
    p = build_prompt(get_task("LaMP-2"), "INPUT", items(2, description="a film", tag="comedy"), 100, tok, detok)
    assert p.text == ('the tag for the movie: "a film 0" is "comedy 0" , and the tag for the movie: '
                      '"a film 1" is "comedy 1" . INPUT')
    assert [s for s, label in p.segments if label] == ["comedy 0", "comedy 1"]
    assert p.n_items == 2 and p.context_tokens == len(tok(p.text)) - 1


@pytest.mark.parametrize("task, fields, tail", [
    ("LaMP-3", {"text": "good", "score": "5"}, ". INPUT"),
    ("LaMP-4", {"text": "article", "title": "Head"}, ". INPUT"),
    ("LaMP-5", {"abstract": "we", "title": "T"}, ". Following the given patterns INPUT"),
    ("LaMP-7", {"text": "tweet"}, " are written by a person. Following the given patterns INPUT"),
])
def test_templates_end_with_the_input(task, fields, tail):
    p = build_prompt(get_task(task), "INPUT", items(2, **fields), 200, tok, detok)
    assert p.text.endswith(tail)


def test_lamp1_inserts_titles_after_title():
    spec = get_task("LaMP-1")
    inp = spec.input_template.format(title="P", ref1="R1", ref2="R2")
    p = build_prompt(spec, inp, items(1, title="Old", abstract="x"), 200, tok, detok)
    assert p.text.startswith('For an author who has written the paper with the title, and "Old 0" "P"')


def test_items_are_truncated_to_fit_the_budget():
    long = items(10, description="w " * 100, tag="comedy")
    for limit in (60, 120, 300):
        p = build_prompt(get_task("LaMP-2"), "which tag " * 5, long, limit, tok, detok)
        assert len(tok(p.text)) <= limit and p.n_items >= 1


def test_input_alone_too_long():
    with pytest.raises(PromptTooLongError, match="limit of 10"):
        build_prompt(get_task("LaMP-2"), "w " * 20, [], 10, tok, detok)
