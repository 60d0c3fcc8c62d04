"""Benchmark: train the embedded backbone with settings overridden, and measure how much it
uses user context (non-personalized, random-4, BM25-4 and full context on time/test).

For recipe experiments on the demo data (needs `data/prepared`, e.g. after `dvc repro`):

    python bench/backbone.py --task LaMP-2 --set profile_label_loss=false task_steps=1350
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="task of the demo profile")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of backbone.embedded (values parsed as JSON, e.g. profile_label_loss=false)")
    ap.add_argument("--methods", nargs="+", default=["non-personalized", "random-4", "bm25-4", "full-context"],
                    help="baselines evaluated with the trained backbone")
    ap.add_argument("--save", metavar="DIR", help="also save the trained backbone there (save_pretrained)")
    ap.add_argument("--marker-sweep", action="store_true",
                    help="also score the inference-only Attn-GS marker (this backbone's raw attention) "
                         "against the ground truth, every marking setting (bench/attn_gs_diagnostics.py)")
    args = ap.parse_args()

    import flows  # noqa: F401  (environment defaults)
    from components.backbone.embedded import train_embedded_backbone
    from components.config import load_profile
    from components.evaluation.harness import evaluate
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.lamp.tasks import get_task
    from components.methods import build_method

    spec = get_task(args.task)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = dataclasses.replace(load_profile(None, ROOT / "params.yaml").backbone.embedded.to_config(), **overrides)
    qfile, ofile = split_files(spec.name, "time/train", ROOT / "data")
    backbone, stats = train_embedded_backbone(spec, read_questions(qfile, spec), read_golds(ofile, spec), cfg)
    if args.save:
        from components.backbone.model import save_backbone

        print(f"saved to {save_backbone(backbone, args.save)}")
    tfile, tout = split_files(spec.name, "time/test", ROOT / "data")
    questions, golds = read_questions(tfile, spec), read_golds(tout, spec)
    print(f"{spec.name} {overrides or 'params.yaml'}: final loss {stats['final_loss']:.3f}, "
          f"{stats['train_seconds']:.0f}s; time/test {spec.primary_metric}:")
    for name in args.methods:
        r = evaluate(build_method(name), backbone, spec, questions, golds, progress=False)
        print(f"  {name:<18} {r.metrics[spec.primary_metric]:.3f}")
    if args.marker_sweep:
        from bench.attn_gs_diagnostics import inference_sweep

        relevance = json.loads((ROOT / "data" / "raw" / spec.name / "relevance.json").read_text())
        inference_sweep(spec, backbone, questions[:200], relevance)


if __name__ == "__main__":
    main()
