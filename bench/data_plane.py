"""Benchmark: load + validate a LaMP-3-train-sized questions file.

Generates (once, cached in bench/out/) a synthetic LaMP-3 train file with the real
split's shape (20,000 questions x ~185 profile items), then measures, each in its own
subprocess so that peak memory is that step's alone:

  json.load      the plain standard-library load of the whole file (the reference)
  stream         our streaming reader (typed records, one at a time)
  validate       streaming reader + the full Great Expectations suite (chunked)

Reports throughput (MB/s), peak RSS, and ratios against json.load measured in this run.
Goal: validate's peak memory below twice the file size.

    python bench/data_plane.py [--questions 20000] [--profile-min 120 --profile-max 250]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = {
    "json.load": "import json; data = json.load(open(PATH, encoding='utf-8')); n = len(data)",
    "stream": "from components.lamp.io import iter_questions; n = sum(1 for _ in iter_questions(PATH, 'LaMP-3'))",
    "validate": ("from components.validation.runner import validate_files; "
                 "r = validate_files('LaMP-3', PATH); assert r.success, r.summary(); n = r.n_questions"),
}


def _child(step: str, path: str) -> None:
    from components.evaluation.memory import peak_rss_mb

    if step == "validate":                      # import cost is not load cost
        import great_expectations  # noqa: F401
        import pandas  # noqa: F401
    base = peak_rss_mb()
    start = time.perf_counter()
    scope = {"PATH": path}
    exec(STEPS[step], scope)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base,
                      "questions": scope["n"]}))


def _generate(path: Path, questions: int, pmin: int, pmax: int) -> None:
    from components.lamp.synthetic import SynthConfig, generate_task

    cfg = SynthConfig(users=questions, queries_per_user=1, profile_min=pmin, profile_max=pmax,
                      split_fractions=(1.0, 0.0, 0.0), words_per_text=(20, 60), seed=1)
    t = time.perf_counter()
    generate_task("LaMP-3", cfg, path.parent)
    print(f"generated {path} in {time.perf_counter() - t:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=20_000, help="questions in the file (LaMP-3 train: 20,000)")
    ap.add_argument("--profile-min", type=int, default=120, help="fewest profile items per question")
    ap.add_argument("--profile-max", type=int, default=250, help="most profile items per question (mean ~185)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="where the generated file is cached")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(*args.child)

    path = Path(args.out) / f"lamp3-{args.questions}-{args.profile_min}-{args.profile_max}" / "train_questions.json"
    if not path.exists():
        _generate(path, args.questions, args.profile_min, args.profile_max)
    size_mb = path.stat().st_size / 2**20
    print(f"file: {path} ({size_mb:.0f} MB)")
    results = {}
    for step in STEPS:
        proc = subprocess.run([sys.executable, __file__, "--child", step, str(path)],
                              capture_output=True, text=True, env=dict(os.environ, GX_ANALYTICS_ENABLED="False"))
        if proc.returncode != 0:
            sys.exit(f"{step} failed:\n{proc.stderr[-3000:]}")
        results[step] = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = results["json.load"]
    print(f"\n{'step':<10} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12} {'added MB':>9} "
          f"{'added/file':>10} {'speed vs json.load':>18}")
    for step, r in results.items():
        added = r["peak_rss_mb"] - r["base_rss_mb"]
        print(f"{step:<10} {r['seconds']:>8.1f} {size_mb / r['seconds']:>7.1f} {r['peak_rss_mb']:>12.0f} "
              f"{added:>9.0f} {added / size_mb:>10.2f} {ref['seconds'] / r['seconds']:>17.2f}x")
    peak_ratio = results["validate"]["peak_rss_mb"] / size_mb
    print(f"\nvalidate peak RSS / file size = {peak_ratio:.2f} (goal < 2.0: {'met' if peak_ratio < 2 else 'NOT met'})")
    out = Path(args.out) / "data_plane.json"
    out.write_text(json.dumps({"file_mb": size_mb, "results": results, "peak_ratio": peak_ratio}, indent=2))
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
