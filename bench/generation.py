"""Benchmark: batched generation against a one-example-at-a-time loop, same model and inputs.

Uses the demo backbone's starting point (the reader of `backbone.reader` in params.yaml:
throughput does not depend on task adaptation) and real BM25-4 prompts of the synthetic LaMP-2 analogue. Both produce the same texts (the script
checks); the batched path sorts prompts by length so batches carry little padding. Each
path is timed `--repeat` times, alternating, and its fastest run is reported (as `timeit`
does: on a shared machine the slower runs measure the neighbours).

    python bench/generation.py [--prompts 128] [--batch-size 32] [--new-tokens 8 32] [--repeat 3] [--device auto]

On a GPU (`--device cuda`, the evaluation workers' setting) the model runs in the dtype the
platform picks there (bf16 where supported), as `load_backbone` does; in bf16 left padding
changes the last bits of the logits, so near-tied greedy choices can differ between the two
paths (`--dtype float32` shows whether a difference is numerics or a bug).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=128, help="number of prompts")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of the batched run")
    ap.add_argument("--new-tokens", type=int, nargs="+", default=[8, 32],
                    help="max new tokens per prompt; each value is measured (8: LaMP-1/2/3 answers, "
                         "32: LaMP-4/5/7 generations)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each path; the fastest is reported")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (a GPU when there is one)")
    ap.add_argument("--dtype", default="auto",
                    help="auto (as load_backbone: bf16 on a GPU that has it, else float32), float32, bfloat16, ...")
    args = ap.parse_args()

    import tempfile

    import torch

    from components.backbone.model import Backbone, pick_device, pick_dtype
    from components.backbone.reader import load_reader
    from components.config import load_profile
    from components.lamp.synthetic import SynthConfig, generate_task
    from components.lamp.io import read_questions
    from components.lamp.prompts import build_prompt
    from components.lamp.tasks import get_task
    from components.retrieval.rankers import rank_bm25, select_items

    spec = get_task("LaMP-2")
    settings = load_profile("demo", ROOT / "params.yaml").backbone
    cfg = settings.embedded.to_config()
    with tempfile.TemporaryDirectory() as tmp:
        generate_task("LaMP-2", SynthConfig(users=max(60, args.prompts)), tmp)
        qs = read_questions(Path(tmp) / "train_questions.json", spec)[: args.prompts]
    model, tok = load_reader(settings.reader.to_config(), root=ROOT)
    device = pick_device(args.device)
    model = model.eval().to(device=device, dtype=pick_dtype(device, args.dtype))
    backbone = Backbone(model, tok)
    prompts = [build_prompt(spec, q.input, select_items(q.profile, rank_bm25(spec, q), 4),
                            cfg.max_length - max(args.new_tokens), backbone.tokenize, backbone.detokenize).text
               for q in qs]
    mean_tokens = sum(backbone.count_tokens(p) for p in prompts) / len(prompts)
    print(f"{len(prompts)} prompts, mean {mean_tokens:.0f} prompt tokens, model "
          f"{sum(p.numel() for p in backbone.model.parameters()):,} params, {device} {next(model.parameters()).dtype}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f", threads {torch.get_num_threads()}"))
    backbone.generate(prompts[:2], 4)                                  # warm-up
    for new_tokens in args.new_tokens:
        t_single = t_batched = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            single = [backbone.generate([p], new_tokens)[0] for p in prompts]
            t_single = min(t_single, time.perf_counter() - start)
            start = time.perf_counter()
            batched = backbone.generate(prompts, new_tokens, batch_size=args.batch_size)
            t_batched = min(t_batched, time.perf_counter() - start)
        same = sum(a == b for a, b in zip(single, batched))
        print(f"\n{new_tokens} new tokens (fastest of {args.repeat} runs each)")
        print(f"  one at a time : {t_single:7.2f} s  {len(prompts) / t_single:7.1f} prompts/s")
        print(f"  batched ({args.batch_size:>3}) : {t_batched:7.2f} s  {len(prompts) / t_batched:7.1f} prompts/s")
        print(f"  speed-up      : {t_single / t_batched:7.2f}x (goal >= 4x); identical outputs: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
