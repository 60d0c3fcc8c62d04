"""Diagnostics behind docs/attn-gs.md, one run each.

`formats`: how much of a relevant item the frozen task backbone needs. The ground-truth
relevant items (`relevance.json`, newest first) or BM25's top items, 1 or 2 of them, in
four forms: the past output alone (`"comedy"`), the compact form `compact_item` writes,
the item with 3 words of its text, and the item as LaMP writes it; accuracy/MAE and
mean context tokens on the first N time/test questions.

`marker-share`: can the marker's q/k projections learn where to look? Trains them as
`finetune_marker` does (the attention loss only; with the learned temperature unless
`--no-temperature`), once per seed, on the training prompts and reports the share of the
items' attention on the flagged items for 64 held-out prompts before and after, next to
chance (the flagged fraction), plus precision@2 against the ground truth.

`weak-labels`: how precise the marker's weak labels are against the ground truth, per
profile item of the first N time/train questions: `label` (the item's output is the
answer), `label+lexical` (and it shares a content word with the input), `label+bm25` (and
it is among the profile's top-4 BM25 matches; the marker applies this to the shown items).

`inference-sweep`: precision@2 of the inference-only marker (the task backbone's raw
attention) over every marking setting, next to random marking.

`heads`: which layer and head of the marking model (`--marker-source`: the task backbone,
`minilm` or a name or path) points at the relevant items on its own: precision@2 of the
inference-only marker for every layer, with each head alone and the mean over heads, on
the split given (`--split time/dev` to choose a head without looking at time/test),
with params.yaml's query, item pooling and hidden outputs; one pass per layer.

`planted`: the same question in the setting the backbone was trained on: one ground-truth
relevant item (the newest) among 3 random others of the profile, either in date order (as
every prompt is built; the relevant item is then often the newest, so a recency-biased
attention looks right) or at a random place (dates dropped, so the marker keeps the order);
precision@1 of every marking setting, next to chance (0.25) and to "the last item shown"
(the newest, in date order).

`positions`: what the frozen backbone *answers*, not where it looks: accuracy/MAE with the
newest ground-truth relevant item shown first, last or at a random place among 3 random
non-relevant items, next to 4 non-relevant items alone, and to the relevant item's output
on a non-relevant item's text (at the same random place). A backbone that matches the
input against the items answers as well with the relevant item first as last, and worse
when its output stands on another text; one that copies the newest item's output only
gains when it is last, one that votes over the shown outputs gains as much from the
output on another text, and then no reading of its attention can find the relevant item
by its content.

`recall`: can the backbone match at all? The recall prompts of `backbone.embedded.mix_recall`
on time/test questions: BM25's best item for the input among 1 or 3 other items (from the
half of the profile least like the input), each relabelled with a different label drawn
afresh, in random order; the answer is the best item's new label, so only matching the input
against the items' texts beats chance (1/2, 1/4). Accuracy next to chance, and how often the
answer is one of the shown labels.

    python bench/attn_gs_diagnostics.py formats [--task LaMP-2] [--limit 300]
    python bench/attn_gs_diagnostics.py marker-share [--task LaMP-3] [--steps 800] [--supervision label] \
        [--seeds 0 1 2] [--no-temperature]
    python bench/attn_gs_diagnostics.py weak-labels [--task LaMP-3] [--limit 500]
    python bench/attn_gs_diagnostics.py inference-sweep [--task LaMP-3] [--limit 200]
    python bench/attn_gs_diagnostics.py heads [--task LaMP-3] [--marker-source minilm] [--split time/dev]
    python bench/attn_gs_diagnostics.py planted [--task LaMP-3] [--limit 300] [--backbone DIR]
    python bench/attn_gs_diagnostics.py positions [--task LaMP-3] [--limit 300] [--backbone DIR]
    python bench/attn_gs_diagnostics.py recall [--task LaMP-3] [--limit 300] [--backbone DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def formats(spec, backbone, questions, golds, relevance) -> None:
    from components.lamp.metrics import score_texts
    from components.lamp.prompts import _item_parts, _item_source_text, compact_item, prompt_with_context
    from components.retrieval.rankers import rank_bm25, rank_recency

    def pick(q, how):
        if how == "ground truth":
            relevant = set(relevance.get(q.id, {}).get("relevant", []))
            return [i for i in rank_recency(spec, q) if q.profile[i].id in relevant]
        return rank_bm25(spec, q)

    def render(item, form):
        if form == "output only":
            parts = _item_parts(spec, item, "")
            return "".join(s for s, is_label in parts if is_label)
        if form == "compact":
            return compact_item(spec, item)
        text = _item_source_text(spec, item)
        if form == "3 words":
            text = " ".join(text.split()[:3])
        return "".join(s for s, _ in _item_parts(spec, item, text)).strip()

    for how in ("ground truth", "bm25"):
        for form in ("output only", "compact", "3 words", "full item"):
            for n in (1, 2):
                contexts = [", and ".join(render(q.profile[i], form) for i in pick(q, how)[:n][::-1]) for q in questions]
                outs = backbone.generate([prompt_with_context(spec, q.input, c) for q, c in zip(questions, contexts)],
                                         spec.max_new_tokens, batch_size=32)
                m = score_texts(spec, outs, [golds[q.id] for q in questions])
                tokens = sum(backbone.count_tokens(c) for c in contexts) / len(contexts)
                print(f"  {how:<12} {form:<11} {n} item(s): {spec.primary_metric} {m[spec.primary_metric]:.3f}, "
                      f"{tokens:.1f} context tokens", flush=True)


def precision_at_2(scores, questions, relevance) -> float:
    """Mean precision@2 of per-item scores against the ground-truth relevant items."""
    from components.methods.attn_gs.marking import precision_recall_at_k

    found = [precision_recall_at_k(s, [p.id for p in q.profile], set(relevance.get(q.id, {}).get("relevant", [])), 2)
             for q, s in zip(questions, scores)]
    found = [f for f in found if f]
    return sum(p for p, _ in found) / len(found)


def weak_labels(spec, questions, golds, relevance) -> None:
    from components.methods.attn_gs.train import _content_words
    from components.methods.weak_labels import gold_output_mask, lexical_top_mask

    counts = {rule: [0, 0, 0] for rule in ("label", "label+lexical", "label+bm25")}   # flagged, right, relevant
    for q in questions:
        if q.id not in relevance or not q.profile:
            continue
        relevant = set(relevance[q.id]["relevant"])
        label = gold_output_mask(spec, [q.profile], [golds[q.id]], len(q.profile))[0]
        top = lexical_top_mask(spec, [q], [q.profile], len(q.profile), 4)[0]
        query = _content_words(spec.query_text(q.input))
        for i, item in enumerate(q.profile):
            lexical = bool(query & _content_words(spec.item_text(item.fields)))
            for rule, flag in (("label", label[i]), ("label+lexical", label[i] and lexical),
                               ("label+bm25", label[i] and top[i])):
                c = counts[rule]
                c[0] += bool(flag)
                c[1] += bool(flag) and item.id in relevant
                c[2] += item.id in relevant
    for rule, (flagged, right, rel) in counts.items():
        print(f"  {rule:<14} flagged {flagged:6}  precision {right / max(flagged, 1):.2f}  "
              f"recall {right / max(rel, 1):.2f}", flush=True)


def _settings(per_head: int = 0):
    """Every marking setting the sweeps try: outputs shown/hidden, query, layer, item pooling,
    heads (mean, max, and with `per_head` heads each head alone, summed over an item)."""
    import itertools

    yield from itertools.product([False, True], ["last", "input", "generated"], ["0", "1"], ["max", "sum", "mean"],
                                 ["mean", "max"])
    yield from itertools.product([False, True], ["last", "input", "generated"], ["0", "1"], ["sum"],
                                 [str(h) for h in range(per_head)])


def inference_sweep(spec, backbone, questions, relevance, per_head: int = 0) -> None:
    from components.methods.attn_gs.marking import Marker, MarkingConfig, random_scores

    print(f"  random marking: precision@2 {precision_at_2([random_scores(q) for q in questions], questions, relevance):.3f}")
    for hide, query, layers, pool, heads in _settings(per_head):
        marking = MarkingConfig(layers=layers, head_aggregation=heads, token_pooling=pool, rule="top_k", top_k=2,
                                hide_outputs=hide, query=query)
        p2 = precision_at_2(Marker(backbone, marking).score(spec, questions), questions, relevance)
        print(f"  outputs {'hidden' if hide else 'shown ':<6} query {query:<9} layer {layers} pooling {pool:<4} "
              f"heads {heads:<4} precision@2 {p2:.3f}", flush=True)


def head_sweep(spec, marker_model, questions, relevance) -> None:
    import dataclasses

    from components.config import load_profile
    from components.methods.attn_gs.marking import Marker, attention_modules, random_scores

    marking = load_profile(None, ROOT / "params.yaml").attn_gs.configs()[0]
    print(f"  {marker_model.name}: query {marking.query}, pooling {marking.token_pooling}, outputs "
          f"{'hidden' if marking.hide_outputs else 'shown'}; random marking precision@2 "
          f"{precision_at_2([random_scores(q) for q in questions], questions, relevance):.3f}", flush=True)
    best = (-1.0, None)
    for layer in range(len(attention_modules(marker_model.model, marking.query))):
        scores = Marker(marker_model, dataclasses.replace(marking, layers=str(layer))).score(spec, questions,
                                                                                            per_head=True)
        n_heads = len(next(s for s in scores if s)[0])
        per_head = [precision_at_2([[item[h] for item in s] for s in scores], questions, relevance)
                    for h in range(n_heads)]
        mean = precision_at_2([[sum(item) / n_heads for item in s] for s in scores], questions, relevance)
        best = max(best, *((p, (layer, h)) for h, p in enumerate(per_head)))
        print(f"  layer {layer}: heads mean {mean:.3f}; each head " + " ".join(f"{h}:{p:.3f}" for h, p in
                                                                              enumerate(per_head)), flush=True)
    print(f"  best: layer {best[1][0]} head {best[1][1]}, precision@2 {best[0]:.3f} "
          f"(params.yaml: attn_gs.layers \"{best[1][0]}\", head_aggregation {best[1][1]})")


def _planted(questions, relevance, others: int = 3, places: int = 4):
    """(question, its newest relevant item, `others` random non-relevant items, a random
    place among `places`) for every question that has them; one fixed random draw."""
    import random

    rng, out = random.Random(0), []
    for q in questions:
        relevant = set(relevance.get(q.id, {}).get("relevant", []))
        good = [p for p in q.profile if p.id in relevant]
        bad = [p for p in q.profile if p.id not in relevant]
        if good and len(bad) >= others:
            out.append((q, good[-1], rng.sample(bad, others), rng.randrange(places)))
    return out


def planted(spec, backbone, questions, relevance, per_head: int = 0) -> None:
    import dataclasses

    from components.methods.attn_gs.marking import Marker, MarkingConfig

    for order in ("date order", "random place"):
        cases = []
        for q, good, bad, place in _planted(questions, relevance):
            items = list(bad)
            items.insert(place, good)
            if order == "date order":
                items.sort(key=lambda p: p.date or "")
            else:                                   # the marker sorts by date: drop the dates
                items = [dataclasses.replace(p, date=None) for p in items]
            cases.append((dataclasses.replace(q, profile=items), good.id))
        last = sum(q.profile[-1].id == g for q, g in cases) / len(cases)     # in date order: the newest
        print(f"  {order}: {len(cases)} prompts; chance 0.250; the last item shown {last:.3f}", flush=True)
        for hide, query, layers, pool, heads in _settings(per_head):
            marking = MarkingConfig(layers=layers, head_aggregation=heads, token_pooling=pool, rule="top_k", top_k=1,
                                    hide_outputs=hide, query=query)
            scores = Marker(backbone, marking).score(spec, [q for q, _ in cases])
            hit = sum(q.profile[max(range(len(s)), key=s.__getitem__)].id == g for (q, g), s in zip(cases, scores))
            print(f"    outputs {'hidden' if hide else 'shown ':<6} query {query:<9} layer {layers} pooling {pool:<4} "
                  f"heads {heads:<4} precision@1 {hit / len(cases):.3f}", flush=True)


def _swap_text(spec, item, donor):
    """`item` with `donor`'s fields but its own output: the answer without its content."""
    from components.lamp.records import ProfileItem

    return ProfileItem(item.id, {**donor.fields, spec.label_field: item.fields[spec.label_field]}, item.date)


def positions(spec, backbone, questions, golds, relevance) -> None:
    from bench.backbone import answers
    from components.lamp.metrics import score_texts

    cases = _planted(questions, relevance, others=4, places=4)
    shows = {"4 non-relevant, no relevant item": lambda good, bad, place: bad,
             "relevant item first": lambda good, bad, place: [good] + bad[:3],
             "relevant item at a random place": lambda good, bad, place: bad[:place] + [good] + bad[place:3],
             "relevant item last": lambda good, bad, place: bad[:3] + [good]}
    if spec.label_field:                                        # LaMP-7's items have no output field
        shows["its output on another item's text, random place"] = \
            lambda good, bad, place: bad[:place] + [_swap_text(spec, good, bad[3])] + bad[place:3]
    print(f"  {len(cases)} questions; items in the order given (dates not shown in LaMP prompts)")
    print(f"  {'shown':<50} {spec.primary_metric}")
    for name, show in shows.items():
        outs = answers(spec, backbone, [(q.input, show(good, bad, place)) for q, good, bad, place in cases])
        m = score_texts(spec, outs, [golds[q.id] for q, *_ in cases])
        print(f"  {name:<50} {m[spec.primary_metric]:.3f}", flush=True)


def recall(spec, backbone, questions) -> None:
    from bench.backbone import recall_at_k

    if spec.label_field is None or not spec.labels:
        raise SystemExit(f"recall needs a task with a closed label set; {spec.name} has none")
    for k in (2, 4):
        r = recall_at_k(spec, backbone, questions, k)
        print(f"  {k} items, {r['n']} prompts: answer = the matching item's label {r['exact']:.3f}; "
              f"chance {r['chance']:.3f}; answer = one of the shown labels {r['shown']:.3f}", flush=True)


def marker_share(spec, backbone, args, test_questions, relevance) -> None:
    import random

    import torch

    from components.methods.attn_gs.data import training_data
    from components.methods.attn_gs.marking import Marker, MarkingConfig, capture_attention, item_attention
    from components.methods.attn_gs.train import FinetuneConfig, finetune_marker, marker_examples

    marking = MarkingConfig(layers=args.layers, query=args.query, head_aggregation=args.head)
    summed = MarkingConfig(layers=args.layers, query=args.query, head_aggregation=args.head, token_pooling="sum")
    pairs = training_data(spec, ROOT / "data", 6000)
    held_out = [e for e in marker_examples(spec, pairs[:400], backbone.max_length - 10, backbone.tokenize,
                                           backbone.detokenize, seed=1, supervision=args.supervision)
                if any(e[2])][:64]

    def share(bb):
        with torch.no_grad(), capture_attention(bb.model, marking.layers, marking.query, skip_rest=True) as modules:
            rows = item_attention(bb, [e[0] for e in held_out], modules, summed, [e[3] for e in held_out],
                                  [e[1] for e in held_out])
        return sum(float(r[torch.tensor(e[2])].sum() / r.sum()) for r, e in zip(rows, held_out)) / len(held_out)

    def precision(bb):
        return precision_at_2(Marker(bb, marking).score(spec, test_questions), test_questions, relevance)

    chance = sum(sum(e[2]) / len(e[2]) for e in held_out) / len(held_out)
    print(f"  flagged share on 64 held-out prompts: chance {chance:.3f}, before {share(backbone):.3f}; "
          f"precision@2 on {len(test_questions)} test questions before: {precision(backbone):.3f}", flush=True)
    for seed in args.seeds:
        random.seed(seed)
        tuned, losses = finetune_marker(backbone, spec, pairs[400:], marking,
                                        FinetuneConfig(steps=args.steps, lr=args.lr, seed=seed),
                                        supervision=args.supervision, temperature=args.temperature)
        print(f"  seed {seed}, after {args.steps} steps{'' if args.temperature else ' (no temperature)'}: "
              f"share {share(tuned):.3f} (loss {losses[0]:.2f} -> {sum(losses[-20:]) / len(losses[-20:]):.2f}); "
              f"precision@2 {precision(tuned):.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["formats", "marker-share", "weak-labels", "inference-sweep", "heads", "planted",
                                     "positions", "recall"],
                    help="which diagnostic")
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--limit", type=int, default=300,
                    help="questions used (the first N; time/train for weak-labels, time/test otherwise)")
    ap.add_argument("--steps", type=int, default=800, help="marker-share: training steps")
    ap.add_argument("--lr", type=float, default=3e-3, help="marker-share: learning rate")
    ap.add_argument("--layers", default="0", help="marker-share: marking layers")
    ap.add_argument("--query", default="input", choices=["last", "input", "generated"],
                    help="marker-share: marking query (generated: from the positions that write the answer)")
    ap.add_argument("--head", default="mean", help="marker-share: head aggregation (mean | max | a head's index)")
    ap.add_argument("--marker-source", default="backbone",
                    help="heads, inference-sweep, planted, marker-share: the model the marker reads: backbone "
                         "(the task backbone) | minilm | a name or path (as attn_gs.marker_source)")
    ap.add_argument("--split", default=None,
                    help="questions from this split (default: time/train for weak-labels, time/test otherwise)")
    ap.add_argument("--per-head", action="store_true",
                    help="inference-sweep, planted: also each attention head alone")
    ap.add_argument("--backbone", metavar="DIR",
                    help="a saved backbone (e.g. bench/backbone.py --save DIR) instead of the registered one")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="marker-share: one marker per seed")
    ap.add_argument("--no-temperature", dest="temperature", action="store_false",
                    help="marker-share: train the q/k projections without the learned temperature")
    ap.add_argument("--supervision", default="label+bm25", choices=["label", "label+lexical", "label+bm25"],
                    help="marker-share: the weak labels (default: as params.yaml)")
    args = ap.parse_args()

    import flows  # noqa: F401  (environment defaults)
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.lamp.tasks import get_task
    from components.tracking import mlflow_tracking
    from components.tracking.mlflow_tracking import resolve_backbone

    spec = get_task(args.task)
    mlflow_tracking.configure(ROOT)
    reads_marker = args.what in ("heads", "inference-sweep", "planted", "marker-share")
    if args.backbone:
        from components.backbone.model import load_backbone

        backbone = load_backbone(args.backbone)
    elif reads_marker and args.marker_source != "backbone":
        backbone = None                                     # the marking model is all it needs
    else:
        backbone, _ = resolve_backbone(spec.name, None, ROOT)
    split = args.split or ("time/train" if args.what == "weak-labels" else "time/test")
    qfile, ofile = split_files(spec.name, split, ROOT / "data")
    questions = read_questions(qfile, spec)[:args.limit]
    relevance = json.loads((ROOT / "data" / "raw" / spec.name / "relevance.json").read_text())
    print(f"{spec.name} {split}: {args.what}")
    if reads_marker:
        from components.methods.attn_gs.marking import marker_base

        backbone = marker_base(args.marker_source, backbone)      # the model whose attention is read
    config = backbone.model.config
    heads = (getattr(config, "num_attention_heads", None) or config.num_heads) if args.per_head else 0
    if args.what == "formats":
        formats(spec, backbone, questions, read_golds(ofile, spec), relevance)
    elif args.what == "weak-labels":
        weak_labels(spec, questions, read_golds(ofile, spec), relevance)
    elif args.what == "inference-sweep":
        inference_sweep(spec, backbone, questions, relevance, heads)
    elif args.what == "heads":
        head_sweep(spec, backbone, questions, relevance)
    elif args.what == "planted":
        planted(spec, backbone, questions, relevance, heads)
    elif args.what == "positions":
        positions(spec, backbone, questions, read_golds(ofile, spec), relevance)
    elif args.what == "recall":
        recall(spec, backbone, questions)
    else:
        marker_share(spec, backbone, args, questions, relevance)


if __name__ == "__main__":
    main()
