"""Typed LaMP records and the one error type that names file, record and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


class DataError(ValueError):
    """Bad input data. The message names the file, the record id and the field."""

    def __init__(self, path: object, message: str, record_id: str | None = None,
                 field: str | None = None):
        self.path, self.record_id, self.field = str(path), record_id, field
        where = [f"file {self.path}"]
        if record_id is not None:
            where.append(f"record {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass(slots=True)
class ProfileItem:
    """One item of a user's history. `fields` holds the task's text fields (all strings)."""

    id: str
    fields: dict[str, str]
    date: str | None = None

    def to_json(self) -> dict:
        out = {"id": self.id, **self.fields}
        if self.date is not None:
            out["date"] = self.date
        return out


@dataclass(slots=True)
class Question:
    """One row of a `*_questions.json` file (optionally with the gold output attached)."""

    id: str
    input: str
    profile: list[ProfileItem]
    user_id: str | None = None
    date: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def user_key(self) -> str:
        """A stable user identity: the user id, or the question id when the file has none
        (LaMP's user-based files have one question per user and no user field)."""
        return self.user_id if self.user_id is not None else f"q{self.id}"

    def to_json(self) -> dict:
        out: dict = {"id": self.id, "input": self.input}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.date is not None:
            out["date"] = self.date
        out.update(self.extra)
        out["profile"] = [p.to_json() for p in self.profile]
        return out


@dataclass(slots=True)
class Output:
    id: str
    output: str


@dataclass(slots=True)
class OppuQuery:
    id: str
    input: str
    gold: str | None = None


@dataclass(slots=True)
class OppuUser:
    """A user of the OPPU-style processed files: history items and the queries to answer."""

    user_id: str
    profile: list[ProfileItem]
    queries: list[OppuQuery]


def parse_date(value: str) -> date:
    """LaMP dates are `YYYY-MM-DD` (some files add a time); raises ValueError otherwise."""
    return date.fromisoformat(value.strip()[:10])
