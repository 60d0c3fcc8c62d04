"""Benchmark: the sentence encoder (all-MiniLM-L6-v2) in float32 against bf16 autocast, side
by side on the same item texts of the demo data, in one run: items/s for each and the cosine
between the two vectors of every item (what `PERSONA_ENCODER_PRECISION=auto` decides on a
CPU with native bf16, `components/retrieval/encoder.py`).

    python bench/encoder.py [--task LaMP-2] [--items 2000] [--repeats 2]
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
    ap.add_argument("--task", default="LaMP-2", help="task whose time/test profile items are encoded")
    ap.add_argument("--items", type=int, default=2000, help="distinct item texts to encode")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds of both precisions")
    args = ap.parse_args()

    from components.lamp.io import read_questions
    from components.lamp.splits import split_files
    from components.lamp.tasks import get_task
    from components.retrieval.encoder import SentenceEncoder, cpu_has_bf16

    spec = get_task(args.task)
    texts = []
    for q in read_questions(split_files(spec.name, "time/test", ROOT / "data")[0], spec):
        texts += [spec.item_text(p.fields) for p in q.profile]
    texts = list(dict.fromkeys(texts))[: args.items]
    enc = SentenceEncoder.default()
    print(f"{len(texts)} items; CPU with native bf16: {cpu_has_bf16()}")
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    vectors = {}
    for _ in range(args.repeats):
        for precision in ("fp32", "bf16"):
            enc.precision = precision
            t0 = time.perf_counter()
            vectors[precision] = enc.encode(texts)
            rates[precision].append(len(texts) / (time.perf_counter() - t0))
    cos = (vectors["fp32"] * vectors["bf16"]).sum(1)
    best = {p: max(r) for p, r in rates.items()}
    print(f"fp32: {best['fp32']:.0f} items/s   bf16 autocast: {best['bf16']:.0f} items/s   "
          f"ratio {best['bf16'] / best['fp32']:.2f}x (best of {args.repeats} rounds each)")
    print(f"cosine(fp32, bf16) per item: mean {float(cos.mean()):.5f}, min {float(cos.min()):.5f}")


if __name__ == "__main__":
    main()
