"""Every baseline end to end on tiny decoder-only and encoder-decoder models."""

import pytest

from components.evaluation.harness import EmptySplitError, evaluate
from components.lamp.io import read_outputs, read_questions
from components.lamp.metrics import score_outputs
from components.lamp.tasks import get_task
from components.methods import UnknownMethodError, build_method

BASELINES = ["non-personalized", "random-2", "recency-2", "bm25-2", "dense-2", "full-context"]


@pytest.fixture(scope="module")
def split(synth_root):
    spec = get_task("LaMP-2")
    qs = read_questions(synth_root / "LaMP-2" / "dev_questions.json", spec)[:6]
    golds = {o.id: o.output for o in read_outputs(synth_root / "LaMP-2" / "dev_outputs.json")[1]}
    return spec, qs, golds


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_end_to_end(tiny, split, name, tmp_path):
    spec, qs, golds = split
    result = evaluate(build_method(name), tiny, spec, qs, golds, "dev", batch_size=4,
                      out_file=tmp_path / "pred.json", progress=False)
    assert result.n == len(qs)
    # the predictions file is in the official format and passes the official scorer
    task, preds = read_outputs(tmp_path / "pred.json", spec)
    assert task == "LaMP_2" and [p.id for p in preds] == [q.id for q in qs]
    assert score_outputs(spec, preds, {q.id: golds[q.id] for q in qs}) == result.metrics
    ctx = [p.context_tokens for p in result.predictions]
    assert all(p.prompt_tokens <= tiny.max_length for p in result.predictions)
    if name == "non-personalized":
        assert ctx == [0] * len(qs)
    else:
        assert min(ctx) > 0
    assert result.costs["examples_per_second"] > 0 and result.costs["context_tokens_p95"] >= 0


def test_full_context_uses_more_context_than_k_items(tiny, split):
    spec, qs, golds = split
    full = evaluate(build_method("full-context"), tiny, spec, qs, golds, progress=False)
    k2 = evaluate(build_method("bm25-2"), tiny, spec, qs, golds, progress=False)
    assert full.costs["context_tokens_mean"] > k2.costs["context_tokens_mean"]


def test_full_context_drops_the_oldest_items_and_counts_them(tiny, split):
    """Profiles longer than the window keep their newest items; the report counts the cut."""
    from components.lamp.prompts import build_prompt
    from components.retrieval.rankers import rank_recency, select_items

    spec, qs, golds = split
    full = evaluate(build_method("full-context"), tiny, spec, qs, golds, progress=False)
    dropped = [p.items_dropped for p in full.predictions]
    assert max(dropped) > 0                                     # 8-20 items do not fit 256 tokens
    assert full.costs["truncated_share"] == sum(d > 0 for d in dropped) / len(qs)
    assert full.summary_entry()["truncated_share"] == full.costs["truncated_share"]
    q = qs[dropped.index(max(dropped))]
    items = select_items(q.profile, rank_recency(spec, q), None)
    prompt = build_prompt(spec, q.input, items, tiny.max_length - spec.max_new_tokens - 2, tiny.tokenize,
                          tiny.detokenize)
    assert sorted(i for i, _, _ in prompt.item_spans) == list(range(max(dropped), len(items)))
    assert evaluate(build_method("bm25-2"), tiny, spec, qs, golds, progress=False).costs["truncated_share"] == 0


def test_bad_method_and_empty_split(tiny, split):
    spec, qs, golds = split
    with pytest.raises(UnknownMethodError, match="unknown baseline"):
        build_method("bm99-x")
    with pytest.raises(EmptySplitError, match="no questions"):
        evaluate(build_method("bm25-2"), tiny, spec, [], golds, progress=False)
