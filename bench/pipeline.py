"""Benchmark: the main job (README command (a)) run twice in one go.

The first run does whatever is not cached yet (on a fresh clone: everything); the second
run has nothing to do but re-check and re-report. Prints both wall times and their ratio
and writes them to reports/bench-pipeline.json (with the commit), which the README's
generated results show (`persona report --readme`).
Pass --fresh to drop the local state first (DVC outputs, MLflow store, Prefect cache and
reports), so the first run measures a whole pipeline from scratch.

    python bench/pipeline.py [--fresh]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_once() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "pipeline", "--no-push"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fresh", action="store_true", help="delete data outputs, .state and reports first")
    args = ap.parse_args()
    if args.fresh:
        for rel in ("data/raw", "data/validation", "data/prepared", ".state", "reports"):
            shutil.rmtree(ROOT / rel, ignore_errors=True)
    first = run_once()
    second = run_once()
    print(f"first run : {first:7.1f} s ({first / 60:.1f} min)")
    print(f"second run: {second:7.1f} s")
    print(f"second / first = {second / first:.1%} (goal: under 10%)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    from components.storage.files import write_json_atomic

    out = write_json_atomic(ROOT / "reports" / "bench-pipeline.json", {"first_s": first, "second_s": second,
                                                                        "fresh": args.fresh,
                                                                        "commit": commit.strip() or None})
    print(f"written to {out}")


if __name__ == "__main__":
    main()
