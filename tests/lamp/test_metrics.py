import math

import pytest

from components.lamp.metrics import (IdMismatchError, classification_metrics, rating_metrics,
                                     rouge_metrics, score_outputs)
from components.lamp.records import Output
from components.lamp.tasks import MOVIE_TAGS


def test_classification_exact_match_and_macro_f1_by_hand():
    labels = ["[1]", "[2]"]
    m = classification_metrics(["[1]", " [2] ", "1", "[2]"], ["[1]", "[2]", "[1]", "[1]"], labels)
    assert m["accuracy"] == pytest.approx(0.5)
    # class [1]: tp=1, fp=0, fn=2 -> 2/4; class [2]: tp=1, fp=1, fn=0 -> 2/3. "1" maps to -1: always wrong
    assert m["f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_macro_f1_matches_sklearn_over_all_labels():
    sk = pytest.importorskip("sklearn.metrics")
    preds = ["comedy", "action", "romance", "not a tag", "comedy", "classic"]
    golds = ["comedy", "comedy", "romance", "action", "fantasy", "classic"]
    ours = classification_metrics(preds, golds, MOVIE_TAGS)
    idx = {t: i for i, t in enumerate(MOVIE_TAGS)}
    p = [idx.get(x, -1) for x in preds]
    g = [idx[x] for x in golds]
    ref = sk.f1_score(g, p, labels=list(range(len(MOVIE_TAGS))), average="macro", zero_division=0)
    assert ours["f1"] == pytest.approx(ref)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(g, p))


def test_rating_fallback_to_worst_extreme():
    # "abc" with gold 4 -> 1.0 (gold closer to 5); "??" with gold 2 -> 5.0; gold 3 ties -> 5.0
    m = rating_metrics(["abc", "??", "x", "4"], ["4", "2", "3", "5"])
    errors = [3.0, 3.0, 2.0, 1.0]
    assert m["MAE"] == pytest.approx(sum(errors) / 4)
    assert m["RMSE"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4))


def test_ratings_that_are_not_finite_or_out_of_range_count_as_unparsable():
    golds = ["4", "2", "4", "2", "4", "1"]
    m = rating_metrics(["nan", "inf", "1e308", "-inf", "7", "0"], golds)
    errors = [3.0, 3.0, 3.0, 3.0, 3.0, 4.0]                  # the worst extreme, as for "abc"
    assert m["MAE"] == pytest.approx(sum(errors) / 6)
    assert math.isfinite(m["RMSE"])
    assert rating_metrics(["1", "5", "2.5"], ["1", "5", "3"])["MAE"] == pytest.approx(0.5 / 3)


def test_rouge_no_stemming_and_mean():
    m = rouge_metrics(["the cats sat", "hello world"], ["the cat sat", "hello world"])
    # first pair: unigram overlap 2/3 each side (no stemming: cats != cat)
    assert m["rouge-1-mean"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["rouge-L-mean"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert 2 / 3 <= m["rouge-1"] <= 1.0
    assert rouge_metrics(["a b"], ["a b"]) == rouge_metrics(["a b"], ["a b"])  # deterministic bootstrap


def test_id_guard():
    with pytest.raises(IdMismatchError, match="1 missing"):
        score_outputs("LaMP-3", [Output("1", "3")], [Output("1", "3"), Output("2", "4")])
    assert score_outputs("LaMP-3", {"1": "3"}, {"1": "5"}) == {"MAE": 2.0, "RMSE": 2.0}
