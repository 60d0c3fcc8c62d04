"""The GX suite catches each kind of violation and names the records."""

import json
import shutil

import pytest

from components.validation.runner import validate_files


@pytest.fixture
def lamp2(tmp_path, synth_root):
    for name in ("dev_questions.json", "dev_outputs.json"):
        shutil.copy(synth_root / "LaMP-2" / name, tmp_path / name)
    return tmp_path / "dev_questions.json", tmp_path / "dev_outputs.json"


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_clean_files_pass_and_docs_are_written(lamp2, tmp_path):
    q, o = lamp2
    report = validate_files("LaMP-2", q, o, docs_dir=tmp_path / "docs")
    assert report.success, report.summary()
    assert report.n_questions > 0 and report.n_profile_items > report.n_questions
    assert (tmp_path / "docs" / "index.html").exists()


@pytest.mark.parametrize("mutate_q, mutate_o, expectation, column", [
    (lambda d: d[1].update(id=d[0]["id"]), None, "expect_column_values_to_be_unique", "id"),
    (None, lambda d: d["golds"][0].update(output="cartoon"), "expect_column_values_to_be_in_set", "output"),
    (None, lambda d: d["golds"].pop(0), "expect_column_values_to_not_be_null", "output"),
    (None, lambda d: d["golds"].append({"id": "nope", "output": "comedy"}),
     "expect_column_values_to_be_in_set", "id"),
    (lambda d: d[0].update(profile=[]), None, "expect_column_values_to_be_between", "profile_size"),
    (lambda d: d[0]["profile"][0].update(description=""), None,
     "expect_column_value_lengths_to_be_between", "description"),
    (lambda d: d[0]["profile"][0].update(tag="cartoon"), None, "expect_column_values_to_be_in_set", "tag"),
    (lambda d: d[0]["profile"][1].update(id=d[0]["profile"][0]["id"]), None,
     "expect_compound_columns_to_be_unique", "question_id,item_id"),
    (lambda d: d[0]["profile"][0].update(date="the day after"), None,
     "expect_column_values_to_match_regex", "date"),
    (lambda d: d[0].update(input=""), None, "expect_column_value_lengths_to_be_between", "input"),
])
def test_each_violation_is_caught(lamp2, mutate_q, mutate_o, expectation, column):
    q, o = lamp2
    if mutate_q:
        _edit(q, mutate_q)
    if mutate_o:
        _edit(o, mutate_o)
    report = validate_files("LaMP-2", q, o)
    assert not report.success
    failed = {(f.expectation, f.column) for f in report.failures}
    assert (expectation, column) in failed, report.summary()
    fail = next(f for f in report.failures if (f.expectation, f.column) == (expectation, column))
    assert fail.unexpected_count >= 1 and fail.examples, "a failure must name example records"


def test_rating_out_of_range(tmp_path, synth_root):
    q = tmp_path / "q.json"
    shutil.copy(synth_root / "LaMP-3" / "dev_questions.json", q)
    _edit(q, lambda d: d[2]["profile"][0].update(score="7"))
    report = validate_files("LaMP-3", q)
    fail = [f for f in report.failures if f.column == "score"]
    assert fail and fail[0].examples[0].startswith(json.loads(q.read_text())[2]["id"] + "/")


def test_format_error_is_a_failed_report(tmp_path):
    q = tmp_path / "q.json"
    q.write_text('[{"id": "1", "input": "x"}]')
    report = validate_files("LaMP-2", q)
    assert not report.success and "record '1', field 'profile'" in report.format_error


@pytest.mark.parametrize("where, date", [("question", "2020-13-01"), ("item", "2016-02-31")])
def test_impossible_dates_fail_by_record_and_field(lamp2, where, date):
    q, o = lamp2
    _edit(q, (lambda d: d[0].update(date=date)) if where == "question"
          else (lambda d: d[0]["profile"][0].update(date=date)))
    report = validate_files("LaMP-2", q, o)
    field = "date" if where == "question" else "profile[0].date"
    assert not report.success and f"field '{field}': '{date}' is not a real date" in report.format_error


def test_an_empty_list_of_questions_fails(tmp_path):
    q = tmp_path / "q.json"
    q.write_text("[]")
    report = validate_files("LaMP-2", q)
    assert not report.success and "holds no questions" in report.format_error and str(q) in report.format_error


def test_chunked_profile_validation_sees_every_row(lamp2):
    q, o = lamp2
    _edit(q, lambda d: d[-1]["profile"][-1].update(tag="cartoon"))
    report = validate_files("LaMP-2", q, o, chunk_rows=50)
    assert [f.column for f in report.failures] == ["tag"]


def test_one_item_id_with_other_texts_in_two_users_fails(lamp2):
    q, o = lamp2
    data = json.loads(q.read_text())
    other = next(i for i, r in enumerate(data) if r["user_id"] != data[0]["user_id"])
    item = dict(data[0]["profile"][0], description="a different text")

    def clash(d):
        d[other]["profile"].append(item)
    _edit(q, clash)
    report = validate_files("LaMP-2", q, o)
    assert not report.success and f"record {data[other]['id']!r}" in report.format_error
    assert f"profile item id {item['id']!r} also names an item with other texts" in report.format_error
    same = dict(data[0]["profile"][0])                    # the same item in another profile is fine
    _edit(q, lambda d: d[other]["profile"].__setitem__(-1, same))
    assert validate_files("LaMP-2", q, o).success
