"""Serving requests: rows `{user_id, task, input, profile?, date?}`, checked before any work.

A bad row is refused with an error that names the row and the field; nothing of a batch
with a bad row is answered (a client fixes and resends the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.lamp.io import check_user_id, parse_profile_item
from components.lamp.records import DataError, ProfileItem, Question
from components.lamp.tasks import get_task

MAX_PROFILE_ITEMS = 2048          # a profile longer than this is refused (LaMP's longest are ~1k)
MAX_TEXT_CHARS = 20_000           # per input and per profile field
MAX_REQUEST_ROWS = 256            # per HTTP request (`persona serve --max-rows`); larger ones get 413
MAX_REQUEST_BYTES = 8 * 2**20     # per HTTP request (`persona serve --max-bytes`)


class RequestError(ValueError):
    """A malformed request row. The message names the row and the field."""

    def __init__(self, row: int, field: str | None, message: str):
        self.row, self.field = row, field
        where = f"request row {row}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


@dataclass
class ServeRequest:
    row: int
    user_id: str
    task: str
    input: str
    profile: list[ProfileItem] | None     # None: use the stored history of a known user
    date: str | None = None

    def question(self, profile: list[ProfileItem]) -> Question:
        return Question(id=str(self.row), input=self.input, profile=profile, user_id=self.user_id, date=self.date)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_rows(rows: list[dict], tasks: list[str] | None = None, max_profile_items: int = MAX_PROFILE_ITEMS
               ) -> list[ServeRequest]:
    """Check every row (types, a valid user id, a known task, a profile of the task's item
    format and of bounded size) and return them typed."""
    out = []
    for i, raw in enumerate(rows):
        if not isinstance(raw, dict):
            raise RequestError(i, None, f"must be an object, got {type(raw).__name__}")
        for name in ("user_id", "task", "input"):
            if _missing(raw.get(name)):
                raise RequestError(i, name, "missing")
        unknown = sorted(set(raw) - {"user_id", "task", "input", "profile", "date"})
        if unknown:
            raise RequestError(i, unknown[0], "unknown field (expected user_id, task, input, profile, date)")
        try:
            user = check_user_id("request", str(i), raw["user_id"])
        except DataError as exc:
            raise RequestError(i, "user_id", str(exc).split(": ", 1)[-1]) from None
        task = raw["task"]
        try:
            spec = get_task(task) if isinstance(task, str) else None
        except (KeyError, ValueError):
            spec = None
        if spec is None or (tasks is not None and spec.name not in tasks):
            raise RequestError(i, "task", f"{task!r} is not served here; served tasks: {', '.join(tasks or [])}")
        text = raw["input"]
        if not isinstance(text, str) or not text.strip():
            raise RequestError(i, "input", f"must be a non-empty string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise RequestError(i, "input", f"{len(text)} characters, more than the limit of {MAX_TEXT_CHARS}")
        date = None if _missing(raw.get("date")) else raw.get("date")
        if date is not None and not isinstance(date, str):
            raise RequestError(i, "date", f"must be a string (YYYY-MM-DD), got {type(date).__name__}")
        profile = raw.get("profile")
        items = None
        if not _missing(profile):
            if hasattr(profile, "tolist"):             # a numpy array from a pandas column
                profile = profile.tolist()
            if not isinstance(profile, list):
                raise RequestError(i, "profile", f"must be a list of history items, got {type(profile).__name__}")
            if len(profile) > max_profile_items:
                raise RequestError(i, "profile", f"{len(profile)} items, more than the limit of {max_profile_items}")
            items = []
            for j, item in enumerate(profile):
                try:
                    parsed = parse_profile_item("request", item, spec, str(i), j)
                except DataError as exc:
                    raise RequestError(i, exc.field, str(exc).split(": ", 1)[-1]) from None
                long = [k for k, v in parsed.fields.items() if len(v) > MAX_TEXT_CHARS]
                if long:
                    raise RequestError(i, f"profile[{j}].{long[0]}", f"longer than {MAX_TEXT_CHARS} characters")
                items.append(parsed)
        out.append(ServeRequest(i, user, spec.name, text, items, date))
    return out
