"""Benchmark: serving latency and throughput at batch sizes 1 and 16.

For each method, registers `serve-<method>`, starts the server of `persona serve` (MLflow's scoring app under uvicorn) on 127.0.0.1 (the
real HTTP path: JSON in, pyfunc, JSON out) and sends the test questions of known users
(no profile in the request: the stored history is used) one row per request, then 16 rows
per request. Reports p50/p95 request latency, per-row latency and rows/s in steady state
(after a first pass that fills the vector and context caches where empty, itself reported), and the
one-off load time of the first request (models fetched from the registry). The same requests are
also timed in process (`PersonaService.answer`) in the same run, so the HTTP overhead shows
as a ratio. JSON and a plot go to reports/bench/, and to MLflow (experiment `bench-serving`).

    python bench/serving.py [--task LaMP-2] [--methods tap-per pplug bm25-4] [--requests 64]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, rows: list[dict]) -> list[dict]:
    req = urllib.request.Request(url, json.dumps({"dataframe_records": rows}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["predictions"]


def _stats(latencies: list[float], batch: int) -> dict:
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    total = sum(lat)
    return {"batch_size": batch, "requests": len(lat), "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * p95,
            "ms_per_row": 1000 * total / (batch * len(lat)), "rows_per_second": batch * len(lat) / total}


def measure(call, rows: list[dict], batch: int) -> dict:
    latencies = []
    for start in range(0, len(rows) - batch + 1, batch):
        t0 = time.perf_counter()
        call(rows[start:start + batch])
        latencies.append(time.perf_counter() - t0)
    return _stats(latencies, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-2", help="LaMP task whose time/test questions are sent")
    ap.add_argument("--methods", nargs="+", default=["tap-per", "pplug", "bm25-4"],
                    help="methods to serve (each needs its trained models in the registry)")
    ap.add_argument("--requests", type=int, default=64, help="rows sent per batch size (64: 64 x 1, 4 x 16)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="rows per request")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="where the JSON and the plot go")
    args = ap.parse_args()

    import flows  # noqa: F401  (the caches under .state/)
    from components.lamp.io import read_questions
    from components.lamp.splits import split_files
    from components.serving.registry import register_serving_model, serve_command, serve_env
    from components.serving.service import PersonaService
    from components.tracking import mlflow_tracking

    uri = mlflow_tracking.configure(ROOT)
    questions = read_questions(split_files(args.task, "time/test", ROOT / "data")[0], args.task)
    rows = [{"user_id": q.user_key, "task": args.task, "input": q.input, "date": q.date}
            for q in questions[: args.requests]]
    result = {"task": args.task, "rows": len(rows), "methods": {}}
    for method in args.methods:
        reg = register_serving_model(method, ROOT, batch_size=max(args.batch_sizes))
        port = _port()
        log = Path(args.out) / f"serve-{method}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(serve_command(port=port), stdout=log.open("w"), stderr=subprocess.STDOUT,
                                env=serve_env(reg["model_uri"], {**__import__("os").environ, "MLFLOW_TRACKING_URI": uri}))
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise SystemExit(f"server for {method} exited: {log.read_text()[-2000:]}")
                    time.sleep(0.5)
            t0 = time.perf_counter()
            _post(f"{url}/invocations", rows[:1])              # loads the models
            load = time.perf_counter() - t0
            # a first pass fills the item-vector and compressed-context caches (on disk, so the
            # in-process service below reads them too); then both are timed in steady state
            first = measure(lambda r: _post(f"{url}/invocations", r), rows, max(args.batch_sizes))
            http = [measure(lambda r: _post(f"{url}/invocations", r), rows, b) for b in args.batch_sizes]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        service = PersonaService(method, ROOT, batch_size=max(args.batch_sizes))
        service.answer(rows)
        local = [measure(service.answer, rows, b) for b in args.batch_sizes]
        result["methods"][method] = {"first_request_seconds": load, "first_pass": first, "http": http,
                                     "in_process": local}
        print(f"{method:>10} first request (loads the models) {load:.1f} s; first pass "
              f"{first['rows_per_second']:.1f} rows/s at batch {first['batch_size']} (fills the caches that are empty)", flush=True)
        for h, loc in zip(http, local):
            print(f"{method:>10} batch {h['batch_size']:>2}: p50 {h['p50_ms']:7.1f} ms  p95 {h['p95_ms']:7.1f} ms  "
                  f"{h['rows_per_second']:6.1f} rows/s over HTTP; in process {loc['rows_per_second']:6.1f} rows/s "
                  f"(HTTP/in-process time per row {h['ms_per_row'] / loc['ms_per_row']:.2f}x)", flush=True)

    out = Path(args.out)
    path = out / f"serving-{args.task}.json"
    path.write_text(json.dumps(result, indent=2))
    plot = out / f"serving-{args.task}.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(result["methods"])
    for ax, key, label in ((axes[0], "p50_ms", "p50 request latency (ms)"), (axes[1], "rows_per_second", "rows/s")):
        for j, b in enumerate(args.batch_sizes):
            ax.bar([i + 0.4 * j for i in range(len(names))], [result["methods"][m]["http"][j][key] for m in names],
                   width=0.4, label=f"batch {b}")
        ax.set_xticks([i + 0.2 for i in range(len(names))], names)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"Serving over HTTP (persona serve), {args.task}, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    import mlflow

    mlflow.set_experiment("bench-serving")
    with mlflow.start_run(run_name=f"serving-{args.task}", tags={"kind": "bench"}):
        mlflow.log_dict(result, "serving.json")
        mlflow.log_artifact(str(plot))
        for m, r in result["methods"].items():
            for h in r["http"]:
                key = f"{m.replace('@', '_at_')}_b{h['batch_size']}"      # metric names cannot hold @
                mlflow.log_metrics({f"{key}_p50_ms": h["p50_ms"], f"{key}_p95_ms": h["p95_ms"],
                                    f"{key}_rows_per_s": h["rows_per_second"]})
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
