"""The report: our table, a Pareto plot, and the published numbers kept apart."""

from components.evaluation.report import PUBLISHED, pareto_front, write_report


def _summary():
    def entry(metrics, tokens, params, latency=5.0, truncated=0.0):
        return {"metrics": metrics, "context_tokens_mean": tokens, "per_user_params": params,
                "latency_ms_per_example": latency, "truncated_share": truncated}

    return {"profile": "demo", "tasks": {
        "LaMP-2": {"primary_metric": "accuracy", "higher_is_better": True, "methods": {
            "non-personalized": entry({"accuracy": 0.06, "f1": 0.03}, 0, 0),
            "bm25-4": entry({"accuracy": 0.49, "f1": 0.40}, 60, 0),
            "full-context": entry({"accuracy": 0.31, "f1": 0.23}, 400, 0, truncated=0.25),
            "tap-per": entry({"accuracy": 0.30, "f1": 0.2}, 8, 1024)}},
        "LaMP-3": {"primary_metric": "MAE", "higher_is_better": False, "methods": {
            "non-personalized": entry({"MAE": 1.3, "RMSE": 1.6}, 0, 0),
            "bm25-4": entry({"MAE": 0.34, "RMSE": 0.7}, 60, 0),
            "pplug": entry({"MAE": 0.39, "RMSE": 0.7}, 2, 0)}}}}


def test_pareto_front_respects_the_metric_direction():
    pts = [("a", 0, 0.1), ("b", 10, 0.5), ("c", 100, 0.4), ("d", 5, 0.5)]
    assert pareto_front(pts, True) == {"a", "d"}
    mae = [("a", 0, 1.3), ("b", 60, 0.34), ("c", 2, 0.39), ("d", 100, 0.5)]
    assert pareto_front(mae, False) == {"a", "b", "c"}


def test_report_files_tables_plots_and_published_numbers(tmp_path):
    files = write_report(_summary(), tmp_path)
    md = files["md"].read_text()
    assert "| bm25-4 | 0.490 | 0.400 | 60.0 | 0% | 0 | 5.0 | yes |" in md
    assert "| full-context | 0.310 | 0.230 | 400.0 | 25% | 0 | 5.0 |  |" in md
    assert "Published (different backbone and data)" in md and "FlanT5-XXL" in md
    assert md.index("### This run") < md.index("### Published")
    for task in ("LaMP-2", "LaMP-3"):
        assert files[f"pareto-{task}"].stat().st_size > 5000
        assert f"pareto-{task}.png" in files["html"].read_text()
    assert PUBLISHED["LaMP-2"][3][2]["accuracy"] == 0.559    # PPlug Table 1, LaMP-2 test
