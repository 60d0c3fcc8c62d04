"""LaMP's official metrics, rule for rule (`LaMP/eval/evaluation.py`).

- LaMP-1/2: predictions and golds are stripped and mapped to their index in the label
  list by exact string match; anything else becomes -1 (always wrong). Accuracy, and
  macro-F1 over *all* labels of the task (sklearn semantics: an ill-defined F1 is 0).
- LaMP-3: `float(pred)`; an unparsable prediction becomes the extreme farthest from the
  gold (1.0 if the gold is closer to 5, else 5.0). MAE and RMSE. So do ratings that parse
  but are not finite or lie outside 1..5 (`nan`, `inf`, `1e308`, `7`): LaMP's own script
  would return NaN or overflow on them; here the score stays a number.
- LaMP-4..7: ROUGE-1 / ROUGE-L F-measure from `rouge-score` without stemming,
  bootstrap-aggregated (the "mid" value, as HF `evaluate` reports); the plain mean is
  reported too (`rouge-1-mean`, `rouge-L-mean`).
- The id sets of predictions and golds must be identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from components.lamp.records import Output
from components.lamp.tasks import TaskSpec, get_task

BOOTSTRAP_SEED = 0  # HF evaluate leaves numpy's global seed alone; we fix it for reproducibility


class IdMismatchError(ValueError):
    pass


def _label_index(labels: Sequence[str], value: str) -> int:
    try:
        return labels.index(value.strip())
    except ValueError:
        return -1


def classification_metrics(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict:
    labels = list(labels)
    p = [_label_index(labels, x) for x in preds]
    g = [_label_index(labels, x) for x in golds]
    accuracy = sum(a == b for a, b in zip(p, g)) / len(g) if g else 0.0
    f1s = []
    for k in range(len(labels)):
        tp = sum(a == k and b == k for a, b in zip(p, g))
        fp = sum(a == k and b != k for a, b in zip(p, g))
        fn = sum(a != k and b == k for a, b in zip(p, g))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": accuracy, "f1": sum(f1s) / len(f1s)}


RATING_RANGE = (1.0, 5.0)


def parse_rating(pred: str, gold: float) -> float:
    low, high = RATING_RANGE
    try:
        value = float(pred)
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value) and low <= value <= high:
        return value
    return low if abs(low - gold) > abs(high - gold) else high


def rating_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict:
    g = [float(x) for x in golds]
    p = [parse_rating(x, y) for x, y in zip(preds, g)]
    n = len(g) or 1
    mae = sum(abs(a - b) for a, b in zip(p, g)) / n
    rmse = math.sqrt(sum((a - b) ** 2 for a, b in zip(p, g)) / n)
    return {"MAE": mae, "RMSE": rmse}


def rouge_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict:
    import numpy as np
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    sums = {"rouge1": 0.0, "rougeL": 0.0}
    for pred, gold in zip(preds, golds):
        score = scorer.score(gold, pred.strip())
        aggregator.add_scores(score)
        for key in sums:
            sums[key] += score[key].fmeasure
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        agg = aggregator.aggregate() if preds else {}
    finally:
        np.random.set_state(state)
    n = len(preds) or 1
    return {
        "rouge-1": float(agg["rouge1"].mid.fmeasure) if agg else 0.0,
        "rouge-L": float(agg["rougeL"].mid.fmeasure) if agg else 0.0,
        "rouge-1-mean": sums["rouge1"] / n,
        "rouge-L-mean": sums["rougeL"] / n,
    }


def score_texts(task: str | TaskSpec, preds: Sequence[str], golds: Sequence[str]) -> dict:
    spec = get_task(task) if isinstance(task, str) else task
    if spec.kind == "classification":
        return classification_metrics(preds, golds, spec.labels)
    if spec.kind == "rating":
        return rating_metrics(preds, golds)
    return rouge_metrics(preds, golds)


def score_outputs(task: str | TaskSpec, predictions: Sequence[Output] | Mapping[str, str],
                  golds: Sequence[Output] | Mapping[str, str]) -> dict:
    """Score predictions against golds by id; the id sets must be equal (LaMP's guard)."""
    pred = predictions if isinstance(predictions, Mapping) else {o.id: o.output for o in predictions}
    gold = golds if isinstance(golds, Mapping) else {o.id: o.output for o in golds}
    if set(pred) != set(gold):
        missing, extra = sorted(set(gold) - set(pred)), sorted(set(pred) - set(gold))
        raise IdMismatchError(
            f"prediction ids differ from gold ids: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(extra)} unexpected (e.g. {extra[:3]})")
    ids = list(gold)
    return score_texts(task, [pred[i] for i in ids], [gold[i] for i in ids])
