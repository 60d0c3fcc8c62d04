"""Readers and writers of LaMP's official files and of OPPU-style per-user files.

Questions files of real LaMP splits run to gigabytes, so they are *streamed*: the
array is decoded one record at a time with the C JSON decoder (same speed as
`json.load`, memory of one record). Every structural problem raises `DataError`
naming the file, the record id and the field. Writers are atomic.
"""

from __future__ import annotations

import codecs
import datetime
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from components.lamp.records import DataError, OppuQuery, OppuUser, Output, ProfileItem, Question
from components.lamp.tasks import TaskSpec, get_task
from components.storage.files import atomic_open

_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_UNSAFE_ID = re.compile(r"(^[./~\\])|(\.\.)|[/\\\x00]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ISO_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def check_user_id(path: object, record_id: str, user_id: object) -> str:
    """User ids become keys of per-user state; refuse anything that looks like a path."""
    if not isinstance(user_id, (str, int)) or isinstance(user_id, bool):
        raise DataError(path, f"must be a string, got {type(user_id).__name__}", record_id, "user_id")
    user_id = str(user_id)
    if not user_id or _UNSAFE_ID.search(user_id) or _CONTROL.search(user_id):
        raise DataError(path, f"{user_id!r} is not a valid user id (looks like a path or is empty)",
                        record_id, "user_id")
    return user_id


def iter_json_array(path: str | os.PathLike, chunk_size: int = _CHUNK) -> Iterator[dict | object]:
    """Yield the elements of a top-level JSON array one at a time."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof, bytes_read, line, count = "", 0, False, 0, 1, 0
    last_id: str | None = None

    with open(path, "rb") as fh:
        def fill() -> None:
            nonlocal buf, pos, eof, bytes_read, line
            raw = fh.read(max(chunk_size, len(buf) - pos))
            eof = not raw
            try:
                text = utf8.decode(raw, final=eof)
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not valid UTF-8 at byte {bytes_read + exc.start}"
                                f" (after record {last_id!r})" if last_id else
                                f"not valid UTF-8 at byte {bytes_read + exc.start}") from None
            bytes_read += len(raw)
            line += buf.count("\n", 0, pos)
            buf, pos = buf[pos:] + text, 0

        def skip_ws() -> None:
            nonlocal pos
            while True:
                pos = _WS.match(buf, pos).end()
                if pos < len(buf) or eof:
                    return
                fill()

        def fail(msg: str) -> DataError:
            col = pos - (buf.rfind("\n", 0, pos) + 1)
            after = f" after record {last_id!r}" if last_id else ""
            return DataError(path, f"malformed JSON at line {line + buf.count(chr(10), 0, pos)}, "
                                   f"column {col + 1}{after}: {msg}")

        fill()
        if buf.startswith("\ufeff"):                  # a UTF-8 byte order mark (Windows editors)
            pos = 1
        skip_ws()
        if pos >= len(buf) and eof:
            raise DataError(path, "the file is empty: expected a JSON list of records")
        if pos >= len(buf) or buf[pos] != "[":
            raise fail("expected a JSON list '[' at the top level")
        pos += 1
        skip_ws()
        if pos < len(buf) and buf[pos] == "]":
            return
        while True:
            skip_ws()
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or eof:
                        break
                except json.JSONDecodeError as exc:
                    if eof:
                        pos = exc.pos
                        raise fail(exc.msg) from None
                except RecursionError:
                    raise fail("a record is nested too deeply") from None
                except ValueError as exc:              # e.g. an integer of more than 4,300 digits
                    raise fail(str(exc)) from None
                fill()
            pos = end
            count += 1
            if isinstance(value, dict) and isinstance(value.get("id"), (str, int)):
                last_id = str(value["id"])
            yield value
            skip_ws()
            if pos >= len(buf):
                raise fail("the list is not closed with ']' (truncated file?)")
            if buf[pos] == "]":
                pos += 1
                skip_ws()
                if pos < len(buf):
                    raise fail("unexpected data after the closing ']'")
                return
            if buf[pos] != ",":
                raise fail("expected ',' or ']' between records")
            pos += 1


def _load_json(path: str | os.PathLike) -> object:
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")       # a byte order mark is skipped
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not valid UTF-8 at byte {exc.start}") from None
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    if not text.strip():
        raise DataError(path, "the file is empty: expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise DataError(path, "the JSON is nested too deeply") from None
    except ValueError as exc:                          # e.g. an integer of more than 4,300 digits
        raise DataError(path, f"unreadable JSON: {exc}") from None


def _str_field(path, record: dict, name: str, rid: str | None, *, required: bool = True) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise DataError(path, "missing", rid, name)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, f"must be a string, got {type(value).__name__}", rid, name)
    return str(value)


def _id_field(path, record: dict, name: str, rid: str | None, field: str | None = None) -> str:
    """A record or item id: a non-empty string without control characters."""
    value = _str_field(path, record, name, rid, required=False)
    if value is None:
        raise DataError(path, "missing", rid, field or name)
    if not value or _CONTROL.search(value):
        raise DataError(path, f"{value!r} is not a valid id (empty or holds control characters)", rid, field or name)
    return value


def _check_date(path, value: str | None, rid: str | None, field: str) -> str | None:
    """Dates stay free-form strings (LaMP's files differ), but one that starts as a calendar
    day (YYYY-MM-DD) must be a real day: a 31st of February is refused."""
    if value is None:
        return None
    day = _ISO_DAY.match(value)
    if day:
        try:
            datetime.date(*(int(g) for g in day.groups()))
        except ValueError as exc:
            raise DataError(path, f"{value!r} is not a real date ({exc})", rid, field) from None
    return value


def parse_profile_item(path, raw: object, spec: TaskSpec | None, qid: str, index: int) -> ProfileItem:
    where = f"profile[{index}]"
    if not isinstance(raw, dict):
        raise DataError(path, f"must be an object, got {type(raw).__name__}", qid, where)
    item_id = _id_field(path, raw, "id", qid, f"{where}.id")
    fields: dict[str, str] = {}
    for key, value in raw.items():
        if key in ("id", "date"):
            continue
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            fields[key] = value if isinstance(value, str) else str(value)
        elif value is not None:
            raise DataError(path, f"must be a string, got {type(value).__name__}", qid, f"{where}.{key}")
    for name in spec.profile_fields if spec else ():
        if name not in fields:
            raise DataError(path, f"missing (item {item_id!r})", qid, f"{where}.{name}")
    date = raw.get("date")
    if date is not None and not isinstance(date, str):
        raise DataError(path, f"must be a string, got {type(date).__name__}", qid, f"{where}.date")
    return ProfileItem(id=item_id, fields=fields, date=_check_date(path, date, qid, f"{where}.date"))


def parse_question(path, raw: object, spec: TaskSpec | None, index: int) -> Question:
    if not isinstance(raw, dict):
        raise DataError(path, f"record #{index} must be an object, got {type(raw).__name__}")
    qid = _id_field(path, raw, "id", f"#{index}")
    text = _str_field(path, raw, "input", qid)
    profile = raw.get("profile")
    if profile is None:
        raise DataError(path, "missing", qid, "profile")
    if not isinstance(profile, list):
        raise DataError(path, f"must be a list, got {type(profile).__name__}", qid, "profile")
    user_id = raw.get("user_id")
    if user_id is not None:
        user_id = check_user_id(path, qid, user_id)
    date = _check_date(path, _str_field(path, raw, "date", qid, required=False), qid, "date")
    extra = {k: v for k, v in raw.items() if k not in ("id", "input", "profile", "user_id", "date")}
    items = [parse_profile_item(path, p, spec, qid, i) for i, p in enumerate(profile)]
    return Question(id=qid, input=text, profile=items, user_id=user_id, date=date, extra=extra)


def iter_questions(path: str | os.PathLike, task: str | TaskSpec | None = None) -> Iterator[Question]:
    """Stream the records of an official `*_questions.json` file."""
    spec = get_task(task) if isinstance(task, str) else task
    if not Path(path).is_file():
        raise DataError(path, "file not found")
    for index, raw in enumerate(iter_json_array(path)):
        yield parse_question(path, raw, spec, index)


def read_questions(path: str | os.PathLike, task: str | TaskSpec | None = None) -> list[Question]:
    return list(iter_questions(path, task))


def read_outputs(path: str | os.PathLike, task: str | TaskSpec | None = None) -> tuple[str, list[Output]]:
    """Read an official `*_outputs.json` (`{"task", "golds": [{"id", "output"}]}`)."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(path, f'must be an object {{"task", "golds"}}, got {type(data).__name__}')
    task_name = _str_field(path, data, "task", None)
    try:
        file_spec = get_task(task_name)
    except ValueError as exc:
        raise DataError(path, str(exc), None, "task") from None
    if task is not None:
        expected = get_task(task) if isinstance(task, str) else task
        if expected.name != file_spec.name:
            raise DataError(path, f"is {task_name!r} but {expected.name} was asked for", None, "task")
    golds = data.get("golds")
    if not isinstance(golds, list):
        raise DataError(path, "missing or not a list", None, "golds")
    outputs = []
    for i, raw in enumerate(golds):
        if not isinstance(raw, dict):
            raise DataError(path, f"golds[{i}] must be an object")
        rid = _id_field(path, raw, "id", f"golds[{i}]")
        outputs.append(Output(id=rid, output=_str_field(path, raw, "output", rid)))
    return task_name, outputs


class QuestionWriter:
    """Streams questions into an official file; use as a context manager (atomic on exit)."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.count = Path(path), 0
        self._ctx = atomic_open(self.path)

    def __enter__(self) -> "QuestionWriter":
        self._fh = self._ctx.__enter__()
        self._fh.write("[")
        return self

    def write(self, question: Question) -> None:
        self._fh.write(",\n" if self.count else "\n")
        self._fh.write(json.dumps(question.to_json(), ensure_ascii=False))
        self.count += 1

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is None:
            self._fh.write("\n]\n")
        return self._ctx.__exit__(*exc)


def read_golds(path: str | os.PathLike, task: str | TaskSpec | None = None) -> dict[str, str]:
    """An outputs file as {id: output}."""
    return {o.id: o.output for o in read_outputs(path, task)[1]}


def write_questions(path: str | os.PathLike, questions: Iterable[Question]) -> Path:
    """Write a questions file atomically, one record at a time (never the whole list in memory)."""
    with QuestionWriter(path) as writer:
        for q in questions:
            writer.write(q)
    return Path(path)


def write_outputs(path: str | os.PathLike, task: str | TaskSpec, outputs: Iterable[Output]) -> Path:
    spec = get_task(task) if isinstance(task, str) else task
    golds = [{"id": o.id, "output": o.output} for o in outputs]
    with atomic_open(path) as fh:
        json.dump({"task": spec.official, "golds": golds}, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    return Path(path)


# --- OPPU-style per-user files (user_others.json, user_top_100_history.json, *_label.json) ----

def iter_oppu_users(path: str | os.PathLike, task: str | TaskSpec | None = None) -> Iterator[OppuUser]:
    spec = get_task(task) if isinstance(task, str) else task
    for index, raw in enumerate(iter_json_array(path)):
        if not isinstance(raw, dict):
            raise DataError(path, f"record #{index} must be an object")
        uid = check_user_id(path, f"#{index}", raw.get("user_id", ""))
        profile = raw.get("profile")
        if not isinstance(profile, list):
            raise DataError(path, "missing or not a list", uid, "profile")
        queries_raw = raw.get("query")
        if not isinstance(queries_raw, list):
            raise DataError(path, "missing or not a list", uid, "query")
        queries = []
        for j, q in enumerate(queries_raw):
            if not isinstance(q, dict):
                raise DataError(path, f"query[{j}] must be an object", uid, "query")
            qid = _str_field(path, q, "id", uid)
            queries.append(OppuQuery(id=qid, input=_str_field(path, q, "input", qid),
                                     gold=_str_field(path, q, "gold", qid, required=False)))
        items = [parse_profile_item(path, p, spec, uid, i) for i, p in enumerate(profile)]
        yield OppuUser(user_id=uid, profile=items, queries=queries)


def write_oppu_users(path: str | os.PathLike, users: Iterable[OppuUser], with_gold: bool) -> Path:
    with atomic_open(path) as fh:
        fh.write("[")
        for i, u in enumerate(users):
            queries = [{"id": q.id, "input": q.input, **({"gold": q.gold} if with_gold else {})}
                       for q in u.queries]
            rec = {"user_id": u.user_id, "profile": [p.to_json() for p in u.profile], "query": queries}
            fh.write(",\n" if i else "\n")
            fh.write(json.dumps(rec, ensure_ascii=False))
        fh.write("\n]\n")
    return Path(path)
