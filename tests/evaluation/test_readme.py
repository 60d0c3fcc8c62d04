"""The README's results section is generated from reports/ and nothing else in the file changes."""

import json

import pytest

from components.evaluation.readme import BEGIN, END, update_readme
from components.evaluation.summary import update_summary


def _entry(accuracy: float, tokens: float) -> dict:
    return {"metrics": {"accuracy": accuracy, "f1": accuracy - 0.01}, "context_tokens_mean": tokens,
            "truncated_share": 0.0, "per_user_params": 0, "latency_ms_per_example": 1.0, "n": 300,
            "split": "time/test"}


def test_the_results_section_is_replaced_from_reports_and_the_rest_of_the_readme_kept(tmp_path):
    reports = tmp_path / "reports"
    update_summary(reports / "summary.json", "demo", "LaMP-2", "bm25-4", _entry(0.812, 101.0))
    update_summary(reports / "summary.json", "demo", "LaMP-2", "full-context", _entry(0.772, 420.0))
    (reports / "bench-backbone.json").write_text(json.dumps({
        "split": "time/dev", "limit": 300, "seeds": [0, 1], "tasks": {"LaMP-2": {
            "recall-4": {"mean": 0.94, "spread": 0.02, "seeds": {"0": 0.93, "1": 0.95}}}}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{BEGIN}\n| stale | 0.1 |\n{END}\n\nafter\n")

    update_readme(readme, reports)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "stale" not in text
    assert "split time/test, 300 questions" in text
    assert text.index("| bm25-4 | 0.812") < text.index("| full-context | 0.772")      # best first
    assert "--seeds 0 1 --limit 300" in text and "| recall-4 | 0.940 | 0.020 | 0.930 / 0.950 |" in text
    update_readme(readme, reports)
    assert readme.read_text() == text                                                 # idempotent


def test_a_readme_without_the_markers_is_an_error_naming_it_and_is_left_as_it_was(tmp_path):
    reports = tmp_path / "reports"
    update_summary(reports / "summary.json", "demo", "LaMP-2", "bm25-4", _entry(0.8, 100.0))
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="README.md: no generated results section"):
        update_readme(readme, reports)
    assert readme.read_text() == "# no markers\n"
    readme.write_text(f"{BEGIN}\n{END}\n")
    with pytest.raises(FileNotFoundError, match="holds none of"):
        update_readme(readme, tmp_path / "empty")
    assert readme.read_text() == f"{BEGIN}\n{END}\n"
