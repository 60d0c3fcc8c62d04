import json

import pytest

from components.lamp.io import (iter_json_array, iter_oppu_users, read_outputs, read_questions,
                                write_oppu_users, write_outputs, write_questions)
from components.lamp.records import DataError, OppuQuery, OppuUser, Output, ProfileItem, Question
from components.lamp.tasks import TASKS, get_task

SAMPLE_FIELDS = {
    "LaMP-1": {"title": "a paper", "abstract": "we study"},
    "LaMP-2": {"description": "a movie", "tag": "comedy"},
    "LaMP-2N": {"text": "an article", "title": "a title", "category": "sports"},
    "LaMP-3": {"text": "great phone", "score": "5"},
    "LaMP-4": {"text": "an article", "title": "A Headline"},
    "LaMP-5": {"title": "A Title", "abstract": "an abstract"},
    "LaMP-6": {"text": "an email body", "title": "Subject"},
    "LaMP-7": {"text": "a tweet \u00e9\u00e8 &quot;quoted&quot;"},
}


def _question(task: str, qid: str = "1", **kw) -> Question:
    items = [ProfileItem(id=f"{qid}-{i}", fields=dict(SAMPLE_FIELDS[task]), date="2020-01-0%d" % (i + 1))
             for i in range(3)]
    return Question(id=qid, input=f"input of {qid}", profile=items, **kw)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_round_trip_every_task(tmp_path, task):
    qs = [_question(task, "1", user_id="u1", date="2020-02-01"), _question(task, "2")]
    write_questions(tmp_path / "q.json", qs)
    spec = get_task(task)
    golds = [Output("1", spec.labels[0] if spec.labels else "out one"), Output("2", "x")]
    write_outputs(tmp_path / "o.json", task, golds)
    assert read_questions(tmp_path / "q.json", task) == qs
    name, back = read_outputs(tmp_path / "o.json")
    assert name == spec.official and back == golds
    raw = json.loads((tmp_path / "q.json").read_text())
    assert isinstance(raw, list) and raw[0]["profile"][0]["id"] == "1-0"


def test_oppu_round_trip(tmp_path):
    users = [OppuUser("u1", _question("LaMP-2").profile, [OppuQuery("9", "in", "comedy")])]
    write_oppu_users(tmp_path / "user_others.json", users, with_gold=True)
    assert list(iter_oppu_users(tmp_path / "user_others.json", "LaMP-2")) == users
    write_oppu_users(tmp_path / "top.json", users, with_gold=False)
    assert list(iter_oppu_users(tmp_path / "top.json"))[0].queries[0].gold is None


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_streaming_reader_is_chunk_size_independent(tmp_path, chunk):
    qs = [_question("LaMP-7", str(i)) for i in range(20)]
    write_questions(tmp_path / "q.json", qs)
    values = list(iter_json_array(tmp_path / "q.json", chunk_size=chunk))
    assert [v["id"] for v in values] == [str(i) for i in range(20)]


def _write(tmp_path, text: str | bytes):
    path = tmp_path / "bad_questions.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("content, record, field, words", [
    ('[{"id": "1", "input": "x", "profile": [{"id": "a", "text": "t"}]}, {"id": "2", ',
     None, None, "malformed JSON"),
    ('{"id": "1"}', None, None, "JSON list"),
    ('[{"id": "1", "profile": []}]', "1", "input", "missing"),
    ('[{"id": "1", "input": 5.5, "profile": []}]', "1", "input", "string"),
    ('[{"id": "1", "input": "x", "profile": "abc"}]', "1", "profile", "list"),
    ('[{"id": "1", "input": "x", "profile": [{"text": "t"}]}]', "1", "profile[0].id", "missing"),
    ('[{"id": "1", "input": "x", "profile": [{"id": "a"}]}]', "1", "profile[0].text", "missing"),
    ('[{"id": "1", "input": "x", "profile": [{"id": "a", "text": ["t"]}]}]', "1", "profile[0].text", "string"),
    ('[{"id": "1", "input": "x", "user_id": "../etc", "profile": []}]', "1", "user_id", "path"),
    ('[{"id": "1", "input": "x", "user_id": "/abs/u", "profile": []}]', "1", "user_id", "path"),
    ('[{"id": "1", "input": "x", "profile": []}] trailing', None, None, "after the closing"),
    ('[{"id": "1\\u0007", "input": "x", "profile": []}]', "#0", "id", "control characters"),
    ('[{"id": "1", "input": "x", "profile": [{"id": "a\\n", "text": "t"}]}]', "1", "profile[0].id",
     "control characters"),
    ('[{"id": "1", "input": "x", "user_id": "u\\t1", "profile": []}]', "1", "user_id", "not a valid user id"),
    ('[{"id": "1", "input": "x", "profile": [{"id": "a", "text": "t", "date": "2016-02-31"}]}]', "1",
     "profile[0].date", "not a real date"),
    ('[{"id": "1", "input": "x", "date": "2016-13-01", "profile": []}]', "1", "date", "not a real date"),
    ("", None, None, "the file is empty"),
    ("  \n", None, None, "the file is empty"),
    ("[" * 100_000 + "]" * 100_000, None, None, "nested too deeply"),
    ('[{"id": "1", "input": "x", "n": ' + "7" * 100_000 + ', "profile": []}]', None, None, "digits"),
])
def test_bad_questions_name_file_record_field(tmp_path, content, record, field, words):
    path = _write(tmp_path, content)
    with pytest.raises(DataError) as err:
        read_questions(path, "LaMP-7")
    assert str(path) in str(err.value) and words in str(err.value)
    assert err.value.record_id == record and err.value.field == field


def test_a_byte_order_mark_is_skipped(tmp_path):
    path = _write(tmp_path, b'\xef\xbb\xbf[{"id": "1", "input": "x", "profile": []}]')
    assert [q.id for q in read_questions(path)] == ["1"]
    outputs = tmp_path / "o.json"
    outputs.write_bytes(b'\xef\xbb\xbf{"task": "LaMP_2", "golds": [{"id": "1", "output": "comedy"}]}')
    assert read_outputs(outputs)[1] == [Output("1", "comedy")]
    outputs.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_outputs(outputs)


def test_free_form_dates_stay_accepted(tmp_path):
    path = _write(tmp_path, '[{"id": "1", "input": "x", "date": "June 2016", "profile": '
                            '[{"id": "a", "text": "t", "date": "2016-02-29 10:00"}]}]')
    assert read_questions(path)[0].profile[0].date == "2016-02-29 10:00"


def test_non_utf8_is_reported_with_byte_offset(tmp_path):
    path = _write(tmp_path, b'[{"id": "1", "input": "caf\xe9", "profile": []}]')
    with pytest.raises(DataError, match="not valid UTF-8 at byte 26"):
        read_questions(path)


def test_outputs_errors(tmp_path):
    p = tmp_path / "o.json"
    p.write_text('{"task": "LaMP_9", "golds": []}')
    with pytest.raises(DataError, match="unknown task"):
        read_outputs(p)
    p.write_text('{"task": "LaMP_2", "golds": [{"id": "1"}]}')
    with pytest.raises(DataError) as err:
        read_outputs(p)
    assert err.value.record_id == "1" and err.value.field == "output"
    with pytest.raises(DataError, match="LaMP-3 was asked for"):
        p.write_text('{"task": "LaMP_2", "golds": []}')
        read_outputs(p, "LaMP-3")


def test_failed_write_leaves_old_file_untouched(tmp_path):
    path = tmp_path / "q.json"
    write_questions(path, [_question("LaMP-7", "1")])
    before = path.read_bytes()

    def broken():
        yield _question("LaMP-7", "2")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_questions(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.json"]


def test_task_names():
    assert get_task("LaMP_3").name == get_task("lamp-3").name == "LaMP-3"
    assert get_task("LaMP-2M").name == "LaMP-2"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("LaMP-9")
    assert get_task("LaMP-1").query_text(
        'For an author ... title "A", which reference is related? [1]: "B" [2]: "C"') == "B C"
