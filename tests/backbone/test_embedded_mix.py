"""The embedded backbone's training contexts (`backbone.embedded.mix_*` in params.yaml)."""

import random
from pathlib import Path

import pytest
import yaml

from components.backbone.embedded import EmbeddedConfig, training_context
from components.config import load_profile
from components.lamp.io import read_questions
from components.lamp.tasks import get_task
from components.retrieval.rankers import rank_bm25

SPEC = get_task("LaMP-2")
ROOT = Path(__file__).resolve().parents[2]


def test_each_mix_draws_its_kind_of_context(synth_root):
    qs = [q for q in read_questions(synth_root / "LaMP-2" / "train_questions.json", SPEC)[:20] if len(q.profile) > 4]
    only = {name: EmbeddedConfig(**{f"mix_{m}": float(m == name) for m in ("none", "bm25", "random", "planted")})
            for name in ("none", "bm25", "random", "planted")}
    rng = random.Random(0)
    for q in qs:
        best = q.profile[rank_bm25(SPEC, q)[0]]
        assert training_context(SPEC, q, only["none"], rng, 4) == []
        top = training_context(SPEC, q, only["bm25"], rng, 4)
        assert {p.id for p in top} == {q.profile[i].id for i in rank_bm25(SPEC, q)[:len(top)]}
        planted = training_context(SPEC, q, only["planted"], rng, 4)
        assert 1 <= len(planted) <= 4 and best in planted                # the best match, among others
        dates = [p.date for p in planted]
        assert dates == sorted(dates)                                     # in date order, as at inference
    # planted_shuffle: the same items, in random order (the relevant one is not always the newest)
    shuffled = EmbeddedConfig(mix_none=0, mix_bm25=0, mix_random=0, mix_planted=1, planted_shuffle=True)
    draws = [training_context(SPEC, q, shuffled, rng, 4) for q in qs for _ in range(5)]
    assert all(q.profile[rank_bm25(SPEC, q)[0]] in d for q, d in zip([q for q in qs for _ in range(5)], draws))
    assert any([p.date for p in d] != sorted(p.date for p in d) for d in draws)
    # the planted item's companions are not BM25's next best: over many draws they vary
    q = qs[0]
    companions = {frozenset(p.id for p in training_context(SPEC, q, only["planted"], rng, 4)) for _ in range(30)}
    assert len(companions) > 3
    everything = EmbeddedConfig(mix_none=0, mix_bm25=0, mix_random=0, mix_planted=0)
    assert len(training_context(SPEC, q, everything, rng, 4)) == len(q.profile)


def test_mix_fractions_over_one_are_refused(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["demo"]["backbone"]["embedded"]["mix_planted"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"backbone\.embedded[\s\S]*mix_planted = 1\.35 > 1"):
        load_profile("demo", tmp_path / "params.yaml")
