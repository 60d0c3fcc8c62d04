"""Benchmark: PPlug per population against the retrieval baselines, same questions.

For every population of the demo data: encode the population's history items once (frozen
all-MiniLM-L6-v2, vectors cached on disk by content hash), train PPlug (input encoder,
projectors, instruction embedding) on the population's history items, and evaluate it on
the population's time-based test questions next to non-personalized, BM25-k and dense-k
on the same questions. Then reload the vector cache from disk and encode every item again:
a second run encodes nothing.

`--new-users` instead uses the user-based split: PPlug is trained on the population's
user/train users only and evaluated on their user/train questions (seen users; those
questions are not training examples) and on user/test questions (users never seen).

Needs `persona pipeline` (or `persona train backbone`) to have run.

    python bench/pplug.py [--task LaMP-2] [--epochs 2] [--ablation none|mean|no-instruction|retrieval]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class GoldTokens:
    """Diagnostic, not a method: the gold answer's first two token embeddings as soft tokens."""

    name, per_user_params = "oracle-2-tokens", 0

    def __init__(self, golds):
        self.golds = golds

    def predict(self, backbone, spec, questions):
        import torch

        from components.methods.base import Prediction
        from components.methods.pplug.model import token_norm

        emb, norm = backbone.model.get_input_embeddings(), token_norm(backbone)
        with torch.no_grad():
            rows = []
            for q in questions:
                ids = (backbone.tokenize(self.golds[q.id]) + [backbone.tokenizer.eos_token_id])[:2]
                v = emb(torch.tensor(ids))
                rows.append(torch.nn.functional.normalize(v, dim=-1) * norm)
            outs = backbone.generate([q.input for q in questions], spec.max_new_tokens, prefix=torch.stack(rows))
        return [Prediction(q.id, o, 2, 2) for q, o in zip(questions, outs)]


class Trace:
    """Diagnostic (`--trace`): per training step, the loss, the aggregator's weight on the
    history items whose past output is the gold one, and the cosine between the user token
    and the embedding of the gold answer's first token (with its rank among all the
    backbone's token embeddings): whether the user token moves towards what the frozen
    backbone should read."""

    def __init__(self, spec, windows: int = 12):
        self.spec, self.windows, self.rows = spec, windows, []

    def __call__(self, step: dict) -> None:
        import torch

        from components.methods.pplug.method import recent
        from components.methods.weak_labels import gold_output_mask

        m, batch, w = step["method"], step["batch"], step["weights"]
        golds = [g for _, g in batch]
        gold = gold_output_mask(self.spec, [recent(q.profile, m.cfg.max_history) for q, _ in batch], golds,
                                w.shape[1])
        emb = torch.nn.functional.normalize(m.backbone.model.get_input_embeddings().weight.detach().float().cpu(), dim=-1)
        user = torch.nn.functional.normalize(step["tokens"][:, -1].float().cpu(), dim=-1)
        sims = user @ emb.T
        first = torch.tensor([m.backbone.tokenize(g)[0] for g in golds])
        cos = sims[torch.arange(len(golds)), first]
        has = gold.any(-1)
        self.rows.append({"step": step["step"], "loss": step["loss"], "cosine": float(cos.mean()),
                          "rank": float((sims > cos[:, None]).sum(-1).float().median()),
                          "gold_weight": float((w * gold).sum(-1)[has].mean()) if has.any() else 0.0})

    def table(self) -> list[dict]:
        size = max(1, len(self.rows) // self.windows)
        out = []
        for i in range(0, len(self.rows), size):
            part = self.rows[i:i + size]
            out.append({"from_step": part[0]["step"],
                        **{k: sum(r[k] for r in part) / len(part) for k in ("loss", "gold_weight", "cosine", "rank")}})
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--epochs", type=int, default=2, help="passes over all the population's history items")
    ap.add_argument("--lr", type=float, default=None, help="learning rate of the projectors (default: params.yaml)")
    ap.add_argument("--ablation", choices=["none", "mean", "no-instruction", "retrieval"], default="none",
                    help="mean: mean pooling instead of input-aware weights; no-instruction: user token only; "
                         "retrieval: PPlug plus the top-1 BM25 item in the prompt")
    ap.add_argument("--history-deletion", type=int, default=None,
                    help="extra copies per example with 1-50%% of its history deleted (aggr_id.py)")
    ap.add_argument("--bridge-rank", type=int, default=None,
                    help="0: frozen backbone as in the paper; r>0: a shared LoRA bridge (default: params.yaml)")
    ap.add_argument("--attention-supervision", type=float, default=None,
                    help="weight of the weak attention label loss, 0 = off (default: params.yaml)")
    ap.add_argument("--seed", type=int, default=0, help="seed of PPlug's initialisation and training order")
    ap.add_argument("--attention-labels", choices=["label", "label+bm25"], default=None,
                    help="the weak label: items with the gold output, or only those among the top-4 BM25 "
                         "matches of the input (default: params.yaml)")
    ap.add_argument("--history-keys", choices=["record", "text"], default=None,
                    help="what the input is compared with: each item as encoded (with its past output, the "
                         "paper) or its text alone (default: params.yaml)")
    ap.add_argument("--populations", nargs="+", help="only these populations (default: all)")
    ap.add_argument("--new-users", action="store_true", help="user-based split: seen against never-seen users")
    ap.add_argument("--baselines", nargs="+", default=["non-personalized", "bm25-1", "bm25-4", "dense-1", "dense-4"],
                    help="baselines evaluated on the same questions")
    ap.add_argument("--oracle", action="store_true",
                    help="also evaluate an oracle: the gold answer's first two token embeddings as the two soft "
                         "tokens (a proxy for what two soft tokens can carry into this frozen backbone)")
    ap.add_argument("--trace", action="store_true",
                    help="print and keep a per-step training trace: loss, weight on the gold-output items, "
                         "cosine of the user token with the gold answer's first token embedding")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="where the JSON result goes")
    args = ap.parse_args()

    from dataclasses import asdict, replace

    import flows  # noqa: F401  (environment defaults)
    from components.config import load_profile
    from components.evaluation.harness import evaluate
    from components.lamp.history import history_examples
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.lamp.tasks import get_task
    from components.methods import build_method
    from components.methods.pplug.method import encoded_texts, recent, train_pplug
    from components.retrieval.cache import VectorCache
    from components.retrieval.encoder import SentenceEncoder
    from components.tracking import mlflow_tracking
    from components.tracking.mlflow_tracking import resolve_backbone

    spec = get_task(args.task)
    settings = load_profile(None, ROOT / "params.yaml").pplug
    cfg, tcfg = settings.configs(ablation=args.ablation, epochs=args.epochs, lr=args.lr,
                                 history_deletion=args.history_deletion, bridge_rank=args.bridge_rank,
                                 attention_supervision=args.attention_supervision,
                                 attention_labels=args.attention_labels, history_keys=args.history_keys)
    tcfg = replace(tcfg, seed=args.seed)
    mlflow_tracking.configure(ROOT)
    base, uri = resolve_backbone(spec.name, None, ROOT)
    pops = json.loads((ROOT / "data" / "prepared" / spec.name / "populations.json").read_text())["populations"]

    def load(split):
        qfile, ofile = split_files(spec.name, split, ROOT / "data")
        return read_questions(qfile, spec), read_golds(ofile, spec)

    if args.new_users:
        train_q, train_g = load("user/train")
        history = train_q
        evals = {"seen users": (train_q, train_g), "new users": load("user/test")}
    else:
        tr, _ = load("time/train")
        dev, _ = load("time/dev")
        history = tr + dev
        evals = {"time/test": load("time/test")}

    encoder = SentenceEncoder.default()
    cache_root = Path(tempfile.mkdtemp(prefix="pplug-vectors-"))
    rows: dict[str, dict[str, list]] = {}
    costs_all = []
    for pop in args.populations or sorted(set(pops.values())):
        members = {u for u, p in pops.items() if p == pop}
        examples = list(history_examples(spec, [q for q in history if q.user_key in members]))
        backbone, _ = resolve_backbone(spec.name, uri, ROOT)
        cache = VectorCache(cache_root, encoder.fingerprint)
        trace = Trace(spec) if args.trace else None
        method, losses, costs = train_pplug(backbone, spec, examples, cfg, tcfg, encoder, cache, progress=True,
                                            on_step=trace)
        # a second run with unchanged data: a fresh cache object reads the shards back from disk
        texts = encoded_texts(spec, [p for q, _ in examples for p in recent(q.profile, cfg.max_history)], cfg)
        again = VectorCache(cache_root, encoder.fingerprint)
        t0 = time.perf_counter()
        again.encode(texts, encoder)
        costs.update(second_run_items_encoded=again.misses, second_run_hit_rate=again.hit_rate,
                     second_run_seconds=time.perf_counter() - t0, population=pop, users=len(members),
                     examples=len(examples), final_loss=sum(losses[-20:]) / max(1, len(losses[-20:])))
        if trace:
            costs["trace"] = trace.table()
            print("trace (means over windows of steps):\n  from step   loss  gold weight  cosine  rank")
            for r in costs["trace"]:
                print(f"  {r['from_step']:9d}  {r['loss']:.3f}  {r['gold_weight']:11.3f}  {r['cosine']:6.3f}  {r['rank']:4.0f}")
        costs_all.append(costs)
        print(f"{pop}: {len(members)} users, {len(examples)} examples, {costs['items_encoded']} items encoded at "
              f"{costs['items_per_second']:.0f} items/s, trained in {costs['train_seconds']:.0f}s, final loss "
              f"{costs['final_loss']:.3f}; second run encoded {again.misses} (hit rate {again.hit_rate:.0%})",
              flush=True)
        for label, (questions, golds) in evals.items():
            qs = [q for q in questions if q.user_key in members]
            if not qs:
                continue
            rows.setdefault(label, {}).setdefault(method.name + ("" if args.ablation in ("none", "retrieval")
                                                                 else f"-{args.ablation}"), []).append(
                evaluate(method, None, spec, qs, golds, progress=False))
            if args.oracle:
                rows[label].setdefault("oracle-2-tokens", []).append(
                    evaluate(GoldTokens(golds), base, spec, qs, golds, progress=False))
            for name in args.baselines:
                rows[label].setdefault(name, []).append(evaluate(build_method(name), base, spec, qs, golds,
                                                                 progress=False))
    metric = spec.primary_metric
    result = {"task": spec.name, "metric": metric, "ablation": args.ablation, "new_users": args.new_users,
              "settings": settings.model_dump(), "effective": {"model": asdict(cfg), "train": asdict(tcfg)},
              "costs": costs_all, "quality": {}}
    for label, by_method in rows.items():
        print(f"\n{spec.name}, {label}, {metric} (all populations' questions)")
        for name, results in by_method.items():
            n = sum(r.n for r in results)
            value = sum(r.metrics[metric] * r.n for r in results) / n
            result["quality"].setdefault(label, {})[name] = {"n": n, metric: value}
            print(f"  {name:<22} {value:.3f}  (n={n})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = (f"pplug-{spec.name}-{'new-users' if args.new_users else 'time'}-{args.ablation}"
            f"-bridge{cfg.bridge_rank}{f'-sup{tcfg.attention_supervision:g}' if tcfg.attention_supervision else ''}"
            f"{'-bm25labels' if tcfg.attention_labels == 'label+bm25' else ''}"
            f"{'-textkeys' if cfg.history_keys == 'text' else ''}{f'-lr{args.lr:g}' if args.lr else ''}"
            f"{f'-epochs{args.epochs}' if args.epochs != 2 else ''}{f'-seed{args.seed}' if args.seed else ''}.json")
    (out / name).write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out / name}")


if __name__ == "__main__":
    main()
