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
    kinds = ("none", "bm25", "random", "recall")
    only = {name: EmbeddedConfig(**{f"mix_{m}": float(m == name) for m in kinds}) for name in kinds}
    rng = random.Random(0)
    for q in qs:
        assert training_context(SPEC, q, only["none"], rng, 4) == ([], None)
        top, answer = training_context(SPEC, q, only["bm25"], rng, 4)
        assert answer is None                                             # the question's gold stays
        assert {p.id for p in top} == {q.profile[i].id for i in rank_bm25(SPEC, q)[:len(top)]}
        drawn, answer = training_context(SPEC, q, only["random"], rng, 4)
        assert answer is None and 1 <= len(drawn) <= 4 and {p.id for p in drawn} <= {p.id for p in q.profile}
    # random items vary between draws; the rest of the mix shows every item
    q = qs[0]
    assert len({frozenset(p.id for p in training_context(SPEC, q, only["random"], rng, 4)[0])
                for _ in range(30)}) > 3
    everything = EmbeddedConfig(mix_none=0, mix_bm25=0, mix_random=0, mix_recall=0)
    assert len(training_context(SPEC, q, everything, rng, 4)[0]) == len(q.profile)


def test_recall_prompts_relabel_the_items_so_only_matching_finds_the_answer(synth_root):
    qs = [q for q in read_questions(synth_root / "LaMP-2" / "train_questions.json", SPEC)[:20] if len(q.profile) > 4]
    recall = EmbeddedConfig(mix_none=0, mix_bm25=0, mix_random=0, mix_recall=1)
    rng, places, answers = random.Random(0), set(), set()
    original = {p.id: p.fields["tag"] for q in qs for p in q.profile}
    for q in qs:
        for k in (1, 4):
            items, answer = training_context(SPEC, q, recall, rng, k)
            best = q.profile[rank_bm25(SPEC, q)[0]]
            assert 2 <= len(items) <= 4                                   # at least one other item to tell apart
            labels = [p.fields["tag"] for p in items]
            assert len(set(labels)) == len(labels) and set(labels) <= set(SPEC.labels)
            shown = {p.id: p for p in items}
            assert shown[best.id].fields["tag"] == answer                 # the answer is the best match's new label
            assert shown[best.id].fields["description"] == best.fields["description"]
            ranking = rank_bm25(SPEC, q)                                  # the others are unlike the input
            assert set(shown) - {best.id} <= {q.profile[i].id for i in ranking[len(ranking) // 2:]}
            places.add([p.id for p in items].index(best.id))
            answers.add(answer)
    assert len(places) > 1 and len(answers) > 3                           # neither its place nor its label is fixed
    assert original == {p.id: p.fields["tag"] for q in qs for p in q.profile}    # the profiles are not mutated
    # tasks without a closed label set get BM25's top k and keep their gold
    headline = get_task("LaMP-4")
    q = read_questions(synth_root / "LaMP-4" / "train_questions.json", headline)[0]
    items, answer = training_context(headline, q, recall, rng, 2)
    assert answer is None and {p.id for p in items} == {q.profile[i].id for i in rank_bm25(headline, q)[:len(items)]}


def test_mix_fractions_over_one_are_refused(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["demo"]["backbone"]["embedded"]["mix_random"] = 0.6
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"backbone\.embedded[\s\S]*mix_recall = 1\.25 > 1"):
        load_profile("demo", tmp_path / "params.yaml")


def test_profile_label_loss_sits_on_labels_that_follow_their_text_only(synth_root):
    from components.backbone.embedded import _example
    from components.backbone.reader import ReaderConfig, load_reader
    from components.backbone.model import Backbone
    from tests.tiny_models import tiny_reader

    model, tokenizer = load_reader(ReaderConfig(path=str(tiny_reader())))
    backbone = Backbone(model, tokenizer, name="tiny")
    full = dict(mix_none=0, mix_bm25=0, mix_random=0, mix_recall=0)          # every item that fits
    for task, field, follows in (("LaMP-2", "tag", True), ("LaMP-3", "score", False)):
        spec = get_task(task)
        q = next(q for q in read_questions(synth_root / task / "train_questions.json", spec) if len(q.profile) > 3)
        answer = [*backbone.tokenize("5" if task == "LaMP-3" else spec.labels[0]), tokenizer.eos_token_id]
        for on in (False, True):
            cfg = EmbeddedConfig(**full, profile_label_loss=on, max_length=512)
            _, labels = _example(spec, q, tokenizer.decode(answer[:-1]), backbone, cfg, random.Random(0), 4)
            targets = [t for t in labels if t != -100]
            assert targets[-len(answer):] == answer                             # the answer always
            profile = [t for t in targets[:-len(answer)]]
            if on and follows:                                                 # and every item's tag
                shown = [t for p in q.profile for t in backbone.tokenize(p.fields[field])]
                assert len(profile) > 0 and set(profile) <= set(shown)
            else:
                assert profile == []


def test_permuted_labels_rename_every_label_by_one_permutation(synth_root):
    from components.backbone.embedded import permuted_labels

    qs = [q for q in read_questions(synth_root / "LaMP-2" / "train_questions.json", SPEC) if len(q.profile) > 6]
    rng, moved = random.Random(0), 0
    for q in qs[:10]:
        gold = q.profile[0].fields["tag"]
        items, renamed = permuted_labels(SPEC, q.profile, gold, rng)
        rename = {}
        for before, after in zip(q.profile, items):
            old, new = before.fields["tag"], after.fields["tag"]
            assert rename.setdefault(old, new) == new                          # one label, one new name
            assert after.fields["description"] == before.fields["description"]
            moved += old != new
        assert len(set(rename.values())) == len(rename) and set(rename.values()) <= set(SPEC.labels)
        assert renamed == rename[gold]                                          # the answer renamed alike
    assert moved > 0
    assert qs[0].profile[0].fields["tag"] in SPEC.labels                       # the questions are not mutated
