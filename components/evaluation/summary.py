"""The machine-readable standings (`reports/summary.json`), a Markdown comparison table
and a bar chart, so that scripts and reviewers can read results without MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from components.lamp.tasks import get_task
from components.storage.files import file_lock, write_json_atomic


def update_summary(path: str | Path, profile: str, task: str, method: str, entry: dict) -> dict:
    """Insert or replace one method's entry for one task; atomic and safe under concurrency."""
    path = Path(path)
    spec = get_task(task)
    with file_lock(path.with_suffix(".lock")):
        data = json.loads(path.read_text()) if path.exists() else {"profile": profile, "tasks": {}}
        if data.get("profile") != profile:
            data = {"profile": profile, "tasks": {}}
        t = data["tasks"].setdefault(spec.name, {"primary_metric": spec.primary_metric,
                                                 "higher_is_better": spec.higher_is_better, "methods": {}})
        t["methods"][method] = entry
        write_json_atomic(path, data)
    return data


def comparison_table(summary: dict, task: str) -> str:
    """Markdown table of every method on one task, best primary metric first."""
    t = summary["tasks"][task]
    spec = get_task(task)
    rows = sorted(t["methods"].items(), key=lambda kv: kv[1]["metrics"][t["primary_metric"]],
                  reverse=t["higher_is_better"])
    names = list(spec.metric_names)
    head = ["method", *names, "context tokens", "truncated", "per-user params", "ms/example"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, e in rows:
        cells = [method, *(f"{e['metrics'][n]:.3f}" for n in names), f"{e['context_tokens_mean']:.0f}",
                 f"{e.get('truncated_share', 0.0):.0%}", f"{e['per_user_params']:,}", f"{e['latency_ms_per_example']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(summary: dict, task: str, out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = summary["tasks"][task]
    metric = t["primary_metric"]
    items = sorted(t["methods"].items(), key=lambda kv: kv[1]["metrics"][metric], reverse=t["higher_is_better"])
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(items) + 2), 3.6))
    ax.bar([m for m, _ in items], [e["metrics"][metric] for _, e in items], color="#4C72B0")
    ax.set_ylabel(f"{metric} ({'higher' if t['higher_is_better'] else 'lower'} is better)")
    ax.set_title(f"{task}: methods on the same split")
    ax.tick_params(axis="x", rotation=35)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
