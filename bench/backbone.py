"""Benchmark: how much does the demo backbone read its user context?

Task-adapts the shipped reader once per task and seed (settings from params.yaml, overridden
with --set), then scores on one split: no history, random-4, BM25-4, dense-4 and full
context (the task's official metric), and recall-4 with fresh labels: BM25's best item for
the input among three others from the half of the profile least like the input, every label
replaced by a different label drawn afresh, in random order; only matching the input against
the items' texts answers it (chance 0.25).
Prints, per task, the mean, the spread (max - min) and each seed's figure, and writes them
as JSON.

Choose settings on time/dev (the default); read time/test once for a reported run.
Needs the demo data (`dvc repro prepare`).

    python bench/backbone.py --tasks LaMP-2 LaMP-3 --seeds 0 1 2 [--split time/test] [--set steps=600]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINES = ["non-personalized", "random-4", "bm25-4", "dense-4", "full-context"]


def answers(spec, backbone, shown) -> list[str]:
    """The backbone's answers to LaMP's prompts for (task input, items shown) pairs."""
    from components.lamp.prompts import build_prompt

    prompts = [build_prompt(spec, task_input, items, backbone.max_length - spec.max_new_tokens - 2,
                            backbone.tokenize, backbone.detokenize).text for task_input, items in shown]
    return backbone.generate(prompts, spec.max_new_tokens, batch_size=32)


def recall_at_k(spec, backbone, questions, k: int, seed: int = 0) -> dict[str, float] | None:
    """In-context recall with fresh labels on questions with at least k profile items:
    `exact` is the share answered with the matching item's new label, `shown` with any
    label shown; None for tasks without a closed label set."""
    from components.backbone.embedded import recall_context

    if spec.label_field is None or not spec.labels:
        return None
    rng = random.Random(seed)
    cases = [recall_context(spec, q, rng, k) + (q,) for q in questions if len(q.profile) >= k]
    outs = answers(spec, backbone, [(q.input, items) for items, _, q in cases])
    exact = sum(o.strip() == answer for o, (_, answer, _) in zip(outs, cases)) / len(cases)
    shown = sum(o.strip() in {p.fields[spec.label_field] for p in items}
                for o, (items, _, _) in zip(outs, cases)) / len(cases)
    return {"exact": exact, "shown": shown, "chance": 1 / k, "n": len(cases)}


def run_seed(spec, cfg, reader, split: str, limit: int | None, save: Path | None = None) -> dict[str, float]:
    """Task-adapt the reader once (saved to `save` if given) and score it: {row: figure}."""
    from components.backbone.embedded import train_embedded_backbone
    from components.evaluation.harness import evaluate
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.methods import build_method

    qfile, ofile = split_files(spec.name, "time/train", ROOT / "data")
    backbone, stats = train_embedded_backbone(spec, read_questions(qfile, spec), read_golds(ofile, spec), cfg,
                                              reader=reader)
    if save is not None:
        from components.backbone.model import save_backbone

        print(f"saved to {save_backbone(backbone, save)}")
    tfile, tout = split_files(spec.name, split, ROOT / "data")
    questions, golds = read_questions(tfile, spec)[:limit], read_golds(tout, spec)
    row = {"train_minutes": stats["train_seconds"] / 60}
    for name in BASELINES:
        r = evaluate(build_method(name), backbone, spec, questions, golds, progress=False)
        row[name] = r.metrics[spec.primary_metric]
    recall = recall_at_k(spec, backbone, questions, 4, seed=cfg.seed)
    if recall is not None:
        row["recall-4"] = recall["exact"]
    return row


def summarise(per_seed: dict[int, dict[str, float]]) -> dict[str, dict]:
    rows = next(iter(per_seed.values())).keys()
    out = {}
    for row in rows:
        values = [per_seed[s][row] for s in per_seed]
        out[row] = {"mean": statistics.mean(values), "spread": max(values) - min(values),
                    "seeds": {str(s): per_seed[s][row] for s in per_seed}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=None, help="tasks (default: the demo profile's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one backbone per seed (default: 0)")
    ap.add_argument("--split", default="time/dev", help="split scored (default: time/dev; time/test once at the end)")
    ap.add_argument("--limit", type=int, default=None, help="score the first N questions only (default: all)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of backbone.embedded (values parsed as JSON, e.g. steps=600)")
    ap.add_argument("--reader", metavar="DIR", help="the reader to start from (default: backbone.reader.path)")
    ap.add_argument("--save", metavar="DIR", help="also save each backbone to DIR/<task>-seed<N> (save_pretrained)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench-backbone.json"),
                    help="JSON written (default: reports/bench-backbone.json)")
    args = ap.parse_args()

    import flows  # noqa: F401  (environment defaults)
    from components.config import load_profile, with_overrides
    from components.lamp.tasks import get_task
    from components.storage.files import write_json_atomic

    profile = load_profile(None, ROOT / "params.yaml")
    embedded, defaults = with_overrides(profile.backbone.embedded, args.set, "backbone.embedded"), \
        profile.backbone.embedded.model_dump()
    base = embedded.to_config()
    overrides = {k: v for k, v in embedded.model_dump().items() if v != defaults[k]}
    reader = profile.backbone.reader.to_config()
    reader = dataclasses.replace(reader, path=str(Path(args.reader).resolve() if args.reader
                                                  else reader.directory(ROOT)))
    report = {"split": args.split, "limit": args.limit, "overrides": overrides, "reader": str(reader.directory()), "seeds": args.seeds, "tasks": {}}
    for task in args.tasks or profile.tasks:
        spec = get_task(task)
        per_seed = {seed: run_seed(spec, dataclasses.replace(base, seed=seed), reader, args.split, args.limit,
                                   Path(args.save) / f"{spec.name}-seed{seed}" if args.save else None)
                    for seed in args.seeds}
        summary = report["tasks"][spec.name] = summarise(per_seed)
        print(f"\n{spec.name} {args.split} ({spec.primary_metric}; recall-4: share answered with the matching "
              f"item's fresh label, chance 0.25)")
        for row, s in summary.items():
            seeds = " ".join(f"{v:.3f}" for v in s["seeds"].values())
            print(f"  {row:<18} mean {s['mean']:.3f}  spread {s['spread']:.3f}  seeds {seeds}", flush=True)
    write_json_atomic(args.out, report)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
