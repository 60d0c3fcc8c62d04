"""Benchmark: Attn-GS against its equal-budget baselines, one run, same questions.

1. Fine-tunes the marker (the marking layers' query and key projections and, unless
   `--no-marker-temperature`, a learned temperature per layer, on the attention loss), marks
   the training profiles, trains the compressor (`components/methods/attn_gs/train.py`).
2. Marker quality on the test questions against the generator's ground-truth relevant
   items (`relevance.json`): precision@k / recall@k of the inference-only marker (the
   marking model as is: the task backbone, or `--marker-source`), the fine-tuned marker,
   random marking, and BM25 for reference.
3. Quality and context tokens on time/test for: non-personalized, full context, BM25-4,
   and at every budget B: Attn-GS (fine-tuned marker), Attn-GS with the inference-only
   marker, random marking, mark-all, direct summary (compressor without marks),
   recency@B, bm25@B, dense@B (ranked items in compact form, fitted to B), and
   `attn-gs-target@B`: the compressor's training target in place of what it writes (a
   perfect compressor), with the share of questions where the compressor wrote exactly that
   and where it began with the past output its target puts first; and `bm25-target@B`: the
   same target built on BM25's scores instead of the marker's (BM25's top items under the
   marking rule, in the target's order: with `marked-consensus`, the item whose output
   BM25's top 5 agree on first), which tells the target's share of the gain from the marker's.
4. Costs: marking and compression seconds per user; a second evaluation of Attn-GS at
   each budget reads the compressed-context cache (hit rate reported).
5. The plot of quality against mean context tokens (log scale) and the table behind it
   go to reports/bench/ and to one MLflow run (experiment `bench-attn-gs`).

Needs `persona pipeline` (or `persona train backbone`) to have run.

    python bench/attn_gs.py [--task LaMP-2] [--budgets 8 32] [--limit 500] [--seeds 0 1 2]

With several `--seeds`, steps 1, 2 and the Attn-GS rows of 3 and 4 run once per seed (the
other methods once): one run's quality sits within a few hundredths of the bars.
"""

from __future__ import annotations

import argparse
import json
from statistics import mean
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def marker_quality(spec, questions, relevance, scorers, ks=(1, 2, 4)):
    from components.methods.attn_gs.marking import precision_recall_at_k

    out = {}
    for name, scores in scorers.items():
        row = {}
        for k in ks:
            pairs = [precision_recall_at_k(s, [p.id for p in q.profile], set(relevance.get(q.id, {}).get("relevant", [])), k)
                     for q, s in zip(questions, scores)]
            pairs = [p for p in pairs if p is not None]
            row[f"precision@{k}"] = sum(p for p, _ in pairs) / len(pairs)
            row[f"recall@{k}"] = sum(r for _, r in pairs) / len(pairs)
        out[name] = row
    return out


def perfect_compressor(target):
    """Attn-GS with the compressor replaced by its training target (`target`, a builder of
    `components/methods/attn_gs/method.py`, on the marker's scores): what a compressor that
    learned its task perfectly would give, so that the marker's share of the loss and the
    compressor's can be told apart. After an evaluation it keeps the contexts it gave
    (`targets`) and, per question, the past output of the item the target puts first
    (`leads`), in the order evaluated."""
    from components.methods.attn_gs.method import AttnGSMethod

    class PerfectCompressor(AttnGSMethod):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.name = f"attn-gs-target@{self.budget}"
            self.targets, self.leads = [], []

        def contexts(self, spec, questions, downstream):            # called batch by batch
            targets = []
            for q, s in zip(questions, self.scores(spec, questions)):
                flags = self.flags(s)
                order = target.order(spec, q, s, flags) if hasattr(target, "order") else []
                self.leads.append(q.profile[order[0]].fields.get(spec.label_field) if order and spec.label_field
                                  else None)
                targets.append(target(spec, q, s, flags, self.budget, downstream.tokenize, downstream.detokenize)
                               if q.profile else "")
            self.targets += targets
            return targets

    return PerfectCompressor


class FixedScores:
    """A stand-in marker that returns given scores per question id (BM25's, for `bm25-target@B`)."""

    def __init__(self, scores: dict[str, list[float]]):
        self.by_id = scores

    def score(self, spec, questions):
        return [self.by_id[q.id] for q in questions]


def compressor_fidelity(written, perfect, backbone) -> dict:
    """How close what the compressor wrote (`written`, one context per question) is to its
    training target (`perfect.targets` after the perfect compressor's evaluation)."""
    differ = [(w, t) for w, t in zip(written, perfect.targets) if backbone.tokenize(w) != backbone.tokenize(t)]
    leads = [(w, lead) for w, lead in zip(written, perfect.leads) if lead is not None]
    return {"contexts_equal_to_target": 1 - len(differ) / max(1, len(written)),
            "contexts_leading_with_target_output": sum(w.lstrip('" ').startswith(lead) for w, lead in leads)
                                                / max(1, len(leads)),
            "contexts_unlike_target": [{"written": w, "target": t} for w, t in differ[:20]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="token budgets B (default: params.yaml)")
    ap.add_argument("--limit", type=int, default=500, help="test questions evaluated (the first N)")
    ap.add_argument("--marker-steps", type=int, default=None, help="marker fine-tuning steps (default: params.yaml)")
    ap.add_argument("--supervision", choices=["label", "label+lexical", "label+bm25"], default=None,
                    help="the marker's weak relevance labels (default: params.yaml)")
    ap.add_argument("--no-marker-temperature", dest="temperature", action="store_const", const=False, default=None,
                    help="train the marker's query/key projections without the learned temperature "
                         "(the recipe before 2026-11-23)")
    ap.add_argument("--compressor-steps", type=int, default=1200,
                    help="compressor training steps (params.yaml's pipeline budget is smaller)")
    ap.add_argument("--compressor-questions", type=int, default=600, help="questions marked to train the compressor")
    ap.add_argument("--marker-source", default=None,
                    help="the model the marker reads: backbone | minilm | a name or path (default: params.yaml)")
    ap.add_argument("--layers", default=None, help="marking layers, e.g. 0 or 1 (default: params.yaml)")
    ap.add_argument("--head", default=None,
                    help="head aggregation: mean | max | one head's index (default: params.yaml)")
    ap.add_argument("--target", default=None,
                    help="the compressor's training target: marked-content | marked-consensus (default: params.yaml)")
    ap.add_argument("--top-k", type=int, default=None,
                    help="items the marking rule marks, with rule top_k (default: params.yaml)")
    ap.add_argument("--train-budgets", type=int, nargs="+", default=None,
                    help="budgets the compressor is trained for (default: params.yaml)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="train the marker and the compressor once per seed (params.yaml's attn_gs.seed is 0); "
                         "the table gives the mean over seeds and each seed's figure")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="where the JSON and the plot go")
    args = ap.parse_args()

    import flows  # noqa: F401  (environment defaults)
    from components.config import load_profile
    from components.evaluation.harness import evaluate
    from components.evaluation.report import pareto_plot
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.lamp.tasks import get_task
    from components.methods import build_method
    from components.methods.attn_gs.marking import Marker, marker_base, random_scores
    from components.methods.attn_gs.method import AttnGSMethod, ranking_of, target_builder
    from components.methods.attn_gs.data import training_data
    from components.methods.attn_gs.train import train_attn_gs
    from components.retrieval.rankers import rank_bm25
    from components.tracking import mlflow_tracking
    from components.tracking.mlflow_tracking import resolve_backbone

    spec = get_task(args.task)
    given = {"marker_steps": args.marker_steps, "train_budgets": args.train_budgets,
             "marker_supervision": args.supervision, "marker_temperature": args.temperature,
             "target": args.target, "top_k": args.top_k, "marker_source": args.marker_source,
             "layers": args.layers, "head_aggregation": args.head}
    settings = load_profile(None, ROOT / "params.yaml").attn_gs.model_copy(update={
        "compressor_steps": args.compressor_steps, "max_compressor_questions": args.compressor_questions,
        **{k: v for k, v in given.items() if v is not None}})
    marking = settings.configs()[0]
    target = target_builder(settings.target)
    ranking = ranking_of(target)                                 # the order the compressor is shown
    PerfectCompressor = perfect_compressor(target)
    budgets = args.budgets or settings.budgets
    mlflow_tracking.configure(ROOT)
    backbone, uri = resolve_backbone(spec.name, None, ROOT)

    def load(split):
        qfile, ofile = split_files(spec.name, split, ROOT / "data")
        return read_questions(qfile, spec), read_golds(ofile, spec)

    test_q, golds = load("time/test")
    test_q = test_q[:args.limit]
    relevance = json.loads((ROOT / "data" / "raw" / spec.name / "relevance.json").read_text())
    pairs = training_data(spec, ROOT / "data", settings.max_train_examples)
    bm25 = []
    for q in test_q:
        order = rank_bm25(spec, q)
        s = [0.0] * len(order)
        for rank, i in enumerate(order):
            s[i] = -float(rank)
        bm25.append(s)
    inference_only = Marker(marker_base(settings.marker_source, backbone), marking)  # the marking model as is
    fixed_scores = {"inference-only marker": inference_only.score(spec, test_q),
                    "random marking": [random_scores(q) for q in test_q], "bm25 (reference)": bm25}
    cache_root = Path(tempfile.mkdtemp(prefix="attn-gs-contexts-"))
    metric = spec.primary_metric
    # per method, one (quality, context tokens) per seed; the methods without a trained model run once
    runs: dict[str, list[tuple[float, float]]] = {}
    costs, trainings, qualities = {}, {}, {}

    def run(method):
        r = evaluate(method, backbone, spec, test_q, golds, progress=False)
        runs.setdefault(method.name, []).append((r.metrics[metric], r.costs["context_tokens_mean"]))
        print(f"  {method.name:<26} {metric} {r.metrics[metric]:.3f}  "
              f"context tokens {r.costs['context_tokens_mean']:.1f}", flush=True)
        return r

    print(f"\n{spec.name} time/test (n={len(test_q)}), methods without a trained model")
    for name in ["non-personalized", "full-context", "bm25-4"] + [f"{r}@{b}" for b in budgets
                                                                   for r in ("recency", "bm25", "dense")]:
        run(build_method(name))
    bm25_marker = FixedScores({q.id: s for q, s in zip(test_q, bm25)})
    for b in budgets:
        bm25_target = PerfectCompressor(bm25_marker, backbone, b, "attention", marking, versions="bench-bm25",
                                        cache_root=cache_root)
        bm25_target.name = f"bm25-target@{b}"
        run(bm25_target)
    for seed in args.seeds:
        seeded = settings.model_copy(update={"seed": seed})
        t0 = time.perf_counter()
        marker_bb, compressor, info = train_attn_gs(backbone, spec, pairs, seeded)
        info["train_seconds"] = time.perf_counter() - t0
        trainings[seed] = info
        print(f"\nseed {seed}: trained in {info['train_seconds']:.0f}s: {json.dumps(info)}", flush=True)
        fine_tuned = Marker(marker_bb, marking)
        qualities[seed] = quality = marker_quality(spec, test_q, relevance, {
            "inference-only marker": fixed_scores["inference-only marker"],
            "fine-tuned marker": fine_tuned.score(spec, test_q), **fixed_scores})
        print(f"seed {seed}: marker quality against the relevant items (time/test)")
        for name, row in quality.items():
            print(f"  {name:<24} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
        print(f"seed {seed}: {spec.name} time/test (n={len(test_q)})")
        for b in budgets:
            for variant, mk, label in (("attention", fine_tuned, "ft"), ("attention", inference_only, "inference"),
                                       ("random", None, ""), ("all", None, ""), ("none", None, "")):
                versions = f"bench-{seed}-{label}"
                method = AttnGSMethod(mk, compressor, b, variant, marking, versions=versions, cache_root=cache_root,
                                      ranking=ranking)
                if label == "inference":
                    method.name = f"attn-gs-inference-only@{b}"
                run(method)
                if variant == "attention" and label == "ft":
                    users = max(1, len(method.timings.users))
                    again = AttnGSMethod(mk, compressor, b, variant, marking, versions=versions,
                                         cache_root=cache_root, ranking=ranking)
                    evaluate(again, backbone, spec, test_q, golds, progress=False)
                    costs.setdefault(method.name, {})[seed] = cost = {
                        "marking_seconds_per_user": method.timings.marking_seconds / users,
                        "compression_seconds_per_user": method.timings.compression_seconds / users,
                        "second_run_cache_hit_rate": again.cache.hit_rate, "second_run_compressions": again.cache.misses}
                    print(f"    marking {cost['marking_seconds_per_user']:.3f}s/user, compression "
                          f"{cost['compression_seconds_per_user']:.3f}s/user; second run: cache hit rate "
                          f"{again.cache.hit_rate:.0%}", flush=True)
                    perfect = PerfectCompressor(mk, compressor, b, variant, marking, versions=versions,
                                                cache_root=cache_root)
                    run(perfect)
                    cost.update(compressor_fidelity(method.contexts(spec, test_q, backbone), perfect, backbone))
                    differ = [(d["written"], d["target"]) for d in cost["contexts_unlike_target"]]
                    print(f"    the compressor wrote its training target for {cost['contexts_equal_to_target']:.0%} "
                          f"of the questions, and began with the past output its target puts first for "
                          f"{cost['contexts_leading_with_target_output']:.0%}; e.g. "
                          + "; ".join(f"{w!r} for {t!r}" for w, t in differ[:3]), flush=True)

    means = {n: (mean([q for q, _ in r]), mean([t for _, t in r])) for n, r in runs.items()}
    full_q, full_t = means["full-context"]
    summary = {"tasks": {spec.name: {"primary_metric": metric, "higher_is_better": spec.higher_is_better,
                                     "methods": {n: {"metrics": {metric: q}, "context_tokens_mean": t, "per_user_params": 0}
                                                 for n, (q, t) in means.items()}}}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = pareto_plot(summary, spec.name, out / f"attn_gs-{spec.name}.png")
    table = {n: {metric: q, f"{metric}_per_seed": [v for v, _ in runs[n]], "context_tokens_mean": t,
                 "tokens_vs_full": full_t / max(t, 1e-9),
                 "quality_vs_full": q / full_q if spec.higher_is_better else full_q / max(q, 1e-9)}
             for n, (q, t) in means.items()}
    result = {"task": spec.name, "metric": metric, "n": len(test_q), "budgets": budgets, "seeds": args.seeds,
              "training": trainings, "marker_quality": qualities, "methods": table, "costs": costs,
              "settings": settings.model_dump()}
    path = out / f"attn_gs-{spec.name}.json"
    path.write_text(json.dumps(result, indent=2))
    import mlflow

    mlflow.set_experiment("bench-attn-gs")
    with mlflow.start_run(run_name=f"attn-gs-{spec.name}", tags={"backbone": uri, "kind": "bench"}):
        mlflow.log_dict(result, "attn_gs.json")
        mlflow.log_artifact(str(plot))
    print(f"\nquality relative to full context ({full_t:.0f} context tokens); "
          f"methods with a trained model: mean over seeds {args.seeds} (each seed)")
    for n, row in table.items():
        spread = f" ({' '.join(f'{v:.3f}' for v in row[f'{metric}_per_seed'])})" if len(runs[n]) > 1 else ""
        if row["context_tokens_mean"] == 0:
            print(f"  {n:<26} {metric} {row[metric]:.3f}{spread}: {row['quality_vs_full']:.2f} of full-context "
                  "quality, no context")
            continue
        print(f"  {n:<26} {metric} {row[metric]:.3f}{spread}: {row['quality_vs_full']:.2f} of full-context quality "
              f"at {row['tokens_vs_full']:.0f}x fewer tokens")
    print(f"\nwritten {path} and {plot}; logged to MLflow experiment bench-attn-gs")

if __name__ == "__main__":
    main()
