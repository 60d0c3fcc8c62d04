"""Run a method on a split: predictions (official format), official metrics, costs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.backbone.model import Backbone
from components.evaluation.memory import peak_rss_mb
from components.lamp.io import write_outputs
from components.lamp.metrics import score_outputs
from components.lamp.records import Output, Question
from components.lamp.tasks import TaskSpec
from components.methods.base import Method, Prediction
from components.stopping import stop_if_requested


class EmptySplitError(ValueError):
    pass


@dataclass
class EvalResult:
    method: str
    task: str
    split: str
    n: int
    metrics: dict[str, float]
    costs: dict[str, float]
    per_user_params: int
    predictions_file: str | None = None
    predictions: list[Prediction] = field(default_factory=list, repr=False)

    def summary_entry(self) -> dict:
        return {"metrics": self.metrics, "context_tokens_mean": self.costs["context_tokens_mean"],
                "truncated_share": self.costs["truncated_share"],
                "per_user_params": self.per_user_params,
                "latency_ms_per_example": self.costs["latency_ms_per_example"], "n": self.n}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions")
        return d


def _p95(values: list[int]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))])


def evaluate(method: Method, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question],
             golds: dict[str, str], split: str = "test", batch_size: int = 32,
             out_file: str | Path | None = None, progress: bool = True) -> EvalResult:
    """Predict every question in batches, score with the official metrics, count costs."""
    from tqdm.auto import tqdm

    if not questions:
        raise EmptySplitError(f"split {split!r} of {spec.name} has no questions: nothing to evaluate")
    missing = [q.id for q in questions if q.id not in golds]
    if missing:
        raise EmptySplitError(f"{len(missing)} questions of {spec.name}/{split} have no gold output "
                              f"(e.g. {missing[:3]}); evaluate on a split with outputs")
    preds: list[Prediction] = []
    start = time.perf_counter()
    bar = tqdm(total=len(questions), desc=f"{method.name} on {spec.name}/{split}", disable=not progress,
               mininterval=2)
    for i in range(0, len(questions), batch_size):
        batch = questions[i:i + batch_size]
        preds.extend(method.predict(backbone, spec, batch))
        bar.update(len(batch))
        stop_if_requested()
    bar.close()
    wall = time.perf_counter() - start
    if out_file is not None:
        write_outputs(out_file, spec, [Output(p.id, p.output) for p in preds])
    metrics = score_outputs(spec, {p.id: p.output for p in preds}, {q.id: golds[q.id] for q in questions})
    ctx = [p.context_tokens for p in preds]
    costs = {
        "context_tokens_mean": statistics.fmean(ctx), "context_tokens_p95": _p95(ctx),
        "prompt_tokens_mean": statistics.fmean(p.prompt_tokens for p in preds),
        # profiles longer than the model's window lose their oldest items: how often, how many
        "truncated_share": statistics.fmean(p.items_dropped > 0 for p in preds),
        "items_dropped_mean": statistics.fmean(p.items_dropped for p in preds),
        "wall_seconds": wall, "examples_per_second": len(preds) / wall if wall else 0.0,
        "latency_ms_per_example": 1000 * wall / len(preds), "peak_rss_mb": peak_rss_mb(),
    }
    return EvalResult(method.name, spec.name, split, len(preds), metrics, costs, method.per_user_params,
                      str(out_file) if out_file else None, preds)
