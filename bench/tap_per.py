"""Benchmark: TAP-PER per population against the baselines, same split, one run.

Trains one TAP-PER model per population of the demo data (P_u, record prefix, penalties and
bridge LoRA, on the population's users' history items; settings from params.yaml), then
evaluates every population's model on its users' time-based test questions, next to
non-personalized, BM25-4 and (`--with-oppu`) OPPU on the same questions. Every variant named
by `--ablation` is trained side by side. On the synthetic data it also reports the questions
whose habit drifted apart, the record attention's mass on the relevant items, and the
model with that attention replaced by the relevant items (an oracle; docs/tap-per.md).
Needs `persona pipeline` (or `persona train backbone`) to have run. Writes
reports/bench/tap_per-<task>.json.

    python bench/tap_per.py [--task LaMP-2] [--ablation none no-temporal] [--with-oppu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


ABLATIONS = {"none": {}, "pu-only": {"use_record_prefix": False}, "pq-only": {"use_user_prefix": False},
             "no-temporal": {"temporal": False, "order": False}, "no-standardise": {"standardise": False}}


def attention_on_relevant(bridged, prefix, spec, questions, relevance: dict, max_records: int):
    """{question id: (attention mass the record prefix puts on the relevant records, the mass
    uniform weights would put)} for the questions with relevant records among their last
    `max_records`."""
    import torch

    from components.methods.tap_per.train import features

    with torch.no_grad():
        feats = features(bridged, spec, questions, max_records, prefix.cfg)
        alpha = prefix.attention(*feats)
    relevant = relevant_mask(questions, relevance, max_records)
    mass = (alpha * relevant).sum(1)
    uniform = relevant.sum(1) / feats[4].sum(1).clamp(min=1)
    return {q.id: (float(m), float(u)) for q, m, u, has in zip(questions, mass, uniform, relevant.any(1)) if has}


def relevant_mask(questions, relevance: dict, max_records: int):
    """[B, K] True where a question's record (of its last `max_records`) is relevant."""
    import torch

    mask = torch.zeros(len(questions), max_records, dtype=torch.bool)
    for i, q in enumerate(questions):
        wanted = set(relevance.get(q.id, {}).get("relevant", []))
        for j, item in enumerate(q.profile[-max_records:]):
            mask[i, j] = item.id in wanted
    return mask


def with_oracle_attention(method, spec, questions, golds, relevance: dict):
    """The trained model with its record attention replaced by uniform weights on the relevant
    records (its own attention where a question has none): how well it reads P_q when the
    records are chosen right. A diagnostic of the synthetic data, not a method."""
    import torch

    from components.evaluation.harness import evaluate

    prefix, own = method.prefix, method.prefix.attention
    relevant = relevant_mask(questions, relevance, method.max_records).float()
    chosen = relevant / relevant.sum(1, keepdim=True).clamp(min=1)
    prefix.attention = lambda *feats: torch.where(relevant.any(1, keepdim=True), chosen, own(*feats))
    try:           # one batch of every question, so that the rows line up with `relevant`
        return evaluate(method, None, spec, questions, golds, batch_size=len(questions), progress=False)
    finally:
        del prefix.attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--epochs", type=int, default=8, help="passes over the population's history items")
    ap.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    ap.add_argument("--record-pooling", choices=["tokens", "fields"], default=None,
                    help="z_h of a record: mean over its tokens or over its fields (default: params.yaml)")
    ap.add_argument("--record-keys", choices=["record", "text"], default=None,
                    help="what the relevance compares with the query: the record, or its text without the past "
                         "output (default: params.yaml)")
    ap.add_argument("--attention-supervision", type=float, default=None,
                    help="weight of the weak attention label loss (default: params.yaml)")
    ap.add_argument("--max-records", type=int, default=None,
                    help="history records the record prefix reads, the most recent (default: params.yaml)")
    ap.add_argument("--with-oppu", action="store_true",
                    help="also train one OPPU adapter per user (r=8 on q,v, own data only) and evaluate it")
    ap.add_argument("--ablation", nargs="+", choices=list(ABLATIONS), default=["none"],
                    help="variants trained side by side in this run (none: the params.yaml model); pu-only: user "
                         "prefix only; pq-only: record prefix only; no-temporal: no penalties; no-standardise: "
                         "raw z as in the reference code")
    args = ap.parse_args()

    from dataclasses import asdict, replace

    from components.config import load_profile
    from components.evaluation.harness import evaluate
    from components.lamp.metrics import score_texts
    from components.lamp.splits import split_files
    from components.lamp.history import history_examples
    from components.lamp.io import read_golds, read_questions
    from components.lamp.tasks import get_task
    from components.methods import build_method
    from components.methods.tap_per.method import TapPerMethod
    from components.methods.tap_per.train import train_population
    from components.tracking import mlflow_tracking
    from components.tracking.mlflow_tracking import resolve_backbone

    spec = get_task(args.task)
    flags = {"record_pooling": args.record_pooling, "record_keys": args.record_keys,
             "attention_supervision": args.attention_supervision, "max_records": args.max_records}
    settings = load_profile(None, ROOT / "params.yaml").tap_per    # the flags given override the file
    settings = settings.model_copy(update={k: v for k, v in flags.items() if v is not None})
    base_cfg, tcfg = settings.configs()                 # everything but the budget from params.yaml
    tcfg = replace(tcfg, epochs=args.epochs, lr=args.lr)
    print(f"TAP-PER {base_cfg}, {tcfg}", flush=True)
    mlflow_tracking.configure(ROOT)
    base, uri = resolve_backbone(spec.name, None, ROOT)
    data = ROOT / "data" / "prepared" / spec.name
    pops = json.loads((data / "populations.json").read_text())["populations"]
    train_q = read_questions(split_files(spec.name, "time/train", ROOT / "data")[0], spec)
    dev_q = read_questions(split_files(spec.name, "time/dev", ROOT / "data")[0], spec)
    qfile, ofile = split_files(spec.name, "time/test", ROOT / "data")
    test_q = read_questions(qfile, spec)
    golds = read_golds(ofile, spec)

    relevance_file = ROOT / "data" / "raw" / spec.name / "relevance.json"
    # synthetic data: each question's relevant items (same theme, current habit) and whether its habit drifted
    relevance = json.loads(relevance_file.read_text()) if relevance_file.exists() else {}
    rows, attention = {}, {}
    for pop in sorted(set(pops.values())):
        users = sorted(u for u, p in pops.items() if p == pop)
        members = set(users)
        history = [q for q in train_q + dev_q if q.user_key in members]   # items before each test query
        examples = list(history_examples(spec, history))
        questions = [q for q in test_q if q.user_key in members]
        for ablation in args.ablation:
            start = time.perf_counter()
            backbone, _ = resolve_backbone(spec.name, uri, ROOT)
            cfg = replace(base_cfg, **ABLATIONS[ablation])
            bridged, prefix, index, losses = train_population(backbone, spec, examples, users, cfg, tcfg,
                                                              progress=True)
            seconds = time.perf_counter() - start
            name = "tap-per" + ("" if ablation == "none" else f"-{ablation}")
            method = TapPerMethod(bridged, prefix, index, tcfg.max_records)
            rows.setdefault(name, []).append(evaluate(method, None, spec, questions, golds, progress=False))
            if relevance and cfg.use_record_prefix:
                attention.setdefault(name, {}).update(
                    attention_on_relevant(bridged, prefix, spec, questions, relevance, tcfg.max_records))
                rows.setdefault(f"  {name}, oracle attention", []).append(
                    with_oracle_attention(method, spec, questions, golds, relevance))
            print(f"{pop} {name}: {len(users)} users, {len(examples)} training items, {seconds:.0f}s, "
                  f"final loss {sum(losses[-20:]) / max(1, len(losses[-20:])):.3f}, "
                  f"lambda_t {prefix.lambda_t.item():.3f}, lambda_o {prefix.lambda_o.item():.3f}", flush=True)
        for name in ("non-personalized", "bm25-4"):
            rows.setdefault(name, []).append(evaluate(build_method(name), base, spec, questions, golds,
                                                      progress=False))
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
    metric = spec.primary_metric
    drifted = {q for q, r in relevance.items() if r.get("drifted")}
    print(f"\n{spec.name}, time/test, {metric} (all populations' questions; drifted: the questions whose "
          "answer changed habit during the user's history)")
    table: dict = {}
    for name, results in rows.items():
        n = sum(r.n for r in results)
        value = sum(r.metrics[metric] * r.n for r in results) / n
        line = f"  {name:<22} {value:.3f}  (n={n})"
        preds = [(p.output, golds[p.id]) for r in results for p in r.predictions if p.id in drifted]
        if preds:
            sub = score_texts(spec, [a for a, _ in preds], [b for _, b in preds])[metric]
            line += f"   drifted: {sub:.3f} (n={len(preds)})"
        print(line)
        table[name.strip()] = {metric: value, "n": n, **({f"drifted_{metric}": sub, "drifted_n": len(preds)}
                                                         if preds else {})}
    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    chance = None
    for name, by_q in attention.items():
        everyone, on_drifted = list(by_q.values()), [v for q, v in by_q.items() if q in drifted]
        chance = mean([u for _, u in everyone])
        table[name]["attention_on_relevant"] = mean([m for m, _ in everyone])
        table[name]["drifted_attention_on_relevant"] = mean([m for m, _ in on_drifted])
        print(f"  {name}: record attention on the relevant items (relevance.json) "
              f"{table[name]['attention_on_relevant']:.3f} of the mass (uniform weights: {chance:.3f}); "
              f"on drifted questions {table[name]['drifted_attention_on_relevant']:.3f} "
              f"(uniform: {mean([u for _, u in on_drifted]):.3f})")
    out = ROOT / "reports" / "bench" / f"tap_per-{spec.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": spec.name, "split": "time/test", "settings": {"model": asdict(base_cfg),
                               "train": asdict(tcfg)}, "ablations": args.ablation,
                               "attention_uniform": chance,
                               "results": table}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
