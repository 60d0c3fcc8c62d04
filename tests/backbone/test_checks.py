"""A tokenizer that splits the synthetic vocabulary, answers longer than the generation budget."""

import logging

import pytest

from components.backbone.checks import AnswerTooLongError, check_answer_budget, synthetic_vocabulary_split
from components.lamp.tasks import get_task


def _words(text: str) -> list[int]:
    return [hash(w) % 1000 for w in text.split()]


def test_a_word_level_tokenizer_spends_one_token_per_word(caplog):
    with caplog.at_level(logging.WARNING):
        assert synthetic_vocabulary_split(_words, "word-level") == 1.0
    assert not caplog.records


def test_a_tokenizer_that_splits_words_is_warned_about_with_the_measured_ratio(caplog):
    def pieces(text: str) -> list[int]:             # two characters a token
        return [hash(text[i:i + 2]) % 1000 for i in range(0, len(text), 2)]

    with caplog.at_level(logging.WARNING):
        ratio = synthetic_vocabulary_split(pieces, "char-pairs")
    assert ratio > 2
    assert f"char-pairs splits the synthetic vocabulary into {ratio:.2f} tokens per word" in caplog.text


def test_answers_longer_than_the_budget_are_refused_by_task_and_budget():
    spec = get_task("LaMP-2")                      # max_new_tokens 6
    golds = {f"q{i}": "comedy" for i in range(10)} | {"q99": "a very long tag of many many words indeed"}
    golds |= {f"r{i}": "based on a book of many more words" for i in range(3)}
    with pytest.raises(AnswerTooLongError, match=r"4 of 14 answers of LaMP-2 .* budget of 6 tokens .* q99, has 9"):
        check_answer_budget(spec, golds, _words)


def test_a_few_long_answers_are_a_warning(caplog):
    spec = get_task("LaMP-2")
    golds = {f"q{i}": "comedy" for i in range(99)} | {"q99": "a very long tag of many many words indeed"}
    with caplog.at_level(logging.WARNING):
        assert check_answer_budget(spec, golds, _words) == 1
    assert "1 of 100 answers of LaMP-2" in caplog.text
