"""`persona report`: a Markdown and an HTML report of `reports/summary.json`, per task:
every method's quality, mean context tokens, the share of questions whose profile lost its
oldest items to the model's window, per-user parameters and latency, a Pareto plot
(quality against context tokens, point size = per-user parameters), and the published
numbers of the reference papers beside ours — on a different backbone and different data,
so labelled and never mixed into our table.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from components.lamp.tasks import get_task

# Published figures (shared/reference/methods-and-lamp.md §C): (method, setting, {metric: value})
PUBLISHED: dict[str, list[tuple[str, str, dict[str, float]]]] = {
    "LaMP-2": [
        ("Ad-hoc (no history)", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"accuracy": 0.359, "f1": 0.276}),
        ("BM25 top-4", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"accuracy": 0.387, "f1": 0.306}),
        ("Recency top-4", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"accuracy": 0.377, "f1": 0.295}),
        ("PPlug", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"accuracy": 0.559, "f1": 0.495}),
        ("OPPU", "Llama-2-7B, OPPU 100-user split, LaMP-2M [PerFit note]", {"accuracy": 0.600, "f1": 0.493}),
        ("TAP-PER", "Llama-3.1-8B, OPPU 100-user split, LaMP-2M [TAP-PER README]", {"accuracy": 0.751, "f1": 0.682}),
    ],
    "LaMP-3": [
        ("Ad-hoc (no history)", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"MAE": 0.308, "RMSE": 0.611}),
        ("BM25 top-4", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"MAE": 0.298, "RMSE": 0.611}),
        ("Recency top-4", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"MAE": 0.296, "RMSE": 0.605}),
        ("PPlug", "FlanT5-XXL, LaMP time-based test [PPlug paper, Table 1]", {"MAE": 0.242, "RMSE": 0.557}),
        ("OPPU", "Llama-2-7B, OPPU 100-user split [PerFit note]", {"MAE": 0.179, "RMSE": 0.443}),
        ("TAP-PER", "Llama-3.1-8B, OPPU 100-user split [TAP-PER README]", {"MAE": 0.170, "RMSE": 0.430}),
    ],
}


def pareto_front(points: list[tuple[str, float, float]], higher_is_better: bool) -> set[str]:
    """Names of the points that no other point beats on both quality and (fewer) tokens."""
    front = set()
    for name, tokens, quality in points:
        dominated = any((t <= tokens and (q >= quality if higher_is_better else q <= quality))
                        and (t < tokens or q != quality) for n, t, q in points if n != name)
        if not dominated:
            front.add(name)
    return front


def pareto_plot(summary: dict, task: str, out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = summary["tasks"][task]
    metric, hib = t["primary_metric"], t["higher_is_better"]
    points = [(m, max(e["context_tokens_mean"], 0.5), e["metrics"][metric]) for m, e in t["methods"].items()]
    front = pareto_front(points, hib)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, tokens, quality in points:
        params = t["methods"][name].get("per_user_params", 0) or 0
        size = 40 + 40 * math.log10(1 + params)
        ax.scatter(tokens, quality, s=size, alpha=0.75, edgecolors="black" if name in front else "none",
                   linewidths=1.5)
        ax.annotate(name, (tokens, quality), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mean context tokens per query (log scale; soft tokens count 1 each)")
    ax.set_ylabel(f"{metric} ({'higher' if hib else 'lower'} is better)")
    ax.set_title(f"{task}: quality against context (size: per-user parameters; outlined: Pareto front)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _rows(summary: dict, task: str) -> tuple[list[str], list[list[str]]]:
    t = summary["tasks"][task]
    spec = get_task(task)
    metric = t["primary_metric"]
    names = sorted(t["methods"], key=lambda m: t["methods"][m]["metrics"][metric], reverse=t["higher_is_better"])
    front = pareto_front([(m, t["methods"][m]["context_tokens_mean"], t["methods"][m]["metrics"][metric])
                          for m in names], t["higher_is_better"])
    header = ["method", *spec.metric_names, "context tokens", "truncated", "per-user params", "latency ms/ex",
              "Pareto"]
    rows = []
    for m in names:
        e = t["methods"][m]
        rows.append([m, *[f"{e['metrics'][k]:.3f}" for k in spec.metric_names], f"{e['context_tokens_mean']:.1f}",
                     f"{e.get('truncated_share', 0.0):.0%}", f"{e.get('per_user_params', 0):,}",
                     f"{e.get('latency_ms_per_example', 0):.1f}",
                     "yes" if m in front else ""])
    return header, rows


def _published_rows(task: str) -> tuple[list[str], list[list[str]]]:
    spec = get_task(task)
    header = ["method (published)", *spec.metric_names, "setting"]
    return header, [[m, *[f"{v[k]:.3f}" for k in spec.metric_names], setting]
                    for m, setting, v in PUBLISHED.get(spec.name, [])]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


NOTE = ("Published numbers come from other backbones (FlanT5-XXL, Llama-2-7B, Llama-3.1-8B) on the real "
        "LaMP data and other splits; ours come from the platform's own backbone and data. They show "
        "where the methods stand in their papers, not a comparison with this run.")


def write_report(summary: dict, out_dir: str | Path) -> dict[str, Path]:
    """reports/report.md, reports/report.html and one Pareto plot per task."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Personalization report: profile `{summary.get('profile', '?')}`", ""]
    body = [f"<h1>Personalization report: profile {html.escape(str(summary.get('profile', '?')))}</h1>"]
    files: dict[str, Path] = {}
    for task in summary["tasks"]:
        png = pareto_plot(summary, task, out / f"pareto-{task}.png")
        files[f"pareto-{task}"] = png
        ours, published = _rows(summary, task), _published_rows(task)
        md += [f"## {task}", "", "### This run", "", _md_table(*ours), "", f"![Pareto plot]({png.name})", "",
               "### Published (different backbone and data)", "", f"_{NOTE}_", "", _md_table(*published), ""]
        body += [f"<h2>{html.escape(task)}</h2><h3>This run</h3>", _html_table(*ours),
                 f'<p><img src="{png.name}" alt="Pareto plot {html.escape(task)}" width="700"></p>',
                 "<h3>Published (different backbone and data)</h3>", f"<p><em>{html.escape(NOTE)}</em></p>",
                 _html_table(*published)]
    files["md"] = out / "report.md"
    files["md"].write_text("\n".join(md))
    files["html"] = out / "report.html"
    files["html"].write_text("<!doctype html><html><head><meta charset='utf-8'><title>persona-lamp report</title>"
                             "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
                             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
                             "</head><body>" + "\n".join(body) + "</body></html>")
    return files


def publish(repo: str | Path = ".", reports: str | Path | None = None) -> dict[str, str]:
    """Everything a reader needs from `summary.json`: per-task comparison tables and bar
    charts, the report (Markdown + HTML + Pareto plots), each logged to MLflow. Returns the
    Markdown table per task."""
    import json

    import mlflow

    from components.evaluation.summary import bar_chart, comparison_table
    from components.tracking import mlflow_tracking

    reports = Path(reports) if reports is not None else Path(repo) / "reports"
    path = reports / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run an evaluation first (persona pipeline or persona eval run)")
    summary = json.loads(path.read_text())
    mlflow_tracking.configure(repo)
    files = write_report(summary, reports)
    from components.config import load_profile
    from components.methods.accounting import accounting_for

    files["accounting"] = reports / "accounting.md"
    profile = load_profile(summary.get("profile"), Path(repo) / "params.yaml")
    files["accounting"].write_text("# Per-user parameters and storage\n\n" + accounting_for(
        profile.backbone.reader.to_config().directory(repo), pplug_bridge_rank=profile.pplug.bridge_rank,
        tap_per=profile.tap_per.configs()[0]) + "\n")
    tables = {}
    for task_name in summary["tasks"]:
        table = comparison_table(summary, task_name)
        md = reports / f"comparison-{task_name}.md"
        md.write_text(f"# {task_name}\n\n{table}\n")
        png = bar_chart(summary, task_name, reports / f"comparison-{task_name}.png")
        mlflow_tracking.experiment(task_name, repo)
        with mlflow.start_run(run_name=f"report-{task_name}", tags=mlflow_tracking.standard_tags(repo, kind="report")):
            for f in (md, png, files[f"pareto-{task_name}"], files["md"], files["html"], files["accounting"]):
                mlflow.log_artifact(str(f))
            mlflow.log_dict(summary["tasks"][task_name], "summary.json")
        tables[task_name] = table
    return tables
