import json

from components.lamp.io import iter_oppu_users, read_outputs, read_questions
from components.lamp.splits import PopulationConfig, PrepareConfig, assign_populations, prepare_task


def test_prepare_builds_user_time_and_oppu_splits(tmp_path, synth_root):
    summary = prepare_task("LaMP-2", synth_root / "LaMP-2", tmp_path, PrepareConfig(oppu_top_users=5))
    assert summary["time_based"] and summary["users"] == 60
    # time-based: every user's test question is their latest
    test = read_questions(tmp_path / "time" / "test_questions.json")
    train = read_questions(tmp_path / "time" / "train_questions.json")
    latest_train = {}
    for q in train:
        latest_train[q.user_id] = max(latest_train.get(q.user_id, ""), q.date)
    assert len({q.user_id for q in test}) == len(test) == 60
    assert all(q.date >= latest_train[q.user_id] for q in test)
    # outputs follow their questions
    ids = {o.id for o in read_outputs(tmp_path / "time" / "test_outputs.json")[1]}
    assert ids == {q.id for q in test}
    # OPPU: top users are those with the longest history, disjoint from the others
    top = list(iter_oppu_users(tmp_path / "oppu" / "user_top_5_history.json", "LaMP-2"))
    others = list(iter_oppu_users(tmp_path / "oppu" / "user_others.json", "LaMP-2"))
    assert len(top) == 5 and not {u.user_id for u in top} & {u.user_id for u in others}
    assert min(len(u.profile) for u in top) >= max(len(u.profile) for u in others) - 2
    labels = read_outputs(tmp_path / "oppu" / "user_top_5_history_label.json")[1]
    assert {o.id for o in labels} == {q.id for u in top for q in u.queries}
    pops = json.loads((tmp_path / "populations.json").read_text())
    assert sum(pops["sizes"].values()) == 60


def test_kmeans_populations_recover_segments(synth_root):
    qs = read_questions(synth_root / "LaMP-2" / "train_questions.json")
    text = {}
    for q in qs:
        text[q.user_id] = " ".join(p.fields["description"] for p in q.profile)
    pops = assign_populations(text, {}, PopulationConfig(k=3))
    # users were generated with segment = index % 3; each cluster should be (almost) one segment
    purity = 0
    for p in set(pops.values()):
        segs = [int(u[1:]) % 3 for u, v in pops.items() if v == p]
        purity += max(segs.count(s) for s in range(3))
    assert purity / len(pops) > 0.9
    assert set(assign_populations(text, {}, PopulationConfig(rule="single")).values()) == {"p0"}
