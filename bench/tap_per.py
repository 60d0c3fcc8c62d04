"""Benchmark (issue 5, in progress): TAP-PER per population against the baselines, same split.

Trains one TAP-PER model per population of the demo data (P_u, record prefix, penalties and
bridge LoRA, on the population's users' history items), then evaluates every population's
model on its users' time-based test questions, next to non-personalized and BM25-4 on the
same questions. Needs `persona pipeline` (or `persona train backbone`) to have run.

    python bench/tap_per.py [--task LaMP-2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--epochs", type=int, default=4, help="passes over the population's history items")
    ap.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    ap.add_argument("--with-oppu", action="store_true",
                    help="also train one OPPU adapter per user (r=8 on q,v, own data only) and evaluate it")
    ap.add_argument("--ablation", choices=["none", "pu-only", "pq-only", "no-temporal"], default="none",
                    help="pu-only: user prefix only; pq-only: record prefix only; no-temporal: no penalties")
    args = ap.parse_args()

    from components.evaluation.harness import evaluate
    from components.lamp.metrics import score_texts
    from components.lamp.splits import split_files
    from components.lamp.history import history_examples
    from components.lamp.io import read_golds, read_questions
    from components.lamp.tasks import get_task
    from components.methods import build_method
    from components.methods.tap_per.method import TapPerMethod
    from components.methods.tap_per.model import TapPerConfig
    from components.methods.tap_per.train import TapPerTrainConfig, train_population
    from components.tracking import mlflow_tracking
    from components.tracking.mlflow_tracking import resolve_backbone

    spec = get_task(args.task)
    mlflow_tracking.configure(ROOT)
    base, uri = resolve_backbone(spec.name, None, ROOT)
    data = ROOT / "data" / "prepared" / spec.name
    pops = json.loads((data / "populations.json").read_text())["populations"]
    train_q = read_questions(split_files(spec.name, "time/train", ROOT / "data")[0], spec)
    dev_q = read_questions(split_files(spec.name, "time/dev", ROOT / "data")[0], spec)
    qfile, ofile = split_files(spec.name, "time/test", ROOT / "data")
    test_q = read_questions(qfile, spec)
    golds = read_golds(ofile, spec)

    rows = {}
    for pop in sorted(set(pops.values())):
        users = sorted(u for u, p in pops.items() if p == pop)
        members = set(users)
        history = [q for q in train_q + dev_q if q.user_key in members]   # items before each test query
        examples = list(history_examples(spec, history))
        start = time.perf_counter()
        backbone, _ = resolve_backbone(spec.name, uri, ROOT)
        cfg = {"none": TapPerConfig(), "pu-only": TapPerConfig(use_record_prefix=False),
               "pq-only": TapPerConfig(use_user_prefix=False),
               "no-temporal": TapPerConfig(temporal=False, order=False)}[args.ablation]
        bridged, prefix, index, losses = train_population(
            backbone, spec, examples, users, cfg, TapPerTrainConfig(epochs=args.epochs, lr=args.lr),
            progress=True)
        seconds = time.perf_counter() - start
        questions = [q for q in test_q if q.user_key in members]
        tap = evaluate(TapPerMethod(bridged, prefix, index), None, spec, questions, golds, progress=False)
        for name in ("non-personalized", "bm25-4"):
            rows.setdefault(name, []).append(evaluate(build_method(name), base, spec, questions, golds,
                                                      progress=False))
        rows.setdefault("tap-per" + ("" if args.ablation == "none" else f"-{args.ablation}"), []).append(tap)
        if args.with_oppu:
            from components.methods.oppu.method import OppuMethod

            oppu = OppuMethod(base)
            by_user: dict = {}
            for q, gold in examples:
                by_user.setdefault(q.user_key, []).append((q, gold))
            t0 = time.perf_counter()
            for user, pairs in by_user.items():
                oppu.fit_user(user, pairs)
            print(f"  oppu: {len(by_user)} adapters in {time.perf_counter() - t0:.0f}s", flush=True)
            rows.setdefault("oppu", []).append(evaluate(oppu, None, spec, questions, golds, progress=False))
        print(f"{pop}: {len(users)} users, {len(examples)} training items, {seconds:.0f}s, "
              f"final loss {sum(losses[-20:]) / max(1, len(losses[-20:])):.3f}", flush=True)
    metric = spec.primary_metric
    relevance_file = ROOT / "data" / "raw" / spec.name / "relevance.json"
    drifted = set()
    if relevance_file.exists():              # synthetic data: which questions' habit drifted
        drifted = {q for q, r in json.loads(relevance_file.read_text()).items() if r.get("drifted")}
    print(f"\n{spec.name}, time/test, {metric} (all populations' questions; drifted: the questions whose "
          "answer changed habit during the user's history)")
    for name, results in rows.items():
        n = sum(r.n for r in results)
        value = sum(r.metrics[metric] * r.n for r in results) / n
        line = f"  {name:<22} {value:.3f}  (n={n})"
        preds = [(p.output, golds[p.id]) for r in results for p in r.predictions if p.id in drifted]
        if preds:
            sub = score_texts(spec, [a for a, _ in preds], [b for _, b in preds])[metric]
            line += f"   drifted: {sub:.3f} (n={len(preds)})"
        print(line)


if __name__ == "__main__":
    main()
