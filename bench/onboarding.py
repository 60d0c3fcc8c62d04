"""Benchmark: onboarding users into TAP-PER online against a full retrain on the same users.

In the largest population of the demo data, `--holdout` users are set aside. Side by side:
* base: TAP-PER trained on the other members only (bench/tap_per.py's full budget: every
  history item, 4 epochs; `--max-examples 800 --train-epochs 1` is the pipeline's budget);
* onboarded: base + each held-out user's P_u row fitted online (`fit_user`: everything
  shared frozen), the path `persona users add` takes; seconds per user reported;
* full retrain: TAP-PER trained on all members, held-out users included;
* guests: base answering the held-out users with the population's mean P_u + their P_q
  (what serving does for an unknown user with a profile).
Quality is measured on the held-out users' time-based dev and test questions (their
golds are never training items). Also checked: the onboarded model's answers for the
other members equal the base model's. JSON to reports/bench/, MLflow `bench-onboarding`.

    python bench/onboarding.py [--task LaMP-2] [--holdout 30]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--holdout", type=int, default=30, help="users of the largest population set aside")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the online P_u fit (persona users add)")
    ap.add_argument("--train-epochs", type=int, default=4, help="epochs of the base and full trainings")
    ap.add_argument("--max-examples", type=int, default=0, help="training items of the population (0: all)")
    ap.add_argument("--lr", type=float, default=1e-2, help="learning rate of the online P_u fit")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="where the JSON goes")
    args = ap.parse_args()

    from components.config import load_profile
    from components.evaluation.harness import evaluate
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.lamp.tasks import get_task
    from components.methods.populations import population_examples
    from components.methods.tap_per.method import TapPerMethod, fit_user
    from components.methods.tap_per.train import train_population
    from components.tracking import mlflow_tracking
    from components.tracking.mlflow_tracking import resolve_backbone

    spec = get_task(args.task)
    profile = load_profile(None, ROOT / "params.yaml")
    model_cfg, train_cfg = profile.tap_per.configs()
    from dataclasses import replace

    train_cfg = replace(train_cfg, epochs=args.train_epochs)
    mlflow_tracking.configure(ROOT)
    backbone, uri = resolve_backbone(spec.name, None, ROOT)
    pops = json.loads((ROOT / "data" / "prepared" / spec.name / "populations.json").read_text())
    pop = max(sorted(pops["sizes"]), key=lambda p: pops["sizes"][p])
    members = sorted(u for u, p in pops["populations"].items() if p == pop)
    held = set(random.Random(0).sample(members, min(args.holdout, len(members) // 2)))
    kept = [u for u in members if u not in held]
    examples = population_examples(spec.name, members, ROOT, args.max_examples or None)
    print(f"{spec.name} population {pop}: {len(members)} users, {len(held)} held out, "
          f"{len(examples)} training items", flush=True)

    def train(users):
        t0 = time.perf_counter()
        bridged, prefix, index, _ = train_population(copy.deepcopy(backbone), spec,
                                                     [e for e in examples if e[0].user_key in set(users)], users,
                                                     model_cfg, train_cfg, progress=True)
        return TapPerMethod(bridged, prefix, index, train_cfg.max_records), time.perf_counter() - t0

    base, base_s = train(kept)
    full, full_s = train(members)
    onboarded = copy.deepcopy(base)
    fits = [fit_user(onboarded, spec, u, [e for e in examples if e[0].user_key == u], args.epochs, args.lr)
            for u in sorted(held)]
    guests = copy.deepcopy(base)
    guests.guests = True

    questions, golds = [], {}
    for split in ("time/dev", "time/test"):
        qfile, ofile = split_files(spec.name, split, ROOT / "data")
        questions += [q for q in read_questions(qfile, spec) if q.user_key in held]
        golds.update(read_golds(ofile, spec))
    rows = {}
    for name, method in (("full retrain", full), ("onboarded online", onboarded), ("guests (mean P_u + P_q)", guests)):
        r = evaluate(method, None, spec, questions, golds, "held-out dev+test", 32, progress=False)
        rows[name] = r.metrics
        print(f"{name:>24}: {json.dumps({k: round(v, 4) for k, v in r.metrics.items()})}", flush=True)
    others = [q for q in read_questions(split_files(spec.name, "time/test", ROOT / "data")[0], spec)
              if q.user_key in set(kept)]
    same = [a.output == b.output for a, b in zip(base.predict(None, spec, others), onboarded.predict(None, spec, others))]
    metric = spec.primary_metric
    seconds = [f["seconds"] for f in fits]
    result = {"task": spec.name, "population": pop, "users": len(members), "held_out": len(held),
              "questions": len(questions), "metrics": rows, "primary_metric": metric,
              "onboarded_over_full": rows["onboarded online"][metric] / rows["full retrain"][metric],
              "seconds_per_user_online": sum(seconds) / len(seconds), "full_retrain_seconds": full_s,
              "base_train_seconds": base_s, "other_users_unchanged": f"{sum(same)}/{len(same)}",
              "train_epochs": args.train_epochs, "training_items": len(examples)}
    print(f"online fit: {result['seconds_per_user_online']:.2f} s per user vs full retrain {full_s:.0f} s; "
          f"onboarded / full retrain ({metric}) = {result['onboarded_over_full']:.3f}; "
          f"other users' answers unchanged: {result['other_users_unchanged']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"onboarding-{spec.name}.json"
    path.write_text(json.dumps(result, indent=2))
    import mlflow

    mlflow.set_experiment("bench-onboarding")
    with mlflow.start_run(run_name=f"onboarding-{spec.name}", tags={"backbone": uri, "kind": "bench"}):
        mlflow.log_dict(result, "onboarding.json")
        mlflow.log_metrics({"seconds_per_user_online": result["seconds_per_user_online"],
                            "full_retrain_seconds": full_s, "onboarded_over_full": result["onboarded_over_full"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
